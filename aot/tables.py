"""Metrics JSON files -> the comparison tables (CSV + Markdown + LaTeX) with the paper's numbers beside ours.

Every row carries its setting (rho, steps, NFE, samples, seeds, metric). Rows of the paper that we have not
run are kept and shown as missing ('—'), never dropped.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from aot.checkpoint import atomic_write_text
from aot.paper import (
    PAPER_ARM,
    TABLE1_ROWS,
    TABLE2_ROWS,
    TABLE3_ROWS,
    TABLE4,
    TABLE4_RHOS,
    TABLE5,
    TABLE5_NFES,
    paper_fid,
    paper_fid_guided,
)
from aot.samplers import nfe as nfe_of

TABLE5_RHOS = (9, 27, 81, 243)  # Table 5 takes the best of these rhos at each NFE
MISSING = "—"


def _missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _fmt(x, digits=3) -> str:
    return MISSING if _missing(x) else f"{x:.{digits}f}"


# ----------------------------------------------------------------------------
# Tidy tables.


def score_table(metrics: list[dict]) -> pd.DataFrame:
    """One row per (model, rho, steps, metric): our score and the paper's FID for the same setting."""
    rows = []
    for m in metrics:
        arm, cond = m["model"].rsplit("-", 1)
        g = m.get("guidance")
        disc_pairing = g["discriminator_config"]["pairing"] if g else None
        if g:
            fid, source = paper_fid_guided(m["pairing"], disc_pairing, cond, m["nfe"])
        else:
            fid, source = paper_fid(m["pairing"], cond, m["rho"], m["steps"])
        for name, sc in m["scores"].items():
            rows.append(dict(arm=arm, pairing=m["pairing"], conditioning=cond, rho=m["rho"], steps=m["steps"],
                             NFE=m["nfe"], guidance=f"DG (discriminator noise: {disc_pairing})" if g else "none",
                             dg_weight=g["weight"] if g else None, dg_boosting=g.get("boosting", False) if g else None,
                             disc_pairing=disc_pairing,
                             metric=sc["metric"], metric_key=name, ours=sc["value"], ours_std=sc.get("value_std"),
                             KID=sc.get("kid"), class_agreement=sc.get("class_agreement"),
                             fid_mean=sc.get("fid_mean"), samples=m["num_images"],
                             seeds=f"{m['seed_first']}-{m['seed_last']}", paper_cifar10_fid=fid,
                             paper_source=source))
    df = pd.DataFrame(rows)
    return df.sort_values(["metric_key", "conditioning", "NFE", "rho", "arm"],
                          ascending=[True, False, False, True, True], ignore_index=True)


def pairing_table(stats: list[dict]) -> pd.DataFrame:
    """Mean image-noise distance of the pairs each arm trained on, vs independent pairing of the same draws."""
    rows = [dict(arm=s["model"].rsplit("-", 1)[0], conditioning=s["model"].rsplit("-", 1)[1],
                 pairing=s["pairing"], pool=s["pool"], kimg=s["kimg"], mean_dist_paired=s["mean_dist_paired"],
                 mean_dist_independent=s["mean_dist_independent"], reduction_pct=100 * s["dist_reduction"],
                 solve_ms=1000 * s["solve_seconds_mean"], wait_pct=100 * s["wait_fraction"]) for s in stats]
    if not rows:
        return pd.DataFrame(columns=["arm", "conditioning", "pairing", "mean_dist_paired", "mean_dist_independent"])
    return pd.DataFrame(rows).sort_values(["conditioning", "arm"], ignore_index=True)


