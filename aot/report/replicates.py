"""Tables across training replicates (``aot replicates``): each score's mean and spread over runs of the same
experiment with different training seeds."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from aot.report.writers import is_missing, write_table

_SCORE_KEYS = ["arm", "pairing", "conditioning", "rho", "steps", "NFE", "guidance", "disc_pairing", "metric"]


_COMPARISON_KEYS = ["conditioning", "rho", "steps", "NFE", "model", "baseline"]


def _across(frames: list[pd.DataFrame], names: list[str], keys: list[str], value: str, within: str) -> pd.DataFrame:
    """Per key: each run's ``value``, their mean and standard deviation across runs, and the mean within-run std."""
    tidy = pd.concat([f.assign(run=n) for f, n in zip(frames, names, strict=True)], ignore_index=True)
    rows = []
    for key, g in tidy.groupby(keys, dropna=False, sort=False):
        g = g.set_index("run")
        vals = [g[value].get(n) for n in names]
        got = [v for v in vals if not is_missing(v)]
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
    write_table(out_dir, "scores", _across(scores, names, _SCORE_KEYS, "ours", "ours_std"),
           "Scores across training runs", note)
    comps = [pd.read_csv(d / "comparisons.csv") for d in dirs if (d / "comparisons.csv").is_file()]
    if len(comps) == len(dirs):
        write_table(out_dir, "comparisons",
               _across(comps, names, _COMPARISON_KEYS, "difference", "difference_std"),
               "Paired comparisons across training runs", note)
