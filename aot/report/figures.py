"""Figures: score vs NFE and vs rho per arm, training loss curves, trajectory metrics per setting, coupling strength."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from aot.core.checkpoint import atomic_write_bytes  # noqa: E402


def _legend(ax, **kw) -> None:
    """A legend where something is labelled (a panel without runs has none, and no warning)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kw)


def _save(fig, path) -> None:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, lambda f: f.write(buf.getvalue()))


def _yerr(rows):
    """Error bars: each score's standard deviation (``ours_std``), none where it was not computed."""
    if "ours_std" not in rows or rows.ours_std.isna().all():
        return None
    return rows.ours_std.fillna(0).to_numpy(dtype=float)


def plot_score_vs_nfe(scores, path) -> None:
    """Best score over rho at each NFE, one line per arm, one panel per conditioning (cf. the paper's Table 5);
    error bars are one standard deviation of each score (``ours_std``)."""
    conds = sorted(scores.conditioning.unique(), reverse=True)
    fig, axes = plt.subplots(1, len(conds), figsize=(5 * len(conds), 3.6), squeeze=False)
    for ax, cond in zip(axes[0], conds, strict=True):
        sub = scores[scores.conditioning == cond]
        for arm, g in sub.groupby("arm"):
            best = g.loc[g.groupby("NFE").ours.idxmin()].sort_values("NFE")
            ax.errorbar(best.NFE, best.ours, yerr=_yerr(best), fmt="o-", capsize=3, label=arm)
        ax.set(title=cond, xlabel="NFE (Heun, 2 steps - 1)", ylabel=scores.metric.iloc[0])
        ax.grid(alpha=0.3)
        _legend(ax)
    _save(fig, path)


def plot_score_vs_rho(scores, path) -> None:
    """Score against the schedule exponent rho, one line per (arm, steps) (cf. the paper's Table 4), +- 1 std."""
    conds = sorted(scores.conditioning.unique(), reverse=True)
    fig, axes = plt.subplots(1, len(conds), figsize=(5 * len(conds), 3.6), squeeze=False)
    for ax, cond in zip(axes[0], conds, strict=True):
        sub = scores[scores.conditioning == cond]
        for (arm, steps), g in sub.groupby(["arm", "steps"]):
            g = g.sort_values("rho")
            ax.errorbar(g.rho, g.ours, yerr=_yerr(g), fmt="o-", capsize=3, label=f"{arm}, {steps} steps")
        ax.set(title=cond, xlabel="rho", ylabel=scores.metric.iloc[0], xscale="log")
        ax.grid(alpha=0.3)
        _legend(ax, fontsize=7)
    _save(fig, path)


