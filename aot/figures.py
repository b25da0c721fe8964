"""Figures: score vs NFE and vs rho per arm, training loss curves, trajectory metrics per setting."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from aot.checkpoint import atomic_write_bytes  # noqa: E402


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
        ax.legend()
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
        ax.legend(fontsize=7)
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
        ax.legend(fontsize=7)
    _save(fig, path)


def write_figures(metric_files, stats_files, trajectory_files, out_dir) -> list[Path]:
    from aot.artifacts import read_json, reading
    from aot.tables import METRICS_KEYS, score_table
    from aot.trajectory import load_metrics_json, plot_metrics

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
    return written