def trajectory_table(trajs: list[dict]) -> pd.DataFrame:
    rows = []
    for t in trajs:
        m, meta = t["metrics"], t["meta"]
        arm, cond = meta["model"].rsplit("-", 1)
        rows.append(dict(arm=arm, pairing=meta["pairing"], conditioning=cond, rho=meta["rho"], steps=meta["steps"],
                         NFE=meta["nfe"], straightness=m["straightness"],
                         straightness_normalized=m["straightness_normalized"],
                         curvature_mean=sum(m["curvature"]) / len(m["curvature"]),
                         local_error_mean=sum(m["local_error"]) / len(m["local_error"]),
                         global_error=m["global_error"], samples=meta["num_images"],
                         seeds=f"{meta['seed_first']}-{meta['seed_last']}"))
    if not rows:
        return pd.DataFrame(columns=["arm", "conditioning", "rho", "steps"])
    return pd.DataFrame(rows).sort_values(["conditioning", "steps", "rho", "arm"], ignore_index=True)


# ----------------------------------------------------------------------------
# The paper's Tables 1-5: our number in the same cell layout, missing when not run.


def _lookup(scores: pd.DataFrame, arm_pairing: str, cond: str, rho, steps):
    """Our row for the paper arm ('edm' = pairing none, 'aot' = pairing aot) at a setting, or None."""
    if scores.empty or rho is None:
        return None
    pairing = {v: k for k, v in PAPER_ARM.items()}[arm_pairing]
    hit = scores[(scores.pairing == pairing) & (scores.conditioning == cond) & (scores.rho == rho)
                 & (scores.steps == steps)]
    return None if hit.empty else hit.iloc[0]


def _cells(r, fallback_metric: str) -> dict:
    if r is None:
        return dict(ours=None, ours_std=None, metric=fallback_metric, samples=None, seeds=MISSING)
    return dict(ours=r.ours, ours_std=r.ours_std, metric=r.metric, samples=int(r.samples), seeds=r.seeds)


def table12(scores: pd.DataFrame, cond: str) -> pd.DataFrame:
    rows_spec = TABLE1_ROWS if cond == "uncond" else TABLE2_ROWS
    metric = scores.metric.iloc[0] if not scores.empty else MISSING
    rows = []
    for label, arm, rho, steps, nfe, fid in rows_spec:
        r = _lookup(scores, arm, cond, rho, steps) if arm else None
        note = "prior work (not run here)" if arm is None else ("" if r is not None else "not run")
        rows.append(dict(model=label, rho=rho, steps=steps, NFE=nfe, paper_fid=fid, **_cells(r, metric), note=note))
    return pd.DataFrame(rows)


def table3(scores: pd.DataFrame) -> pd.DataFrame:
    """Discriminator Guidance: per paper row, our guided score and the unguided score of the same model at the same
    setting and seeds (so the guidance gain reads across), uncond and cond. A row is matched by score-model
    pairing and discriminator noise pairing, at the paper's NFE if we ran it, else at the setting we ran."""
    metric = scores.metric.iloc[0] if not scores.empty else MISSING
    pairing_of = {v: k for k, v in PAPER_ARM.items()}
    rows = []
    for label, arm, disc, n, paper_u, paper_c in TABLE3_ROWS:
        row = dict(model=label, NFE=n, paper_fid_uncond=paper_u, paper_fid_cond=paper_c)
        ran = []
        for cond in ("uncond", "cond"):
            guided, plain = None, None
            if not scores.empty:
                cand = scores[(scores.guidance != "none") & (scores.pairing == pairing_of[arm])
                              & (scores.conditioning == cond) & (scores.disc_pairing == disc)]
                if not cand.empty:
                    at_nfe = cand[cand.NFE == n]
                    guided = (at_nfe if not at_nfe.empty else cand).iloc[0]
                    plain = _lookup(scores[scores.guidance == "none"], arm, cond, guided.rho, guided.steps)
            row[f"ours_{cond}"] = None if guided is None else guided.ours
            row[f"ours_{cond}_std"] = None if guided is None else guided.ours_std
            row[f"ours_unguided_{cond}"] = None if plain is None else plain.ours
            if guided is not None:
                ran.append(f"{cond}: rho {guided.rho:g}, {int(guided.steps)} steps ({int(guided.NFE)} NFE), "
                           f"w {guided.dg_weight:g}{', boosting' if guided.dg_boosting else ''}, seeds {guided.seeds}")
        row.update(metric=metric, setting="; ".join(ran) if ran else MISSING,
                   note="" if ran else "not run (config guidance.runs)")
        rows.append(row)
    return pd.DataFrame(rows)