def plot_loss(stats: list[dict], path) -> None:
    """Training loss and paired image-noise distance per tick, per model."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    for s in stats:
        t = s.get("ticks", [])
        if not t:
            continue
        kimg = [x["kimg"] for x in t]
        a.plot(kimg, [x["loss"] for x in t], label=s["model"])
        b.plot(kimg, [x["dist_paired"] for x in t], label=s["model"])
    a.set(xlabel="kimg", ylabel="EDM loss (per image)", yscale="log", title="training loss")
    b.set(xlabel="kimg", ylabel="mean ||y - n||", title="image-noise pair distance")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        _legend(ax, fontsize=7)
    _save(fig, path)


# ----------------------------------------------------------------------------
# Coupling strength (the tables stage's coupling.csv): score difference and straightness vs pair-distance reduction.


def _message(path, text: str) -> None:
    """A figure with one centred sentence, so a figure the workflow expects exists even with nothing to draw."""
    fig, ax = plt.subplots(figsize=(7, 2.5))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, transform=ax.transAxes)
    _save(fig, path)


def _setting_panels(df, title: str):
    """Rows = conditioning (uncond first), columns = sampler setting (NFE descending): (fig, [(ax, rows)])."""
    conds = sorted(df.conditioning.unique(), reverse=True)
    settings = (df[["NFE", "rho", "steps"]].drop_duplicates()
                .sort_values(["NFE", "rho"], ascending=[False, True]).itertuples(index=False))
    settings = list(settings)
    fig, axes = plt.subplots(len(conds), len(settings), figsize=(5.2 * len(settings), 4.0 * len(conds) + 0.6),
                             squeeze=False, layout="constrained")
    fig.suptitle(title)
    panels = []
    for i, cond in enumerate(conds):
        for j, st in enumerate(settings):
            ax = axes[i][j]
            ax.set_title(f"{cond}, {st.NFE:g} NFE (rho {st.rho:g}, {st.steps:g} steps)", fontsize=10)
            ax.grid(alpha=0.3)
            rows = df[(df.conditioning == cond) & (df.NFE == st.NFE) & (df.rho == st.rho) & (df.steps == st.steps)]
            if rows.empty:
                ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes)
            panels.append((ax, rows))
    return fig, panels


PAIRING_COLORS = {"none": "black", "aot": "C0", "aot-sq": "C1", "immiscible": "C2", "knn": "C3"}  # every panel


def _coupling_points(ax, rows, y: str, yerr) -> None:
    """One point per coupling, coloured by pairing, annotated with its label and number of training seeds;
    open markers: one seed. x error bar: the reduction's std across seeds."""
    from matplotlib.lines import Line2D

    xs, ys = rows.reduction_pct.to_numpy(dtype=float), rows[y].to_numpy(dtype=float)
    xr, yr = np.ptp(xs) or 1.0, np.ptp(ys) or 1.0
    for k, r in enumerate(rows.itertuples(index=False)):
        c = PAIRING_COLORS.get(r.pairing, "C4")
        near = int(np.sum((np.abs(xs[:k] - xs[k]) < 0.04 * xr) & (np.abs(ys[:k] - ys[k]) < 0.06 * yr)))
        xerr = None if pd.isna(r.reduction_pct_std) else r.reduction_pct_std
        ax.errorbar(r.reduction_pct, getattr(r, y), xerr=xerr, yerr=None if pd.isna(yerr[k]) else yerr[k], fmt="o",
                    color=c, capsize=3, mfc=c if r.runs > 1 else "white")
        ax.annotate(f"{r.coupling} ({r.runs})", (r.reduction_pct, getattr(r, y)), textcoords="offset points",
                    xytext=(4, 4 - 9 * near), fontsize=7)  # a label per line where points coincide
    handles = [Line2D([], [], ls="", marker="o", color=PAIRING_COLORS.get(p, "C4"), label=p)
               for p in dict.fromkeys(rows.pairing)]
    ax.legend(handles=handles, fontsize=7, title="(n): training seeds; open: 1", title_fontsize=7)
    ax.margins(x=0.2, y=0.15)
    ax.set_xlabel("mean image-noise distance reduction vs independent (%)")


def plot_coupling_fd(df, path) -> None:
    """Score difference to EDM of the same training seed against the pair-distance reduction, per setting.

    Error bars: the spread across training seeds (``fd_diff_std_across_seeds``) where a coupling has several seeds,
    else the paired within-run jackknife std; the y label says which occur."""
    rows = df[df.fd_diff.notna()]
    if rows.empty:
        _message(path, "no coupling comparisons: the coupling table has no score differences "
                       "(the tables stage's coupling.md says why)")
        return
    paired = bool(rows.paired.astype(bool).all())
    metric = rows.metric.iloc[0]
    title = (f"{'paired ' if paired else ''}{metric} difference to EDM (same training seed); negative = better"
             + ("" if paired else "\n(unpaired: difference of the two scores, no features)"))
    fig, panels = _setting_panels(rows, title)
    for ax, sub in panels:
        if sub.empty:
            continue
        across = sub.fd_diff_std_across_seeds.notna()
        yerr = sub.fd_diff_std_across_seeds.where(across, sub.fd_diff_std_within_run).to_numpy(dtype=float)
        ax.axhline(0, color="gray", ls="--", lw=0.8)
        _coupling_points(ax, sub, "fd_diff", yerr)
        kinds = [k for k, on in (("std across training seeds", across.any()),
                                 ("within-run jackknife std (1 seed)",
                                  (~across & sub.fd_diff_std_within_run.notna()).any())) if on]
        ax.set_ylabel(f"{metric} - EDM's (same seed)\n" + ("error bars: ± " + " / ".join(kinds) if kinds else
                                                           "no error bars (one seed, unpaired)"), fontsize=8)
    _save(fig, path)


