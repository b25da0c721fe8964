"""Paired score differences at the same seeds, the estimator behind two tables.

``comparisons_table``: each model against its baseline in one run (AOT vs EDM, guided vs unguided, a discriminator
trained with AOT-paired noise vs without). ``coupling_table``: each noise coupling against the EDM model of the same
training seed, averaged over seeds with their spread, beside the coupling's measured pair-distance reduction.
Both pair on evaluate's per-image features (:func:`aot.eval.metrics.frechet_distance_difference`, paired jackknife std).
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pandas as pd

from aot.core.names import ModelName


def comparisons_table(metrics: list[dict], features: dict[str, dict], *, groups: int = 50) -> pd.DataFrame:
    # groups: jackknife groups where the metrics do not say how many evaluate used (evaluate.fd_jackknife)
    """Paired differences of FD at the same seeds: each model against its baseline, with the paired jackknife std.

    Baselines, within a conditioning and sampler setting: every unguided arm against the arm trained with
    ``pairing: none`` (EDM); every guided model against its unguided score model; a discriminator trained with
    AOT-paired noise against the one without (same score model). ``features`` maps a model name and setting
    ("aot-cond/rho7-steps18") to evaluate's features file contents (features, seeds, mu_ref, sigma_ref). Pairs
    whose seeds differ are skipped; a negative difference means the model scores better than its baseline.
    """
    by_key = {}
    for m in metrics:
        arm, cond = ModelName.parse(m["model"])
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
            d = _seed_difference(a, b, FEATURES_METRIC, groups)
            if d is None:
                continue  # not the same seeds (or not the same feature space): no paired comparison
            diff, std, _ = d
            fa = a["f"]
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
            return ModelName.parse(other["model"]).arm
    return None


# ----------------------------------------------------------------------------
# Coupling strength: does AOT's effect on the score follow how strongly the pairing pulls noise toward images?

FEATURES_METRIC = "featnet"  # the metric whose per-image features evaluate writes (the paired difference's input)
COUPLING_COLUMNS = ["conditioning", "rho", "steps", "NFE", "coupling", "pairing", "N", "metric", "paired", "runs",
                    "training_seeds", "reduction_pct", "reduction_pct_std", "fd_diff", "fd_diff_std_across_seeds",
                    "fd_diff_std_within_run", "straightness_normalized", "straightness_normalized_std",
                    "straightness_runs"]


def coupling_of(s: dict) -> dict:
    """A training summary's coupling: training seed, group size N (images one assignment pairs), kNN k, label.

    Summaries written before train recorded these get: seed 0; N = the pool for aot/aot-sq (there was no block
    then); N unknown for immiscible (its micro-batch was not recorded: label without N); k unknown for knn.
    """
    pairing = s["pairing"]
    if pairing in ("none", "knn"):
        n = None  # independent, or no assignment: no group
    elif "group_size" in s:
        n = s["group_size"]
    else:
        n = (s.get("block") or s.get("pool")) if pairing in ("aot", "aot-sq") else None
    k = s.get("knn_k")
    if pairing == "none":
        label = "none"
    elif pairing == "knn":
        label = "knn" if k is None else f"knn k={k}"
    else:
        label = pairing if n is None else f"{pairing} N={n}"
    return dict(seed=int(s.get("seed", 0)), N=n, knn_k=k, coupling=label)


def _seed_difference(a: dict, b: dict, metric_key: str, groups: int) -> tuple[float, float | None, bool] | None:
    """Model ``a`` minus its baseline ``b`` at one setting: (difference, paired jackknife std, paired). Paired on
    the features when both have them; None when those are not at the same seeds or feature space; else the
    difference of the two scores (unpaired, no std)."""
    from aot.eval.metrics import frechet_distance_difference

    fa, fb = a["f"], b["f"]
    if fa is None or fb is None:
        return a["m"]["scores"][metric_key]["value"] - b["m"]["scores"][metric_key]["value"], None, False
    if not np.array_equal(fa["seeds"], fb["seeds"]) or not np.array_equal(fa["mu_ref"], fb["mu_ref"]):
        return None
    k = a["m"]["scores"][metric_key].get("fd_jackknife") or groups  # evaluate.fd_jackknife when it ran
    diff, std = frechet_distance_difference(fa["features"], fb["features"], fa["mu_ref"], fa["sigma_ref"],
                                            groups=min(k, len(fa["seeds"]) - 2))
    return float(diff), float(std), True


def _coupling_row(runs: list[dict]) -> dict:
    """One coupling at one setting: mean and spread across training seeds of each run's values, and the runs."""
    def mean(x):
        return float(np.mean(x)) if x else None

    def std(x):
        return float(np.std(x, ddof=1)) if len(x) > 1 else None

    red, fd = [r["reduction_pct"] for r in runs], [r["fd"] for r in runs]
    within = [r["std"] for r in runs if r["std"] is not None]
    s = [r["S"] for r in runs if r["S"] is not None]
    paired = all(r["paired"] for r in runs)
    row = dict(paired=paired, runs=len(runs), training_seeds=",".join(str(r["seed"]) for r in runs),
               reduction_pct=mean(red), reduction_pct_std=std(red), fd_diff=mean(fd),
               fd_diff_std_across_seeds=std(fd), fd_diff_std_within_run=mean(within) if paired else None,
               straightness_normalized=mean(s), straightness_normalized_std=std(s), straightness_runs=len(s))
    row.update({f"fd_diff_seed{r['seed']}": r["fd"] for r in runs})
    row["per_seed"] = "; ".join(
        f"seed {r['seed']}: {r['arm']}" + ("" if r["baseline"] is None else
                                          f" vs {r['baseline']} {r['fd']:+.4f}"
                                          + ("" if r["std"] is None else f" ± {r['std']:.4f}"))
        + f", reduction {r['reduction_pct']:.2f}%" + ("" if r["S"] is None else f", S {r['S']:.4f}")
        for r in runs)
    return row


