"""Figures: the coupling-strength figures from the tables stage's coupling.csv, also when it has no rows."""

import json

import pandas as pd
import pytest

from aot.eval.paired import COUPLING_COLUMNS, coupling_table
from aot.report.figures import plot_coupling

PNG = b"\x89PNG\r\n\x1a\n"


def is_png(path) -> bool:
    return path.is_file() and path.stat().st_size > len(PNG) and path.read_bytes()[:8] == PNG


@pytest.fixture
def coupling_csv(tmp_path):
    """A coupling table with two seeds at 35 NFE (straightness there) and one seed at 15 NFE, uncond and cond."""
    from test_tables import metric, train_stats

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
    from test_tables import metric

    from aot.__main__ import main

    m = tmp_path / "m.json"
    m.write_text(json.dumps(metric("edm-uncond", "none", 7, 18, 5.0)))
    assert main(["figures", "--metrics", str(m), "--out-dir", str(tmp_path / "plain")]) == 0
    assert sorted(p.name for p in (tmp_path / "plain").iterdir()) == ["loss.png", "score_vs_nfe.png",
                                                                      "score_vs_rho.png"]
    assert main(["figures", "--metrics", str(m), "--coupling", str(coupling_csv), "--out-dir",
                 str(tmp_path / "with")]) == 0
    assert is_png(tmp_path / "with/coupling.png") and is_png(tmp_path / "with/coupling-straightness.png")
