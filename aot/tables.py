"""Metrics JSON files -> the comparison tables (CSV + Markdown + LaTeX) with the paper's numbers beside ours.

Every row carries its setting (rho, steps, NFE, samples, seeds, metric). Rows of the paper that we have not
run are kept and shown as missing ('—'), never dropped, with the reason in their ``note``: from the resolved
experiment config when the tables stage is given it (``--config``), else as far as the metrics files tell.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from aot.checkpoint import atomic_write_text
from aot.paired import FEATURES_METRIC, comparisons_table, coupling_table
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
PRIOR_WORK = "prior work: not retrained here"
PAIRING_OF = {v: k for k, v in PAPER_ARM.items()}  # the paper's arm ('edm', 'aot') -> our noise pairing


def _missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _fmt(x, digits=3) -> str:
    return MISSING if _missing(x) else f"{x:.{digits}f}"


# ----------------------------------------------------------------------------
# Tidy tables.


def _sampler_column(m: dict) -> dict:
    """EDM's stochastic sampler's settings for its rows; the column only exists in a table that has such rows."""
    c = m.get("churn")
    if not c:
        return {}
    return {"sampler": f"stochastic (S_churn {c['S_churn']:g}, S_min {c['S_min']:g}, S_max {c['S_max']:g}, "
                       f"S_noise {c['S_noise']:g})"}


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
                             paper_source=source, **_sampler_column(m)))
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
    pairing = PAIRING_OF[arm_pairing]
    hit = scores[(scores.pairing == pairing) & (scores.conditioning == cond) & (scores.rho == rho)
                 & (scores.steps == steps)]
    return None if hit.empty else hit.iloc[0]


def _cells(r) -> dict:
    """Our cells of a row; all empty (metric too: it labels our number) when we have no number for it."""
    if r is None:
        return dict(ours=None, ours_std=None, metric=None, samples=None, seeds=MISSING)
    return dict(ours=r.ours, ours_std=r.ours_std, metric=r.metric, samples=int(r.samples), seeds=r.seeds)


# ----------------------------------------------------------------------------
# Why a cell has no number of ours. ``cfg``: the resolved experiment config (keys as in config/config.yaml plus
# the schema's defaults), or None: then the reason is what the metrics files show. Each returns 'not run: ...'.


def _grid(cfg: dict) -> set[tuple[float, int]]:
    return {(float(g["rho"]), int(g["steps"])) for g in cfg.get("sample", {}).get("grid", [])}


def _why_no_arm(cfg: dict | None, scores: pd.DataFrame, arm: str, cond: str) -> str | None:
    """Why no model of the paper's ``arm`` ('edm'/'aot') at ``cond`` was run, or None if one was."""
    pairing = PAIRING_OF[arm]
    if cfg is not None:
        if cond not in cfg.get("conditioning", []):
            return f"not run: conditioning '{cond}' not in `conditioning`"
        if not any(a.get("pairing") == pairing for a in cfg.get("arms", {}).values()):
            return f"not run: no arm with `pairing: {pairing}` in `arms`"
        return None
    if scores.empty or not (scores.conditioning == cond).any():
        return f"not run: no {cond} metrics given (`conditioning`)"
    if not ((scores.pairing == pairing) & (scores.conditioning == cond)).any():
        return f"not run: no metrics of an arm with `pairing: {pairing}` ({cond}; `arms`)"
    return None


def _why_unguided(cfg: dict | None, scores: pd.DataFrame, arm: str, cond: str, rho, steps) -> str:
    """Why we have no unguided score of ``arm`` at (cond, rho, steps)."""
    why = _why_no_arm(cfg, scores, arm, cond)
    if why:
        return why
    at = f"rho {rho:g}, {int(steps)} steps"
    if cfg is not None:
        if (float(rho), int(steps)) not in _grid(cfg):
            return f"not run: {at} not in `sample.grid`"
        return f"not run: {at} is configured, but no metrics file for it was given"
    return f"not run: no metrics at {at} (`sample.grid`)"