def discriminator_table(stats: list[dict]) -> pd.DataFrame:
    """How each discriminator trained: final BCE loss and accuracy (real vs generated), noise pairing gain."""
    rows = [dict(model=s["model"], conditioning=s["model"].rsplit("-", 1)[1], disc_pairing=s["spec"]["pairing"],
                 extractor=s["spec"]["extractor"], epochs=s["epochs"], images_per_class=s["images_per_class"],
                 final_loss=s["final_loss"], final_accuracy=s["final_accuracy"],
                 pair_dist_reduction_pct=100 * s["dist_reduction"] if "dist_reduction" in s else None)
            for s in stats]
    if not rows:
        return pd.DataFrame(columns=["model", "conditioning", "disc_pairing", "final_loss", "final_accuracy"])
    return pd.DataFrame(rows).sort_values(["conditioning", "model"], ignore_index=True)


def comparisons_table(metrics: list[dict], features: dict[str, dict], *, groups: int = 50) -> pd.DataFrame:
    # groups: jackknife groups where the metrics do not say how many evaluate used (evaluate.fd_jackknife)
    """Paired differences of FD at the same seeds: each model against its baseline, with the paired jackknife std.

    Baselines, within a conditioning and sampler setting: every unguided arm against the arm trained with
    ``pairing: none`` (EDM); every guided model against its unguided score model; a discriminator trained with
    AOT-paired noise against the one without (same score model). ``features`` maps a model name and setting
    ("aot-cond/rho7-steps18") to evaluate's features file contents (features, seeds, mu_ref, sigma_ref). Pairs
    whose seeds differ are skipped; a negative difference means the model scores better than its baseline.
    """
    from aot.metrics import frechet_distance_difference

    by_key = {}
    for m in metrics:
        arm, cond = m["model"].rsplit("-", 1)
        g = m.get("guidance")
        key = f"{m['model']}/rho{m['rho']:g}-steps{m['steps']}"
        if key in features:
            by_key[key] = dict(m=m, arm=arm, cond=cond, disc=g["discriminator_config"]["pairing"] if g else None,
                               score_model=_score_model_arm(m, metrics) if g else None, f=features[key])
    rows = []
    for key, a in by_key.items():
        setting = key.split("/", 1)[1]
        baselines = []
        if a["disc"] is None:
            if a["m"]["pairing"] != "none":
                baselines += [b for b in by_key.values() if b["disc"] is None and b["cond"] == a["cond"]
                              and b["m"]["pairing"] == "none" and _setting(b) == setting]
        elif a["score_model"] is not None:  # guided; metrics without the checkpoint cannot be matched
            baselines += [b for b in by_key.values() if b["disc"] is None and b["cond"] == a["cond"]
                          and b["arm"] == a["score_model"] and _setting(b) == setting]
            if a["disc"] != "none":
                baselines += [b for b in by_key.values() if b["disc"] == "none" and b["cond"] == a["cond"]
                              and b["score_model"] == a["score_model"] and _setting(b) == setting]
        for b in baselines:
            fa, fb = a["f"], b["f"]
            if not np.array_equal(fa["seeds"], fb["seeds"]) or not np.array_equal(fa["mu_ref"], fb["mu_ref"]):
                continue  # not the same seeds (or not the same feature space): no paired comparison
            k = a["m"]["scores"]["featnet"].get("fd_jackknife") or groups  # evaluate.fd_jackknife when it ran
            diff, std = frechet_distance_difference(fa["features"], fb["features"], fa["mu_ref"], fa["sigma_ref"],
                                                    groups=min(k, len(fa["seeds"]) - 2))
            rows.append(dict(conditioning=a["cond"], rho=a["m"]["rho"], steps=a["m"]["steps"], NFE=a["m"]["nfe"],
                             model=a["arm"], baseline=b["arm"], model_score=a["m"]["scores"]["featnet"]["value"],
                             baseline_score=b["m"]["scores"]["featnet"]["value"], difference=diff,
                             difference_std=std, z=diff / std if std > 0 else None,
                             samples=len(fa["seeds"]), seeds=f"{fa['seeds'].min()}-{fa['seeds'].max()}"))
    if not rows:
        return pd.DataFrame(columns=["conditioning", "rho", "steps", "model", "baseline", "difference",
                                     "difference_std"])
    return pd.DataFrame(rows).sort_values(["conditioning", "NFE", "rho", "baseline", "model"],
                                          ascending=[False, False, True, True, True], ignore_index=True)


