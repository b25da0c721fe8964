"""Figures: the coupling-strength figures from the tables stage's coupling.csv, also when it has no rows."""

import json

import pandas as pd
import pytest
from conftest import metric, train_stats

from aot.eval.paired import COUPLING_COLUMNS, coupling_table
from aot.report.figures import plot_coupling

PNG = b"\x89PNG\r\n\x1a\n"


def is_png(path) -> bool:
    return path.is_file() and path.stat().st_size > len(PNG) and path.read_bytes()[:8] == PNG


@pytest.fixture
def coupling_csv(tmp_path):
    """A coupling table with two seeds at 35 NFE (straightness there) and one seed at 15 NFE, uncond and cond."""
    metrics, stats = [], []
    for model, pairing, seed, red, N, fd in (("edm-uncond", "none", 0, 0.0, None, 5.0),
                                             ("edms1-uncond", "none", 1, 0.0, None, 5.2),
                                             ("aot8-uncond", "aot", 0, 0.02, 8, 4.9),
                                             ("aot8s1-uncond", "aot", 1, 0.03, 8, 5.0),
                                             ("imm-uncond", "immiscible", 0, 0.05, 128, 4.7),
                                             ("knn-uncond", "knn", 0, 0.01, None, 5.1),
                                             ("edm-cond", "none", 0, 0.0, None, 3.0),
                                             ("aot512-cond", "aot", 0, 0.1, 512, 2.8)):
        stats.append(train_stats(model, pairing, seed, red, N))
        metrics.append(metric(model, pairing, 7, 18, fd))
        if seed == 0:
            metrics.append(metric(model, pairing, 27, 8, fd + 1))
    t = coupling_table(metrics, stats, {})
    t["straightness_normalized"] = t.reduction_pct.where(t.NFE == 35) / 100 + 0.1
    path = tmp_path / "coupling.csv"
    t.to_csv(path, index=False)
    return path


def test_coupling_figures(tmp_path, coupling_csv):
    written = plot_coupling(coupling_csv, tmp_path / "a.png", tmp_path / "b.png")
    assert written == [tmp_path / "a.png", tmp_path / "b.png"] and all(is_png(p) for p in written)


@pytest.mark.parametrize("text", [",".join(COUPLING_COLUMNS) + "\n", ""])
def test_coupling_figures_of_an_empty_table(tmp_path, text):
    (tmp_path / "coupling.csv").write_text(text)  # header only (the tables stage's empty table), or nothing
    written = plot_coupling(tmp_path / "coupling.csv", tmp_path / "a.png", tmp_path / "b.png")
    assert all(is_png(p) for p in written)


def test_coupling_figure_without_straightness(tmp_path, coupling_csv):
    t = pd.read_csv(coupling_csv).assign(straightness_normalized=float("nan"))
    t.to_csv(coupling_csv, index=False)
    assert all(is_png(p) for p in plot_coupling(coupling_csv, tmp_path / "a.png", tmp_path / "b.png"))


def test_figures_stage_writes_the_coupling_figures_only_when_given_the_table(tmp_path, coupling_csv):

    from aot.__main__ import main

    m = tmp_path / "m.json"
    m.write_text(json.dumps(metric("edm-uncond", "none", 7, 18, 5.0)))
    assert main(["figures", "--metrics", str(m), "--out-dir", str(tmp_path / "plain")]) == 0
    assert sorted(p.name for p in (tmp_path / "plain").iterdir()) == ["loss.png", "score_vs_nfe.png",
                                                                      "score_vs_rho.png"]
    assert main(["figures", "--metrics", str(m), "--coupling", str(coupling_csv), "--out-dir",
                 str(tmp_path / "with")]) == 0
    assert is_png(tmp_path / "with/coupling.png") and is_png(tmp_path / "with/coupling-straightness.png")


@pytest.fixture
def captured(monkeypatch):
    """The figures the plot functions draw, kept open instead of written, to read back what they plot."""
    import aot.report.figures as figures

    figs = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: figs.append(fig))
    return figs


def test_score_vs_nfe_plots_the_best_score_over_rho_at_each_nfe(captured):
    from aot.report.figures import plot_score_vs_nfe
    from aot.report.tables import score_table

    rows = [metric("aot-uncond", "aot", rho, steps, fd) for rho, steps, fd in
            ((7, 18, 4.0), (90, 18, 3.5), (7, 8, 9.0), (81, 8, 8.0), (243, 8, 8.5))]
    rows += [metric("edm-uncond", "none", 7, 18, 5.0), metric("edm-uncond", "none", 7, 8, 10.0)]
    plot_score_vs_nfe(score_table(rows), "unused.png")
    (ax,) = captured[0].axes
    lines = {c.get_label(): (list(c.lines[0].get_xdata()), list(c.lines[0].get_ydata())) for c in ax.containers}
    # min over rho per NFE, written out by hand: AOT 35 NFE -> 3.5 (rho 90), 15 NFE -> 8.0 (rho 81)
    assert lines == {"aot": ([15, 35], [8.0, 3.5]), "edm": ([15, 35], [10.0, 5.0])}


def test_loss_figure_plots_every_tick_of_every_model(captured):
    from aot.report.figures import plot_loss

    ticks = [dict(kimg=0.5 * (i + 1), loss=1.0 / (i + 1), dist_paired=10.0 - i) for i in range(3)]
    plot_loss([dict(model="aot-uncond", ticks=ticks), dict(model="edm-uncond", ticks=ticks[:2]),
               dict(model="empty-uncond", ticks=[])], "unused.png")
    loss, dist = captured[0].axes
    got = {line.get_label(): list(line.get_ydata()) for line in loss.get_lines()}
    assert got == {"aot-uncond": [1.0, 0.5, 1 / 3], "edm-uncond": [1.0, 0.5]}
    assert [list(line.get_xdata()) for line in dist.get_lines()] == [[0.5, 1.0, 1.5], [0.5, 1.0]]
    assert [list(line.get_ydata()) for line in dist.get_lines()] == [[10.0, 9.0, 8.0], [10.0, 9.0]]