def _why_table5(cfg: dict | None, scores: pd.DataFrame, arm: str, cond: str, steps: int) -> str:
    why = _why_no_arm(cfg, scores, arm, cond)
    if why:
        return why
    rhos = "/".join(f"{r:g}" for r in TABLE5_RHOS)
    if cfg is not None:
        if not any(s == steps and r in TABLE5_RHOS for r, s in _grid(cfg)):
            return f"not run: no rho of {rhos} at {steps} steps in `sample.grid`"
        return f"not run: rho {rhos} at {steps} steps is configured, but no metrics file for it was given"
    return f"not run: no metrics at {steps} steps with rho {rhos} (`sample.grid`)"


def _why_guided(cfg: dict | None, scores: pd.DataFrame, arm: str, disc: str, cond: str) -> str:
    """Why Table 3's row (score model ``arm``, discriminator noise ``disc``) has no guided score at ``cond``."""
    pairing = PAIRING_OF[arm]
    if cfg is not None:
        g = cfg.get("guidance", {})
        if not g.get("enabled", True):
            return "not run: guidance disabled (`guidance.enabled: false`)"
        arms = cfg.get("arms", {})
        if not any(a.get("pairing") == pairing for a in arms.values()):
            return f"not run: no arm with `pairing: {pairing}` in `arms` (the score model)"
        runs = [name for name, r in g.get("runs", {}).items()
                if arms.get(r.get("arm"), {}).get("pairing") == pairing and r.get("pairing") == disc]
        if not runs:
            return (f"not run: `guidance.runs` has no run with a score model of `pairing: {pairing}` and "
                    f"discriminator `pairing: {disc}`")
        if cond not in cfg.get("conditioning", []):
            return f"not run: conditioning '{cond}' not in `conditioning`"
        return f"not run: configured (guidance.runs: {', '.join(runs)}), but no metrics file for it was given"
    guided = scores[scores.guidance != "none"] if not scores.empty else scores
    if guided.empty:
        return ("not run: no guided metrics given (guidance disabled by `guidance.enabled: false`, or no "
                "`guidance.runs`)")
    if not ((guided.pairing == pairing) & (guided.disc_pairing == disc)).any():
        return (f"not run: no guided metrics with a score model of `pairing: {pairing}` and discriminator "
                f"`pairing: {disc}` (`guidance.runs`)")
    return f"not run: no {cond} guided metrics (`conditioning`)"


def table12(scores: pd.DataFrame, cond: str, cfg: dict | None = None) -> pd.DataFrame:
    """Table 1 (uncond) or 2 (cond). Prior work's rows keep the paper's number only: no metric, score or setting
    of ours."""
    rows_spec = TABLE1_ROWS if cond == "uncond" else TABLE2_ROWS
    rows = []
    for label, arm, rho, steps, nfe, fid in rows_spec:
        r = _lookup(scores, arm, cond, rho, steps) if arm else None
        if arm is None:
            note = PRIOR_WORK
        else:
            note = "" if r is not None else _why_unguided(cfg, scores, arm, cond, rho, steps)
        rows.append(dict(model=label, rho=rho, steps=steps, NFE=nfe, paper_fid=fid, **_cells(r), note=note))
    return pd.DataFrame(rows)