def coupling_table(metrics: list[dict], stats: list[dict], features: dict[str, dict],
                   trajs: pd.DataFrame | None = None, *, metric_key: str = FEATURES_METRIC,
                   groups: int = 50) -> pd.DataFrame:
    # groups: jackknife groups where the metrics do not say how many evaluate used (evaluate.fd_jackknife)
    """Per conditioning, sampler setting and noise coupling: pair-distance reduction vs score difference to EDM.

    Each trained unguided model (``stats``: its training summary, which gives the coupling, training seed and
    ``dist_reduction``) is compared with the ``pairing: none`` model of the same conditioning, setting and training
    seed only: paired on ``features`` (as :func:`comparisons_table`; skipped where the seeds or feature space
    differ) when both have them and ``metric_key`` is the featnet metric, else the difference of the two
    ``metric_key`` scores (``paired`` False, no within-run std). The runs of a coupling (one per training seed) are
    averaged, with their spread across seeds (ddof 1) and the mean paired jackknife std; ``trajs`` (a
    :func:`trajectory_table`) adds the normalized straightness at the same setting. The independent (EDM) row is
    kept as the reference, reduction and difference 0. Negative ``fd_diff``: the coupling scores better than EDM.
    """
    train = {s["model"]: s for s in stats}
    straight = {} if trajs is None or trajs.empty else {
        (t.arm, t.conditioning, float(t.rho), int(t.steps)): float(t.straightness_normalized)
        for t in trajs.itertuples()}
    at = defaultdict(list)  # (conditioning, rho, steps) -> the models scored there
    for m in metrics:
        if m.get("guidance") or m["model"] not in train or metric_key not in m["scores"]:
            continue
        arm, cond = ModelName.parse(m["model"])
        s = train[m["model"]]
        f = features.get(f"{m['model']}/rho{m['rho']:g}-steps{m['steps']}") if metric_key == FEATURES_METRIC \
            else None
        at[cond, m["rho"], m["steps"]].append(dict(
            m=m, arm=arm, s=s, f=f, **coupling_of(s), reduction_pct=100 * s["dist_reduction"],
            S=straight.get((arm, cond, float(m["rho"]), int(m["steps"])))))
    rows = []
    for (cond, rho, steps), entries in at.items():
        edm = sorted((e for e in entries if e["s"]["pairing"] == "none"), key=lambda e: (e["seed"], e["arm"]))
        by_coupling = defaultdict(list)
        for a in sorted(entries, key=lambda e: (e["seed"], e["arm"])):
            if a["s"]["pairing"] == "none":
                continue
            same_seed = [b for b in edm if b["seed"] == a["seed"]]
            same_kimg = [b for b in same_seed if b["s"].get("kimg") == a["s"].get("kimg")]
            b = (same_kimg or same_seed or [None])[0]  # one baseline per model: its seed's EDM arm
            d = None if b is None else _seed_difference(a, b, metric_key, groups)
            if d is not None:
                by_coupling[a["coupling"], a["s"]["pairing"], a["N"]].append(dict(
                    seed=a["seed"], arm=a["arm"], baseline=b["arm"], reduction_pct=a["reduction_pct"], fd=d[0],
                    std=d[1], paired=d[2], S=a["S"]))
        if not by_coupling:
            continue
        by_coupling["none", "none", None] = [dict(seed=e["seed"], arm=e["arm"], baseline=None, reduction_pct=0.0,
                                                   fd=0.0, std=0.0 if e["f"] is not None else None,
                                                   paired=e["f"] is not None, S=e["S"]) for e in edm]
        m = entries[0]["m"]
        for (label, pairing, n), runs in by_coupling.items():
            rows.append(dict(conditioning=cond, rho=rho, steps=steps, NFE=m["nfe"], coupling=label, pairing=pairing,
                             N=n, metric=m["scores"][metric_key]["metric"], **_coupling_row(runs)))
    if not rows:
        return pd.DataFrame(columns=COUPLING_COLUMNS)
    df = pd.DataFrame(rows)
    df["N"] = pd.Series([None if n is None or (isinstance(n, float) and math.isnan(n)) else int(n) for n in df.N], dtype=object)  # CSV: 8, not 8.0
    seed_cols = sorted((c for c in df.columns if c.startswith("fd_diff_seed")), key=lambda c: int(c[12:]))
    df = df[COUPLING_COLUMNS + seed_cols + ["per_seed"]]
    return df.sort_values(["conditioning", "NFE", "rho", "reduction_pct", "coupling"],
                          ascending=[False, False, True, True, True], ignore_index=True)