def plot_coupling_straightness(df, path) -> None:
    """Normalized straightness (mean ± std across training seeds) against the pair-distance reduction."""
    rows = df[df.straightness_normalized.notna()] if "straightness_normalized" in df else df.iloc[:0]
    if rows.empty:
        _message(path, "no coupling straightness: no trajectory metrics at any setting of the coupling table"
                 if not df.empty else "no coupling comparisons: the coupling table is empty "
                                      "(the tables stage's coupling.md says why)")
        return
    fig, panels = _setting_panels(rows, "Trajectory straightness vs coupling strength (lower = straighter)")
    for ax, sub in panels:
        if sub.empty:
            continue
        edm = sub[sub.pairing == "none"]
        if not edm.empty:
            ax.axhline(edm.straightness_normalized.iloc[0], color="gray", ls="--", lw=0.8)
        _coupling_points(ax, sub, "straightness_normalized", sub.straightness_normalized_std.to_numpy(dtype=float))
        ax.set_ylabel("normalized straightness S/E|vbar|^2\nerror bars: ± std across training seeds", fontsize=8)
    _save(fig, path)


def plot_coupling(csv_path, fd_path, straightness_path) -> list[Path]:
    """Both coupling figures from the tables stage's ``coupling.csv``; a centred message where nothing to draw."""
    from aot.core.artifacts import reading

    with reading(csv_path, "coupling table", "tables"):
        try:
            df = pd.read_csv(csv_path)
        except pd.errors.EmptyDataError:
            df = pd.DataFrame()
    if df.empty or "fd_diff" not in df:
        df = pd.DataFrame(columns=["fd_diff", "straightness_normalized"])
    plot_coupling_fd(df, fd_path)
    plot_coupling_straightness(df, straightness_path)
    return [Path(fd_path), Path(straightness_path)]


def write_figures(metric_files, stats_files, trajectory_files, out_dir, coupling_csv=None) -> list[Path]:
    """Every figure; ``coupling_csv``: the tables stage's coupling.csv, adds coupling.png and
    coupling-straightness.png."""
    from aot.core.artifacts import read_json, reading
    from aot.eval.trajectory import load_metrics_json, plot_metrics
    from aot.report.tables import METRICS_KEYS, score_table

    out_dir = Path(out_dir)
    scores = score_table([read_json(p, kind="metrics JSON", rule="evaluate", keys=METRICS_KEYS)
                          for p in metric_files])
    scores = scores[scores.metric_key == scores.metric_key.iloc[0]]
    written = [out_dir / "score_vs_nfe.png", out_dir / "score_vs_rho.png", out_dir / "loss.png"]
    plot_score_vs_nfe(scores, written[0])
    plot_score_vs_rho(scores, written[1])
    plot_loss([read_json(p, kind="training summary", rule="train") for p in stats_files], written[2])
    by_setting = defaultdict(dict)
    for p in trajectory_files:
        with reading(p, "trajectory metrics", "trajectory"):
            m, meta = load_metrics_json(p)
            setting = f"rho{meta['rho']:g}-steps{meta['steps']}"
            by_setting[setting][meta["model"]] = m
    for setting, runs in sorted(by_setting.items()):
        path = out_dir / f"trajectory-{setting}.png"
        plot_metrics(path, runs)
        written.append(path)
    if coupling_csv is not None:
        written += plot_coupling(coupling_csv, out_dir / "coupling.png", out_dir / "coupling-straightness.png")
    return written