def table3(scores: pd.DataFrame, cfg: dict | None = None) -> pd.DataFrame:
    """Discriminator Guidance: per paper row, our guided score and the unguided score of the same model at the same
    setting and seeds (so the guidance gain reads across), uncond and cond. A row is matched by score-model
    pairing and discriminator noise pairing, at the paper's NFE if we ran it, else at the setting we ran. The note
    says why a cell is missing (per conditioning when they differ)."""
    metric = scores.metric.iloc[0] if not scores.empty else None
    rows = []
    for label, arm, disc, n, paper_u, paper_c in TABLE3_ROWS:
        row = dict(model=label, NFE=n, paper_fid_uncond=paper_u, paper_fid_cond=paper_c)
        ran, why = [], {}
        for cond in ("uncond", "cond"):
            guided, plain = None, None
            if not scores.empty:
                cand = scores[(scores.guidance != "none") & (scores.pairing == PAIRING_OF[arm])
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
                if plain is None:
                    unguided = scores[scores.guidance == "none"]
                    why[cond] = "unguided " + _why_unguided(cfg, unguided, arm, cond, guided.rho, guided.steps)
            else:
                why[cond] = _why_guided(cfg, scores, arm, disc, cond)
        if len(why) == 2 and why["uncond"] == why["cond"]:
            note = why["cond"]
        else:
            note = "; ".join(f"{cond}: {w}" for cond, w in why.items())
        row.update(metric=metric if ran else None, setting="; ".join(ran) if ran else MISSING, note=note)
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


def table4(scores: pd.DataFrame, cfg: dict | None = None) -> pd.DataFrame:
    rows = []
    for (arm, steps), fids in TABLE4.items():
        for rho, fid in zip(TABLE4_RHOS, fids, strict=True):
            r = _lookup(scores, arm, "uncond", rho, steps)
            rows.append(dict(model="EDM" if arm == "edm" else "EDM-AOT", rho=rho, steps=steps, NFE=nfe_of(steps),
                             paper_fid=fid, **_cells(r),
                             note="" if r is not None else _why_unguided(cfg, scores, arm, "uncond", rho, steps)))
    return pd.DataFrame(rows)


def table5(scores: pd.DataFrame, cfg: dict | None = None) -> pd.DataFrame:
    """Best over rho in {9, 27, 81, 243} at each NFE (the paper's protocol), ours the same way."""
    rows = []
    for (arm, cond), fids in TABLE5.items():
        pairing = PAIRING_OF[arm]
        for n, fid in zip(TABLE5_NFES, fids, strict=True):
            cand = scores[(scores.pairing == pairing) & (scores.conditioning == cond) & (scores.NFE == n)
                          & scores.rho.isin(TABLE5_RHOS)] if not scores.empty else scores
            best = None if cand.empty else cand.loc[cand.ours.idxmin()]
            rows.append(dict(model=("EDM" if arm == "edm" else "EDM-AOT") + f" {cond}", NFE=n, paper_fid=fid,
                             rho=None if best is None else best.rho, steps=(n + 1) // 2, **_cells(best),
                             note="" if best is not None else _why_table5(cfg, scores, arm, cond, (n + 1) // 2)))
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------
# Output formats.


def to_markdown(df: pd.DataFrame, title: str, note: str) -> str:
    cols = list(df.columns)
    lines = [f"# {title}", "", note, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in df.itertuples(index=False):
        cells = []
        for c, v in zip(cols, r, strict=True):
            if isinstance(v, float) and not _missing(v) and c in ("rho", "steps", "NFE", "samples", "pool", "N"):
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


def _write(out_dir: Path, name: str, df: pd.DataFrame, title: str, note: str, empty: str | None = None) -> None:
    """CSV, Markdown and LaTeX of a table. ``empty``: the sentence saying why it has no rows; the Markdown then
    gives it instead of an empty table (the CSV keeps its header, the LaTeX caption takes the sentence)."""
    atomic_write_text(out_dir / f"{name}.csv", df.to_csv(index=False))
    if df.empty and empty:
        atomic_write_text(out_dir / f"{name}.md", f"# {title}\n\n{empty}\n")
        atomic_write_text(out_dir / f"{name}.tex", to_latex(df, f"{title}. {empty}"))
        return
    atomic_write_text(out_dir / f"{name}.md", to_markdown(df, title, note))
    atomic_write_text(out_dir / f"{name}.tex", to_latex(df, title))


def _why_no_discriminators(cfg: dict | None) -> str:
    if cfg is None:
        return ("No discriminator was trained: the tables stage was given no discriminator training summaries "
                "(guidance disabled by `guidance.enabled: false`, or no `guidance.runs`).")
    g = cfg.get("guidance", {})
    if not g.get("enabled", True):
        return "No discriminator was trained: Discriminator Guidance is disabled (`guidance.enabled: false`)."
    if not g.get("runs"):
        return "No discriminator was trained: `guidance.runs` configures no run."
    return ("No discriminator training summary was given to the tables stage (`--disc-stats`), although "
            f"`guidance.runs` configures {', '.join(g['runs'])}.")


def _why_no_comparisons(cfg: dict | None, features: dict) -> str:
    if cfg is not None and "featnet" not in cfg.get("evaluate", {}).get("metrics", []):
        return ("No paired comparison: it needs the featnet metric's per-image features, and `evaluate.metrics` "
                "does not include featnet.")
    if not features:
        return "No paired comparison: no features files were given (`--features`; the featnet metric writes them)."
    return ("No paired comparison: no model has a baseline (the EDM arm, its unguided model) scored at the same "
            "setting and seeds.")


def _why_no_pairs(cfg: dict | None) -> str:
    arms = (cfg or {}).get("arms", {})
    if arms and all("checkpoints" in a for a in arms.values()):
        return ("No training pair statistics: every arm's network is imported (`arms.<arm>.checkpoints`), none "
                "was trained here.")
    return "No training pair statistics: no training summaries were given (`--stats`)."


def _why_no_coupling(cfg: dict | None, stats: list[dict]) -> str:
    pairings = {s["pairing"] for s in stats}
    if not stats:
        return "No coupling comparison: " + _why_no_pairs(cfg).removeprefix("No training pair statistics: ")
    if "none" not in pairings:
        return ("No coupling comparison: no arm with `pairing: none` (EDM, each seed's baseline) was trained here "
                "(`arms`).")
    if pairings == {"none"}:
        return "No coupling comparison: every trained arm has `pairing: none`; there is no coupling to compare."
    return ("No coupling comparison: no trained unguided model has an EDM arm (`pairing: none`) of the same "
            "training seed and conditioning scored at the same setting (and, with features, the same sampling "
            "seeds).")


def _why_no_trajectories(cfg: dict | None) -> str:
    if cfg is not None and not cfg.get("trajectory", {}).get("settings"):
        return "No trajectory metrics: `trajectory.settings` is empty."
    return "No trajectory metrics: none were given (`--trajectory`)."


COMPARABILITY = ("Ours: `{metric}`. The paper's column is its CIFAR-10 Inception FID-50k (min of 3 seed blocks); "
                 "our number is comparable with it only when the metric says Inception FID on CIFAR-10. "
                 "`ours_std`: the score's standard deviation from the finite sample (FD: jackknife over the "
                 "generated images; Inception FID: spread over seed blocks). It ignores the correlation between "
                 "models sampled at the same seeds. '—' = no number: not reported by the paper, or not run here "
                 "(the `note` column says why; prior work's rows are the paper's only).")


METRICS_KEYS = ("model", "pairing", "rho", "steps", "nfe", "scores")  # what score_table reads of a metrics JSON


def write_tables(metric_files, stats_files, out_dir, trajectory_files=(), disc_stats_files=(),
                 feature_files=(), config: dict | None = None) -> None:
    """All tables from the stages' JSON files. ``config``: the resolved experiment config (as the workflow
    validated it); with it, every missing cell says which key left it out, without it what the files show."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    from aot.artifacts import read_json, read_npz

    metrics = [read_json(p, kind="metrics JSON", rule="evaluate", keys=METRICS_KEYS)
               for p in metric_files]
    scores = score_table(metrics)
    stats = [read_json(p, kind="training summary", rule="train") for p in stats_files]
    pairs = pairing_table(stats)
    trajs = trajectory_table([read_json(p, kind="trajectory metrics", rule="trajectory") for p in trajectory_files])
    first = scores.metric_key.iloc[0]  # the first configured metric (without the config: the first by name)
    configured = [k for k in (config or {}).get("evaluate", {}).get("metrics", []) if k in set(scores.metric_key)]
    primary = scores[scores.metric_key == (configured[0] if configured else first)]
    unguided = primary[primary.guidance == "none"]  # Tables 1, 2, 4, 5
    note = COMPARABILITY.format(metric=primary.metric.iloc[0])
    _write(out_dir, "scores", scores.drop(columns=["metric_key"]),
           "All scores per arm, conditioning and sampler setting", note)
    _write(out_dir, "table1", table12(unguided, "uncond", config), "Table 1: unconditional CIFAR-10", note)
    _write(out_dir, "table2", table12(unguided, "cond", config), "Table 2: conditional CIFAR-10", note)
    _write(out_dir, "table3", table3(primary, config), "Table 3: with Discriminator Guidance", note)
    _write(out_dir, "table4", table4(unguided, config), "Table 4: rho sweep (unconditional)", note)
    _write(out_dir, "table5", table5(unguided, config), "Table 5: NFE sweep (best rho of 9/27/81/243)", note)
    _write(out_dir, "discriminators", discriminator_table([read_json(p, kind="discriminator summary",
                                                                     rule="train_discriminator")
                                                           for p in disc_stats_files]),
           "Discriminator Guidance: discriminator training",
           "Binary cross-entropy and accuracy of real vs generated images at the last epoch (training data, "
           "VP-diffused at importance-sampled times). With AOT the perturbation noise of each batch is assigned to "
           "its images; the reduction is of the mean image-noise distance vs the independent draw.",
           empty=_why_no_discriminators(config))
    features = {}
    for p in feature_files:  # results/<exp>/metrics/<model>/<setting>.features.npz
        p = Path(p)
        features[f"{p.parent.name}/{p.name.removesuffix('.features.npz')}"] = read_npz(
            p, ["features", "seeds", "mu_ref", "sigma_ref"], optional=["feature_net"], kind="features file",
            rule="evaluate")
    _write(out_dir, "comparisons", comparisons_table(metrics, features), "Paired comparisons at the same seeds",
           "FD of each model minus its baseline's (EDM's arm at the same setting; a guided model's unguided model; "
           "a discriminator trained with AOT noise vs without), both sampled at the same seeds, with the paired "
           "jackknife standard deviation of the difference (evaluate.fd_jackknife groups of seeds, each deleted "
           "from both sets at once) and z = difference / std. Negative: the model is better. Pairing removes "
           "what the two sets share through their latents, which the per-score `ours_std` cannot. Both stds err on "
           "the large side (jackknife) and cover the seed set only, not the training run.",
           empty=_why_no_comparisons(config, features))
    # The paired difference needs the featnet features; without them, the primary metric's scores (unpaired).
    paired = features and FEATURES_METRIC in set(scores.metric_key)
    coupling_metric = FEATURES_METRIC if paired else primary.metric_key.iloc[0]
    _write(out_dir, "coupling", coupling_table(metrics, stats, features, trajs, metric_key=coupling_metric),
           "Coupling strength: pair-distance reduction vs score difference to EDM of the same training seed",
           "One row per conditioning, sampler setting and noise coupling (`N`: images one assignment pairs; knn: k "
           "candidates; none: independent, EDM, the reference row). `reduction_pct`: how much the coupling lowered "
           "the mean image-noise distance during training (mean over training seeds, `reduction_pct_std` across "
           "them). `fd_diff`: the model's score minus that of the `pairing: none` model of the same conditioning, "
           "setting and training seed (never another seed's EDM), averaged over the `runs` seeds; "
           "`fd_diff_std_across_seeds` is their spread (training noise included, ddof 1), "
           "`fd_diff_std_within_run` the mean paired jackknife std of one seed set (sampling noise only). "
           "`paired`: the difference is paired on the featnet features at the same sampling seeds; False: the "
           "difference of the two scores (no features, e.g. the Inception metric), with no within-run std. "
           "Negative: the coupling is better than EDM. `straightness_normalized`: mean over seeds at the same "
           "setting where trajectories were computed. `fd_diff_seed<s>` and `per_seed`: every run and its baseline.",
           empty=_why_no_coupling(config, stats))
    _write(out_dir, "pairing", pairs, "Image-noise pair distance during training",
           "Mean ||y - n|| over all pools a model trained on: the pairs it used vs the independent (EDM) pairing "
           "of the same draws. AOT lowers it; the paper reports about 2% on CIFAR-10.", empty=_why_no_pairs(config))
    _write(out_dir, "trajectory", trajs, "Trajectory straightness, curvature and truncation error",
           "Straightness S = mean over sigma of E||v - vbar||^2 (0 = straight); normalized by E||vbar||^2. Curvature = "
           "mean over steps of 1 - cos(d_i, x_start - x_end). Errors are RMS per dimension against a fine Heun "
           "reference (paper-spec §6). Lower is straighter.", empty=_why_no_trajectories(config))


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
