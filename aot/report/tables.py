"""Metrics JSON files -> the comparison tables (CSV + Markdown + LaTeX) with the paper's numbers beside ours.

Every row carries its setting (rho, steps, NFE, samples, seeds, metric). Rows of the paper that we have not
run are kept and shown as missing ('—'), never dropped, with the reason in their ``note``: from the resolved
experiment config when the tables stage is given it (``--config``), else as far as the metrics files tell. Each
table's title and note come from :mod:`aot.report.captions`, the titles of Tables 1-5 naming the config's dataset.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from aot.core.names import ModelName
from aot.eval.paired import FEATURES_METRIC, comparisons_table, coupling_table
from aot.report import captions
from aot.report.paper import (
    PAIRING_OF,
    TABLE1_ROWS,
    TABLE2_ROWS,
    TABLE3_ROWS,
    TABLE4,
    TABLE4_RHOS,
    TABLE5,
    TABLE5_NFES,
    TABLE5_RHOS,
    paper_fid,
    paper_fid_guided,
)
from aot.report.reasons import (
    why_guided,
    why_no_comparisons,
    why_no_coupling,
    why_no_discriminators,
    why_no_pairs,
    why_no_trajectories,
    why_table5,
    why_unguided,
)
from aot.report.writers import MISSING, write_table
from aot.sampling.samplers import nfe as nfe_of

PRIOR_WORK = "prior work: not retrained here"


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
        arm, cond = ModelName.parse(m["model"])
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
    rows = [dict(arm=ModelName.parse(s["model"]).arm, conditioning=ModelName.parse(s["model"]).cond,
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
        arm, cond = ModelName.parse(meta["model"])
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
            note = "" if r is not None else why_unguided(cfg, scores, arm, cond, rho, steps)
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
                    why[cond] = "unguided " + why_unguided(cfg, unguided, arm, cond, guided.rho, guided.steps)
            else:
                why[cond] = why_guided(cfg, scores, arm, disc, cond)
        if len(why) == 2 and why["uncond"] == why["cond"]:
            note = why["cond"]
        else:
            note = "; ".join(f"{cond}: {w}" for cond, w in why.items())
        row.update(metric=metric if ran else None, setting="; ".join(ran) if ran else MISSING, note=note)
        rows.append(row)
    return pd.DataFrame(rows)


def discriminator_table(stats: list[dict]) -> pd.DataFrame:
    """How each discriminator trained: final BCE loss and accuracy (real vs generated), noise pairing gain."""
    rows = [dict(model=s["model"], conditioning=ModelName.parse(s["model"]).cond, disc_pairing=s["spec"]["pairing"],
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
                             note="" if r is not None else why_unguided(cfg, scores, arm, "uncond", rho, steps)))
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
                             note="" if best is not None else why_table5(cfg, scores, arm, cond, (n + 1) // 2)))
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------
# Output formats.


METRICS_KEYS = ("model", "pairing", "rho", "steps", "nfe", "scores")  # what score_table reads of a metrics JSON


def write_tables(metric_files, stats_files, out_dir, trajectory_files=(), disc_stats_files=(),
                 feature_files=(), config: dict | None = None) -> None:
    """All tables from the stages' JSON files. ``config``: the resolved experiment config (as the workflow
    validated it); with it, every missing cell says which key left it out, without it what the files show."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    from aot.core.artifacts import read_json, read_npz

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
    metric = primary.metric.iloc[0]

    def write(name: str, df: pd.DataFrame, empty: str | None = None) -> None:  # with the catalogue's title and note
        write_table(out_dir, name, df, captions.title(name, config), captions.text(name, metric), empty=empty)

    write("scores", scores.drop(columns=["metric_key"]))
    write("table1", table12(unguided, "uncond", config))
    write("table2", table12(unguided, "cond", config))
    write("table3", table3(primary, config))
    write("table4", table4(unguided, config))
    write("table5", table5(unguided, config))
    write("discriminators", discriminator_table([read_json(p, kind="discriminator summary", rule="train_discriminator")
                                                 for p in disc_stats_files]), empty=why_no_discriminators(config))
    features = {}
    for p in feature_files:  # results/<exp>/metrics/<model>/<setting>.features.npz
        p = Path(p)
        features[f"{p.parent.name}/{p.name.removesuffix('.features.npz')}"] = read_npz(
            p, ["features", "seeds", "mu_ref", "sigma_ref"], optional=["feature_net"], kind="features file",
            rule="evaluate")
    write("comparisons", comparisons_table(metrics, features), empty=why_no_comparisons(config, features))
    # The paired difference needs the featnet features; without them, the primary metric's scores (unpaired).
    paired = features and FEATURES_METRIC in set(scores.metric_key)
    coupling_metric = FEATURES_METRIC if paired else primary.metric_key.iloc[0]
    write("coupling", coupling_table(metrics, stats, features, trajs, metric_key=coupling_metric),
          empty=why_no_coupling(config, stats))
    write("pairing", pairs, empty=why_no_pairs(config))
    write("trajectory", trajs, empty=why_no_trajectories(config))


# ----------------------------------------------------------------------------
# Across training runs: the same experiment trained with other seeds (python -m aot replicates).