def _setting(entry: dict) -> str:
    return f"rho{entry['m']['rho']:g}-steps{entry['m']['steps']}"


def _score_model_arm(m: dict, metrics: list[dict]) -> str | None:
    """The arm whose network a guided model sampled: the unguided model with the same checkpoint."""
    ckpt = m.get("checkpoint")
    for other in metrics:
        if other.get("guidance") is None and ckpt is not None and other.get("checkpoint") == ckpt:
            return other["model"].rsplit("-", 1)[0]
    return None


def table4(scores: pd.DataFrame) -> pd.DataFrame:
    metric = scores.metric.iloc[0] if not scores.empty else MISSING
    rows = []
    for (arm, steps), fids in TABLE4.items():
        for rho, fid in zip(TABLE4_RHOS, fids, strict=True):
            r = _lookup(scores, arm, "uncond", rho, steps)
            rows.append(dict(model="EDM" if arm == "edm" else "EDM-AOT", rho=rho, steps=steps, NFE=nfe_of(steps),
                             paper_fid=fid, **_cells(r, metric)))
    return pd.DataFrame(rows)


def table5(scores: pd.DataFrame) -> pd.DataFrame:
    """Best over rho in {9, 27, 81, 243} at each NFE (the paper's protocol), ours the same way."""
    metric = scores.metric.iloc[0] if not scores.empty else MISSING
    rows = []
    for (arm, cond), fids in TABLE5.items():
        pairing = {v: k for k, v in PAPER_ARM.items()}[arm]
        for n, fid in zip(TABLE5_NFES, fids, strict=True):
            cand = scores[(scores.pairing == pairing) & (scores.conditioning == cond) & (scores.NFE == n)
                          & scores.rho.isin(TABLE5_RHOS)] if not scores.empty else scores
            best = None if cand.empty else cand.loc[cand.ours.idxmin()]
            rows.append(dict(model=("EDM" if arm == "edm" else "EDM-AOT") + f" {cond}", NFE=n, paper_fid=fid,
                             rho=None if best is None else best.rho, steps=(n + 1) // 2, **_cells(best, metric)))
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------
# Output formats.


def to_markdown(df: pd.DataFrame, title: str, note: str) -> str:
    cols = list(df.columns)
    lines = [f"# {title}", "", note, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in df.itertuples(index=False):
        cells = []
        for c, v in zip(cols, r, strict=True):
            if isinstance(v, float) and not _missing(v) and c in ("rho", "steps", "NFE", "samples", "pool"):
                cells.append(f"{v:g}")
            elif isinstance(v, float):
                cells.append(_fmt(v, 2 if "paper" in c else 4))
            else:
                cells.append(MISSING if v is None or v == "" else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_latex(df: pd.DataFrame, caption: str) -> str:
    def esc(v):
        s = _fmt(v, 2) if isinstance(v, float) else (MISSING if v is None or v == "" else str(v))
        return s.replace("_", r"\_").replace("%", r"\%").replace("&", r"\&").replace(MISSING, "--")

    cols = list(df.columns)
    out = [r"\begin{table}[t]", r"\centering", rf"\caption{{{esc(caption)}}}",
           r"\begin{tabular}{" + "l" * len(cols) + "}", r"\toprule", " & ".join(esc(c) for c in cols) + r" \\",
           r"\midrule"]
    out += [" & ".join(esc(v) for v in r) + r" \\" for r in df.itertuples(index=False)]
    out += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(out) + "\n"


def _write(out_dir: Path, name: str, df: pd.DataFrame, title: str, note: str) -> None:
    atomic_write_text(out_dir / f"{name}.csv", df.to_csv(index=False))
    atomic_write_text(out_dir / f"{name}.md", to_markdown(df, title, note))
    atomic_write_text(out_dir / f"{name}.tex", to_latex(df, title))


COMPARABILITY = ("Ours: `{metric}`. The paper's column is its CIFAR-10 Inception FID-50k (min of 3 seed blocks); "
                 "our number is comparable with it only when the metric says Inception FID on CIFAR-10. "
                 "`ours_std`: the score's standard deviation from the finite sample (FD: jackknife over the "
                 "generated images; Inception FID: spread over seed blocks). It ignores the correlation between "
                 "models sampled at the same seeds. '—' = not run here (or not reported by the paper).")


def write_tables(metric_files, stats_files, out_dir, trajectory_files=(), disc_stats_files=(),
                 feature_files=()) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = [json.loads(Path(p).read_text()) for p in metric_files]
    scores = score_table(metrics)
    pairs = pairing_table([json.loads(Path(p).read_text()) for p in stats_files])
    trajs = trajectory_table([json.loads(Path(p).read_text()) for p in trajectory_files])
    primary = scores[scores.metric_key == scores.metric_key.iloc[0]]  # the first configured metric
    unguided = primary[primary.guidance == "none"]  # Tables 1, 2, 4, 5
    note = COMPARABILITY.format(metric=primary.metric.iloc[0])
    _write(out_dir, "scores", scores.drop(columns=["metric_key"]),
           "All scores per arm, conditioning and sampler setting", note)
    _write(out_dir, "table1", table12(unguided, "uncond"), "Table 1: unconditional CIFAR-10", note)
    _write(out_dir, "table2", table12(unguided, "cond"), "Table 2: conditional CIFAR-10", note)
    _write(out_dir, "table3", table3(primary), "Table 3: with Discriminator Guidance", note)
    _write(out_dir, "table4", table4(unguided), "Table 4: rho sweep (unconditional)", note)
    _write(out_dir, "table5", table5(unguided), "Table 5: NFE sweep (best rho of 9/27/81/243)", note)
    _write(out_dir, "discriminators", discriminator_table([json.loads(Path(p).read_text())
                                                           for p in disc_stats_files]),
           "Discriminator Guidance: discriminator training",
           "Binary cross-entropy and accuracy of real vs generated images at the last epoch (training data, "
           "VP-diffused at importance-sampled times). With AOT the perturbation noise of each batch is assigned to "
           "its images; the reduction is of the mean image-noise distance vs the independent draw.")
    features = {}
    for p in feature_files:  # results/<exp>/metrics/<model>/<setting>.features.npz
        p = Path(p)
        with np.load(p, allow_pickle=False) as z:
            features[f"{p.parent.name}/{p.name.removesuffix('.features.npz')}"] = {k: z[k] for k in z.files}
    _write(out_dir, "comparisons", comparisons_table(metrics, features), "Paired comparisons at the same seeds",
           "FD of each model minus its baseline's (EDM's arm at the same setting; a guided model's unguided model; "
           "a discriminator trained with AOT noise vs without), both sampled at the same seeds, with the paired "
           "jackknife standard deviation of the difference (evaluate.fd_jackknife groups of seeds, each deleted "
           "from both sets at once) and z = difference / std. Negative: the model is better. Pairing removes "
           "what the two sets share through their latents, which the per-score `ours_std` cannot. Both stds err on "
           "the large side (jackknife) and cover the seed set only, not the training run.")
    _write(out_dir, "pairing", pairs, "Image-noise pair distance during training",
           "Mean ||y - n|| over all pools a model trained on: the pairs it used vs the independent (EDM) pairing "
           "of the same draws. AOT lowers it; the paper reports about 2% on CIFAR-10.")
    _write(out_dir, "trajectory", trajs, "Trajectory straightness, curvature and truncation error",
           "Straightness S = mean over sigma of E||v - vbar||^2 (0 = straight); normalized by E||vbar||^2. Curvature = "
           "mean over steps of 1 - cos(d_i, x_start - x_end). Errors are RMS per dimension against a fine Heun "
           "reference (paper-spec §6). Lower is straighter.")


# ----------------------------------------------------------------------------
# Across training runs: the same experiment trained with other seeds (python -m aot replicates).

_SCORE_KEYS = ["arm", "pairing", "conditioning", "rho", "steps", "NFE", "guidance", "disc_pairing", "metric"]
_COMPARISON_KEYS = ["conditioning", "rho", "steps", "NFE", "model", "baseline"]


def _across(frames: list[pd.DataFrame], names: list[str], keys: list[str], value: str, within: str) -> pd.DataFrame:
    """Per key: each run's ``value``, their mean and standard deviation across runs, and the mean within-run std."""
    tidy = pd.concat([f.assign(run=n) for f, n in zip(frames, names, strict=True)], ignore_index=True)
    rows = []
    for key, g in tidy.groupby(keys, dropna=False, sort=False):
        g = g.set_index("run")
        vals = [g[value].get(n) for n in names]
        got = [v for v in vals if not _missing(v)]
        rows.append(dict(zip(keys, key, strict=True), runs=len(got),
                         mean=float(sum(got) / len(got)) if got else None,
                         std_across_runs=float(pd.Series(got).std(ddof=1)) if len(got) > 1 else None,
                         mean_std_within_run=float(g[within].mean()) if within in g and g[within].notna().any()
                         else None,
                         **{f"{value}_{n}": v for n, v in zip(names, vals, strict=True)}))
    return pd.DataFrame(rows)


def write_replicates(table_dirs, out_dir) -> None:
    """Scores and paired comparisons of one experiment trained several times (other ``train.seed``), side by side.

    ``table_dirs``: the runs' ``results/tables/<experiment>/`` folders, each with ``scores.csv`` (and
    ``comparisons.csv`` where the featnet metric ran). Writes ``scores.{csv,md,tex}`` (each run's score, mean, std
    across runs and the mean within-run ``ours_std``) and ``comparisons.{csv,md,tex}`` (the same for the paired
    differences) to ``out_dir``. The spread across runs is the training noise the within-run stds leave out.
    """
    dirs = [Path(d) for d in table_dirs]
    if len(dirs) < 2:
        raise ValueError(f"replicates needs at least 2 table folders, got {len(dirs)}")
    for d in dirs:
        if not (d / "scores.csv").is_file():
            raise FileNotFoundError(f"{d / 'scores.csv'} is missing: give results/tables/<experiment> folders")
    names = [d.name for d in dirs]
    if len(set(names)) != len(names):
        raise ValueError(f"table folders must have distinct names, got {names}")
    scores = [pd.read_csv(d / "scores.csv") for d in dirs]
    seeds = {n: set(f.seeds) for n, f in zip(names, scores, strict=True)}
    if len({frozenset(v) for v in seeds.values()}) > 1:
        raise ValueError(f"the runs were sampled at different seeds ({seeds}); compare runs of one sampling config")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    note = ("One experiment trained {n} times ({runs}). `mean`/`std_across_runs`: over the runs (training noise "
            "included); `mean_std_within_run`: the average jackknife std of one run's seed set. Same sampling seeds "
            "in every run.").format(n=len(names), runs=", ".join(names))
    _write(out_dir, "scores", _across(scores, names, _SCORE_KEYS, "ours", "ours_std"),
           "Scores across training runs", note)
    comps = [pd.read_csv(d / "comparisons.csv") for d in dirs if (d / "comparisons.csv").is_file()]
    if len(comps) == len(dirs):
        _write(out_dir, "comparisons",
               _across(comps, names, _COMPARISON_KEYS, "difference", "difference_std"),
               "Paired comparisons across training runs", note)
