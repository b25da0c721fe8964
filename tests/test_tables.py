"""The paper's tables: our numbers land in the right cells, missing rows stay, the paper's numbers are intact."""

import json

import pandas as pd
import pytest
import yaml
from conftest import metric, train_stats

from aot.report.paper import TABLE4, TABLE4_RHOS, paper_fid
from aot.report.tables import (
    PRIOR_WORK,
    pairing_table,
    score_table,
    table3,
    table4,
    table5,
    table12,
    trajectory_table,
)
from aot.report.writers import to_latex, to_markdown


@pytest.fixture
def scores():
    return score_table([
        metric("edm-uncond", "none", 7, 18, 5.0),
        metric("aot-uncond", "aot", 7, 18, 4.0),
        metric("aot-uncond", "aot", 90, 14, 3.0),
        metric("aot-uncond", "aot", 27, 8, 9.0),
        metric("aot-uncond", "aot", 81, 8, 8.0),
        metric("aot-cond", "aot", 72, 15, 2.5),
        metric("knn-uncond", "knn", 7, 18, 6.0),
    ])


def test_paper_lookup():
    assert paper_fid("none", "uncond", 7, 18) == (1.97, "Table 1")
    assert paper_fid("aot", "cond", 72, 15) == (1.73, "Table 2")
    assert paper_fid("aot", "uncond", 81, 14) == (TABLE4[("aot", 14)][TABLE4_RHOS.index(81)], "Table 4")
    assert paper_fid("knn", "uncond", 7, 18) == (None, "")
    assert paper_fid("none", "uncond", 90, 14) == (None, "")


def test_table1_rows_kept_and_filled(scores):
    t = table12(scores, "uncond")
    assert list(t.model) == ["EDM", "PFGM++", "STF", "EDM-AOT", "EDM-AOT"]
    assert list(t.paper_fid) == [1.97, 1.91, 1.90, 1.95, 1.88]
    assert list(t.ours[[0, 3, 4]]) == [5.0, 4.0, 3.0] and t.ours[[1, 2]].isna().all()
    assert list(t.ours_std[[0, 3, 4]]) == [0.05, 0.04, 0.03] and t.ours_std[[1, 2]].isna().all()
    # Prior work: the paper's number only; no metric, score or seeds of ours, and the note says why.
    assert list(t.note[[1, 2]]) == [PRIOR_WORK] * 2 == ["prior work: not retrained here"] * 2
    assert t.metric[[1, 2]].isna().all() and t.samples[[1, 2]].isna().all() and (t.seeds[[1, 2]] == "—").all()
    assert (t.metric[[0, 3, 4]] == "FD (featnet-v1)").all() and (t.note[[0, 3, 4]] == "").all()
    t2 = table12(scores, "cond")
    assert t2.ours.isna().sum() == 3 and t2.ours.iloc[3] == 2.5
    # Without the config the reason is what the metrics show: no cond metrics of the EDM arm (pairing none).
    assert t2.note[0] == "not run: no metrics of an arm with `pairing: none` (cond; `arms`)" and pd.isna(t2.metric[0])
    assert t2.note[2] == "not run: no metrics at rho 7, 18 steps (`sample.grid`)"


def test_table4_every_cell_with_setting(scores):
    t = table4(scores)
    assert len(t) == 50 and t.NFE.isin([35, 27, 15]).all()
    cell = t[(t.model == "EDM-AOT") & (t.steps == 8) & (t.rho == 27)].iloc[0]
    assert cell.ours == 9.0 and cell.paper_fid == 3.06 and cell.seeds == "0-999" and cell.samples == 1000
    # Only (aot, 8 steps) at rho 27 and 81 are Table 4 cells: rho 7 and 90 are not among its rhos.
    assert t.ours.notna().sum() == 2


def test_table5_best_rho_per_nfe(scores):
    t = table5(scores)
    assert len(t) == 32
    row = t[(t.model == "EDM-AOT uncond") & (t.NFE == 15)].iloc[0]
    assert row.ours == 8.0 and row.rho == 81 and row.paper_fid == 3.06  # best of rho 27 (9.0) and 81 (8.0)
    assert row.ours_std == 0.08  # the std of the chosen row
    assert t[t.model == "EDM uncond"].ours.isna().all()  # rho 7 is not one of Table 5's rhos


def test_other_pairings_only_in_scores(scores):
    assert "knn" in set(scores.pairing)
    assert not (table12(scores, "uncond").ours == 6.0).any()


def test_table3_without_guidance_runs_keeps_the_paper_rows_missing(scores):
    t = table3(scores)
    assert len(t) == 3 and t.ours_uncond.isna().all() and list(t.paper_fid_uncond) == [1.77, 1.70, 1.68]
    assert (t.note == "not run: no guided metrics given (guidance disabled by `guidance.enabled: false`, or no "
                      "`guidance.runs`)").all()
    assert t.metric.isna().all() and (t.setting == "—").all()


def guided(model, pairing, disc_pairing, rho, steps, value, weight=2.0):
    m = metric(model, pairing, rho, steps, value)
    m["guidance"] = dict(weight=weight, weight_2nd=0.0, discriminator_config=dict(pairing=disc_pairing))
    return m


def test_table3_pairs_each_guided_score_with_its_unguided_model():
    s = score_table([
        metric("edm-uncond", "none", 7, 18, 5.0),
        metric("aot-uncond", "aot", 72, 15, 4.0),
        metric("aot-cond", "aot", 72, 15, 3.0),
        guided("edm_dg-uncond", "none", "none", 7, 18, 4.5),
        guided("aot_dg-uncond", "aot", "none", 72, 15, 3.8),
        guided("aot_dgaot-uncond", "aot", "aot", 72, 15, 3.6),
        guided("aot_dgaot-cond", "aot", "aot", 72, 15, 2.9, weight=1.0),
    ])
    t = table3(s)
    assert list(t.ours_uncond) == [4.5, 3.8, 3.6] and list(t.ours_unguided_uncond) == [5.0, 4.0, 4.0]
    assert list(t.ours_uncond_std) == pytest.approx([0.045, 0.038, 0.036]) and pd.isna(t.ours_cond_std.iloc[1])
    assert t.ours_cond.iloc[2] == 2.9 and t.ours_unguided_cond.iloc[2] == 3.0 and pd.isna(t.ours_cond.iloc[1])
    assert "w 1, seeds 0-999" in t.setting.iloc[2] and t.note.iloc[2] == ""
    # Guided rows carry Table 3's number, and never fill the unguided tables.
    row = s[(s.arm == "aot_dgaot") & (s.conditioning == "uncond")].iloc[0]
    assert row.paper_cifar10_fid == 1.68 and row.paper_source == "Table 3"
    assert list(table12(s[s.guidance == "none"], "uncond").ours[[0]]) == [5.0]


def test_formats():
    df = pd.DataFrame([dict(model="EDM_x", ours=None, paper_fid=1.97, NFE=35)])
    md = to_markdown(df, "T", "note")
    assert "| EDM_x | — | 1.97 | 35 |" in md
    tex = to_latex(df, "cap")
    assert r"EDM\_x & -- & 1.97 & 35 \\" in tex and tex.count(r"\begin{tabular}") == 1


def test_pairing_table_reduction():
    t = pairing_table([dict(model="aot-cond", pairing="aot", pool=512, kimg=1.0, mean_dist_paired=9.0,
                            mean_dist_independent=10.0, dist_reduction=0.1, solve_seconds_mean=0.004,
                            wait_fraction=0.001)])
    assert t.reduction_pct.iloc[0] == pytest.approx(10.0) and t.solve_ms.iloc[0] == pytest.approx(4.0)
    assert pairing_table([]).empty


def test_comparisons_pair_each_model_with_its_baselines_at_the_same_seeds():
    import numpy as np

    from aot.eval.metrics import frechet_distance, gaussian_stats
    from aot.eval.paired import comparisons_table

    rng = np.random.default_rng(0)
    n, D = 200, 6
    z = rng.standard_normal((n, D))  # one latent per seed, shared by every model
    mu_ref, sigma_ref = np.zeros(D), np.eye(D)

    def entry(model, pairing, shift, seeds=None, disc=None, ckpt=None):
        seeds = np.arange(n) if seeds is None else seeds
        m = metric(model, pairing, 7, 18, 0.0)
        m["checkpoint"] = ckpt or f"models/{model}/network.pt"
        if disc is not None:
            m["guidance"] = dict(weight=2.0, discriminator_config=dict(pairing=disc))
        feats = z + shift + 0.1 * rng.standard_normal((n, D))
        m["scores"]["featnet"]["value"] = frechet_distance(*gaussian_stats(feats), mu_ref, sigma_ref)
        return m, dict(features=feats, seeds=seeds, mu_ref=mu_ref, sigma_ref=sigma_ref)

    made = {
        "edm-uncond": entry("edm-uncond", "none", 0.0),
        "aot-uncond": entry("aot-uncond", "aot", 0.3),
        "aot_dg-uncond": entry("aot_dg-uncond", "aot", 0.2, disc="none", ckpt="models/aot-uncond/network.pt"),
        "aot_dgaot-uncond": entry("aot_dgaot-uncond", "aot", 0.1, disc="aot", ckpt="models/aot-uncond/network.pt"),
        "knn-uncond": entry("knn-uncond", "knn", 0.3, seeds=np.arange(n) + 5000),  # other seeds: no comparison
    }
    metrics = [m for m, _ in made.values()]
    features = {f"{k}/rho7-steps18": f for k, (_, f) in made.items()}
    t = comparisons_table(metrics, features, groups=20)
    assert sorted(zip(t.model, t.baseline, strict=True)) == [
        ("aot", "edm"), ("aot_dg", "aot"), ("aot_dgaot", "aot"), ("aot_dgaot", "aot_dg")]
    row = t[(t.model == "aot_dgaot") & (t.baseline == "aot_dg")].iloc[0]
    want = made["aot_dgaot-uncond"][0]["scores"]["featnet"]["value"] - made["aot_dg-uncond"][0]["scores"]["featnet"][
        "value"]
    assert row.difference == pytest.approx(want, rel=1e-9) and row.difference < 0
    assert row.model_score - row.baseline_score == pytest.approx(row.difference, rel=1e-9)
    assert (t.difference_std > 0).all() and (t.samples == n).all() and (t.seeds == f"0-{n - 1}").all()
    assert comparisons_table(metrics, {}).empty  # no features (inception-only configs): an empty table
    for m in metrics:  # metrics written before they recorded the checkpoint: guided rows have no baseline
        m.pop("checkpoint")
    assert sorted(zip(*comparisons_table(metrics, features, groups=20)[["model", "baseline"]].values.T,
                      strict=True)) == [("aot", "edm")]


# ----------------------------------------------------------------------------
# Why a cell is missing: from the resolved experiment config (python -m aot tables --config).


def config(**over):
    """A resolved config as the workflow writes it: the keys the tables read, with the schema's defaults."""
    cfg = dict(
        experiment="t",
        arms={"edm": {"pairing": "none"}, "aot": {"pairing": "aot"}},
        conditioning=["uncond", "cond"],
        sample=dict(grid=[dict(rho=7, steps=18), dict(rho=90, steps=14), dict(rho=72, steps=15),
                          dict(rho=27, steps=8), dict(rho=81, steps=8)]),
        evaluate=dict(metrics=["featnet"]),
        trajectory=dict(settings=[]),
        guidance=dict(enabled=True, runs={
            "edm_dg": dict(arm="edm", rho=7, steps=18, pairing="none"),
            "aot_dg": dict(arm="aot", rho=72, steps=15, pairing="none"),
        }),
    )
    cfg.update(over)
    return cfg


DISABLED = "not run: guidance disabled (`guidance.enabled: false`)"


def test_table3_guidance_disabled_says_so(scores):
    cfg = config(guidance=dict(enabled=False, runs=config()["guidance"]["runs"]))
    t = table3(scores, cfg)
    assert list(t.note) == [DISABLED] * 3 and "guidance.runs" not in " ".join(t.note)
    assert t.ours_uncond.isna().all() and t.ours_cond.isna().all() and t.metric.isna().all()


def test_table3_row_without_a_run_names_guidance_runs():
    s = score_table([
        metric("edm-uncond", "none", 7, 18, 5.0),
        metric("aot-uncond", "aot", 72, 15, 4.0),
        guided("edm_dg-uncond", "none", "none", 7, 18, 4.5),
        guided("aot_dg-uncond", "aot", "none", 72, 15, 3.8),
    ])
    cfg = config(conditioning=["uncond"])
    t = table3(s, cfg)
    assert list(t.ours_uncond[:2]) == [4.5, 3.8] and pd.isna(t.ours_uncond.iloc[2])
    # The AOT-discriminator row: no run in guidance.runs pairs an AOT score model with an AOT discriminator.
    assert t.note.iloc[2] == ("not run: `guidance.runs` has no run with a score model of `pairing: aot` and "
                              "discriminator `pairing: aot`")
    # Rows that ran uncond only: cond is missing because cond is not a configured conditioning.
    assert list(t.note[:2]) == ["cond: not run: conditioning 'cond' not in `conditioning`"] * 2
    assert (t.metric[:2] == "FD (featnet-v1)").all() and pd.isna(t.metric.iloc[2])
    # Without the config: the metrics show guided runs, but none with that pairing.
    assert "(`guidance.runs`)" in table3(s).note.iloc[2] and "pairing: aot" in table3(s).note.iloc[2]


def test_table3_guided_setting_outside_the_grid_says_why_the_unguided_cell_is_missing():
    s = score_table([metric("aot-uncond", "aot", 7, 18, 4.0), guided("aot_dg-uncond", "aot", "none", 72, 15, 3.8)])
    cfg = config(conditioning=["uncond"], sample=dict(grid=[dict(rho=7, steps=18)]))
    t = table3(s, cfg)
    assert t.ours_uncond.iloc[1] == 3.8 and pd.isna(t.ours_unguided_uncond.iloc[1])
    assert t.note.iloc[1] == ("uncond: unguided not run: rho 72, 15 steps not in `sample.grid`; "
                              "cond: not run: conditioning 'cond' not in `conditioning`")


def test_tables_1_4_5_name_the_config_key_that_left_a_cell_out(scores):
    cfg = config(sample=dict(grid=[dict(rho=7, steps=18), dict(rho=72, steps=15), dict(rho=27, steps=8)]))
    scores = scores[scores.rho != 90]  # as the grid says: (90, 14) was not sampled
    t1 = table12(scores, "uncond", cfg)
    assert t1.note.iloc[4] == "not run: rho 90, 14 steps not in `sample.grid`" and pd.isna(t1.ours.iloc[4])
    assert list(t1.note[[1, 2]]) == [PRIOR_WORK] * 2 and t1.metric[[1, 2]].isna().all()
    t2 = table12(scores, "cond", cfg)
    assert t2.note.iloc[0] == "not run: rho 7, 18 steps is configured, but no metrics file for it was given"
    t2 = table12(scores, "cond", config(conditioning=["uncond"]))
    assert t2.note.iloc[0] == "not run: conditioning 'cond' not in `conditioning`"
    t1 = table12(scores[scores.pairing == "none"], "uncond", config(arms={"edm": {"pairing": "none"}}))
    assert list(t1.note[[3, 4]]) == ["not run: no arm with `pairing: aot` in `arms`"] * 2
    t4 = table4(scores, cfg)
    cell = t4[(t4.model == "EDM") & (t4.steps == 18) & (t4.rho == 3)].iloc[0]
    assert cell.note == "not run: rho 3, 18 steps not in `sample.grid`" and pd.isna(cell.metric)
    assert (t4[t4.ours.notna()].note == "").all() and (t4[t4.ours.notna()].metric == "FD (featnet-v1)").all()
    t5 = table5(scores, cfg)
    row = t5[(t5.model == "EDM-AOT uncond") & (t5.NFE == 7)].iloc[0]
    assert row.note == "not run: no rho of 9/27/81/243 at 4 steps in `sample.grid`"
    assert t5[(t5.model == "EDM-AOT uncond") & (t5.NFE == 15)].iloc[0].note == ""


def write_metrics(tmp_path, metrics):
    paths = []
    for i, m in enumerate(metrics):
        paths.append(tmp_path / f"m{i}.json")
        paths[-1].write_text(json.dumps(m))
    return paths


def test_write_tables_with_guidance_disabled(tmp_path):
    from aot.__main__ import main

    files = write_metrics(tmp_path, [metric("edm-uncond", "none", 7, 18, 5.0),
                                     metric("aot-uncond", "aot", 90, 14, 3.0)])
    cfg = config(conditioning=["uncond"], guidance=dict(enabled=False, runs={}))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "tables"
    assert main(["tables", "--metrics", *map(str, files), "--config", str(tmp_path / "config.yaml"),
                 "--out-dir", str(out)]) == 0
    t3 = pd.read_csv(out / "table3.csv")
    assert (t3.note == DISABLED).all() and t3.metric.isna().all()
    assert "| " + DISABLED + " |" in (out / "table3.md").read_text()
    md = (out / "discriminators.md").read_text()
    assert md == ("# Discriminator Guidance: discriminator training\n\nNo discriminator was trained: Discriminator "
                  "Guidance is disabled (`guidance.enabled: false`).\n")
    discs = pd.read_csv(out / "discriminators.csv")
    assert discs.empty and list(discs.columns) == ["model", "conditioning", "disc_pairing", "final_loss",
                                                   "final_accuracy"]
    # Table 1: prior work's rows carry no metric of ours, in every format.
    t1 = pd.read_csv(out / "table1.csv")
    assert list(t1.note.fillna("")) == [
        "", PRIOR_WORK, PRIOR_WORK, "not run: rho 7, 18 steps is configured, but no metrics file for it was given", ""]
    assert t1.metric[[1, 2]].isna().all() and (t1.metric[[0, 4]] == "FD (featnet-v1)").all()
    for line in (out / "table1.md").read_text().splitlines():
        if line.startswith(("| PFGM++", "| STF")):
            assert "featnet" not in line and "FD" not in line and PRIOR_WORK in line, line
    assert "no trajectory" in (out / "trajectory.md").read_text().lower()
    assert "`trajectory.settings` is empty" in (out / "trajectory.md").read_text()
    # Table 2: cond is not configured.
    assert (pd.read_csv(out / "table2.csv").note.iloc[[0, 2, 3]]
            == "not run: conditioning 'cond' not in `conditioning`").all()


def test_write_tables_without_config_and_with_runs_but_no_discriminators(tmp_path):
    from aot.report.tables import write_tables

    files = write_metrics(tmp_path, [metric("edm-uncond", "none", 7, 18, 5.0)])
    write_tables(files, [], tmp_path / "a")
    md = (tmp_path / "a/discriminators.md").read_text()
    assert "guidance.enabled: false" in md and "guidance.runs" in md and "|" not in md
    assert "pairing: aot" in pd.read_csv(tmp_path / "a/table1.csv").note.iloc[3]
    cfg = config(guidance=dict(enabled=True, runs={}))
    write_tables(files, [], tmp_path / "b", config=cfg)
    assert "`guidance.runs` configures no run." in (tmp_path / "b/discriminators.md").read_text()
    assert (pd.read_csv(tmp_path / "b/table3.csv").note.str.contains("`guidance.runs` has no run")).all()


@pytest.mark.parametrize("dataset, title", [
    (dict(source="digits"), "Table 1: unconditional on digits"),
    (dict(source="cifar10", archive=None), "Table 1: unconditional on CIFAR-10"),
    (dict(source="cifar10", subset=5000), "Table 1: unconditional on CIFAR-10 (5000 training images)"),
    (dict(source="images", path="datasets/ffhq-64x64.zip"), "Table 1: unconditional on ffhq-64x64"),
    (dict(source="synthetic"), "Table 1: unconditional on synthetic data"),
    (None, "Table 1: unconditional"),
])
def test_table_titles_name_the_runs_dataset(dataset, title):
    from aot.report.captions import title as title_of

    assert title_of("table1", None if dataset is None else {"dataset": dataset}) == title
    assert title_of("table5", {"dataset": dict(source="digits")}) == "Table 5: NFE sweep on digits"
    assert title_of("pairing", {"dataset": dict(source="digits")}) == "Image-noise pair distance during training"


def test_write_tables_titles_a_digits_run_digits_and_keeps_the_papers_column_cifar10(tmp_path):
    from aot.report.tables import write_tables

    files = write_metrics(tmp_path, [metric("edm-uncond", "none", 7, 18, 5.0)])
    write_tables(files, [], tmp_path / "digits", config=config(dataset=dict(source="digits", test_fraction=0.2)))
    write_tables(files, [], tmp_path / "none")
    for n, what in ((1, "unconditional"), (2, "class-conditional"), (3, "with Discriminator Guidance"),
                    (4, "unconditional rho sweep"), (5, "NFE sweep")):
        md = (tmp_path / f"digits/table{n}.md").read_text()
        assert md.startswith(f"# Table {n}: {what} on digits\n") and "CIFAR-10" not in md.splitlines()[0]
        assert "The paper's column is its CIFAR-10 Inception FID-50k" in md and "Ours: `FD (featnet-v1)`." in md
        assert rf"\caption{{Table {n}: {what} on digits}}" in (tmp_path / f"digits/table{n}.tex").read_text()
        assert (tmp_path / f"none/table{n}.md").read_text().startswith(f"# Table {n}: {what}\n")


def test_tables_config_must_be_a_mapping(tmp_path, capsys):
    from aot.__main__ import main

    files = write_metrics(tmp_path, [metric("edm-uncond", "none", 7, 18, 5.0)])
    (tmp_path / "c.yaml").write_text("- not\n- a mapping\n")
    assert main(["tables", "--metrics", str(files[0]), "--config", str(tmp_path / "c.yaml"),
                 "--out-dir", str(tmp_path / "t")]) == 2
    assert "not a YAML mapping" in capsys.readouterr().err and not (tmp_path / "t/table1.csv").exists()


# ----------------------------------------------------------------------------
# Coupling strength: each model against the EDM arm of its own training seed, averaged over seeds.


@pytest.fixture
def coupling_study():
    """Two training seeds, an EDM arm per seed (seed 1's EDM scores far worse, so using the wrong seed's EDM shows),
    AOT at N = 8 and N = 512 per seed, at two settings; one cond pair; straightness at rho 7 / 18 steps only."""
    import numpy as np

    from aot.eval.metrics import frechet_distance, gaussian_stats

    rng = np.random.default_rng(1)
    n, D = 120, 5
    z = rng.standard_normal((n, D))  # one latent per sampling seed, shared by every model
    mu_ref, sigma_ref = np.zeros(D), np.eye(D)
    arms = {  # model: (pairing, training seed, dist_reduction, N, feature shift)
        "edm-uncond": ("none", 0, 0.0, None, 0.1), "edms1-uncond": ("none", 1, 0.0, None, 0.8),
        "aot8-uncond": ("aot", 0, 0.02, 8, 0.3), "aot8s1-uncond": ("aot", 1, 0.03, 8, 0.6),
        "aot512-uncond": ("aot", 0, 0.10, 512, 0.05), "aot512s1-uncond": ("aot", 1, 0.12, 512, 0.5),
        "aot8s2-uncond": ("aot", 2, 0.025, 8, 0.2),  # no EDM of seed 2: never compared
        "edm-cond": ("none", 0, 0.0, None, 0.2), "aot512-cond": ("aot", 0, 0.11, 512, 0.1),
    }
    metrics, features, stats, trajs = [], {}, [], []
    for model, (pairing, seed, red, N, shift) in arms.items():
        stats.append(train_stats(model, pairing, seed, red, N))
        for rho, steps in ((7, 18), (27, 8)):
            feats = z + shift + 0.1 * rng.standard_normal((n, D))
            m = metric(model, pairing, rho, steps, frechet_distance(*gaussian_stats(feats), mu_ref, sigma_ref))
            m["scores"]["featnet"]["fd_jackknife"] = 10
            metrics.append(m)
            features[f"{model}/rho{rho:g}-steps{steps}"] = dict(features=feats, seeds=np.arange(n), mu_ref=mu_ref,
                                                                sigma_ref=sigma_ref)
        trajs.append(dict(meta=dict(model=model, pairing=pairing, rho=7, steps=18, nfe=35, num_images=32,
                                    seed_first=0, seed_last=31),
                          metrics=dict(straightness=1.0, straightness_normalized=0.1 + red + seed / 100,
                                       curvature=[0.1], local_error=[0.01], global_error=0.1)))
    guided = metric("aot8-uncond", "aot", 7, 18, 0.0)  # guided models are not part of this table
    guided["guidance"] = dict(weight=2.0, discriminator_config=dict(pairing="none"))
    metrics.append(guided)
    return dict(metrics=metrics, features=features, stats=stats, trajs=trajectory_table(trajs), n=n)


def test_coupling_compares_each_model_with_the_edm_of_its_training_seed(coupling_study):
    import numpy as np

    from aot.eval.metrics import frechet_distance_difference
    from aot.eval.paired import coupling_table

    c = coupling_study
    t = coupling_table(c["metrics"], c["stats"], c["features"], c["trajs"])
    f = c["features"]
    assert list(zip(t.conditioning, t.NFE, t.coupling, strict=True)) == [
        ("uncond", 35, "none"), ("uncond", 35, "aot N=8"), ("uncond", 35, "aot N=512"),
        ("uncond", 15, "none"), ("uncond", 15, "aot N=8"), ("uncond", 15, "aot N=512"),
        ("cond", 35, "none"), ("cond", 35, "aot N=512"), ("cond", 15, "none"), ("cond", 15, "aot N=512")]
    row = t[(t.NFE == 35) & (t.coupling == "aot N=8") & (t.conditioning == "uncond")].iloc[0]
    per_seed = []
    for model, edm in (("aot8-uncond", "edm-uncond"), ("aot8s1-uncond", "edms1-uncond")):
        a, b = f[f"{model}/rho7-steps18"], f[f"{edm}/rho7-steps18"]
        per_seed.append(frechet_distance_difference(a["features"], b["features"], a["mu_ref"], a["sigma_ref"],
                                                    groups=10))
    diffs, stds = np.array([d for d, _ in per_seed]), np.array([s for _, s in per_seed])
    assert row.runs == 2 and row.training_seeds == "0,1" and row.paired and row.N == 8 and row.pairing == "aot"
    assert [row.fd_diff_seed0, row.fd_diff_seed1] == pytest.approx(list(diffs), rel=1e-12)
    assert row.fd_diff == pytest.approx(diffs.mean(), rel=1e-12)
    assert row.fd_diff_std_across_seeds == pytest.approx(diffs.std(ddof=1), rel=1e-12)
    assert row.fd_diff_std_within_run == pytest.approx(stds.mean(), rel=1e-12)
    assert row.reduction_pct == pytest.approx(2.5) and row.reduction_pct_std == pytest.approx(np.std([2, 3], ddof=1))
    assert row.straightness_normalized == pytest.approx(np.mean([0.12, 0.14]))
    assert row.straightness_normalized_std == pytest.approx(np.std([0.12, 0.14], ddof=1)) and row.straightness_runs == 2
    # Only the same seed's EDM: seed 0 against edm, seed 1 against edms1, never across; seed 2 has no EDM.
    assert "seed 0: aot8 vs edm " in row.per_seed and "seed 1: aot8s1 vs edms1 " in row.per_seed
    assert "aot8 vs edms1" not in t.per_seed.str.cat() and "aot8s2" not in t.per_seed.str.cat()
    assert "fd_diff_seed2" not in t.columns
    # The independent reference: reduction and difference 0, its own straightness.
    edm = t[(t.NFE == 35) & (t.coupling == "none") & (t.conditioning == "uncond")].iloc[0]
    assert edm.runs == 2 and edm.reduction_pct == 0 and edm.fd_diff == 0 and edm.N is None
    assert edm.straightness_normalized == pytest.approx(np.mean([0.10, 0.11]))
    # No trajectories at 15 NFE; one cond seed: no spread across seeds.
    assert t[t.NFE == 15].straightness_normalized.isna().all() and (t[t.NFE == 15].straightness_runs == 0).all()
    cond = t[(t.conditioning == "cond") & (t.coupling == "aot N=512") & (t.NFE == 35)].iloc[0]
    assert cond.runs == 1 and pd.isna(cond.fd_diff_std_across_seeds) and pd.isna(cond.reduction_pct_std)
    assert cond.fd_diff_std_within_run > 0 and cond.per_seed.startswith("seed 0: aot512 vs edm ")


def test_coupling_without_features_falls_back_to_the_score_difference(coupling_study):
    from aot.eval.paired import coupling_table

    c = coupling_study
    t = coupling_table(c["metrics"], c["stats"], {}, c["trajs"])
    value = {(m["model"], m["rho"]): m["scores"]["featnet"]["value"] for m in c["metrics"] if "guidance" not in m}
    row = t[(t.NFE == 35) & (t.coupling == "aot N=512") & (t.conditioning == "uncond")].iloc[0]
    assert not row.paired and row.runs == 2 and pd.isna(row.fd_diff_std_within_run)
    assert row.fd_diff_seed0 == pytest.approx(value["aot512-uncond", 7] - value["edm-uncond", 7])
    assert row.fd_diff_seed1 == pytest.approx(value["aot512s1-uncond", 7] - value["edms1-uncond", 7])
    assert not t.paired.any()
    # Features at other sampling seeds: no paired comparison, and no silent fallback either.
    import numpy as np

    moved = {k: dict(v, seeds=np.arange(c["n"]) + 7) if k.startswith("edm-uncond") else v
             for k, v in c["features"].items()}
    t = coupling_table(c["metrics"], c["stats"], moved, c["trajs"])
    assert set(t[t.conditioning == "uncond"].training_seeds) == {"0,1", "1"}


def test_coupling_labels_and_defaults_of_old_summaries():
    from aot.eval.paired import coupling_of, coupling_table

    old = dict(pairing="aot", pool=256)  # written before train recorded seed, block and group size
    assert coupling_of(old) == dict(seed=0, N=256, knn_k=None, coupling="aot N=256")
    assert coupling_of(dict(pairing="aot-sq", pool=512, block=32))["coupling"] == "aot-sq N=32"
    assert coupling_of(dict(pairing="immiscible", pool=512))["coupling"] == "immiscible"
    assert coupling_of(dict(pairing="immiscible", pool=512, group_size=128, seed=3)) == dict(
        seed=3, N=128, knn_k=None, coupling="immiscible N=128")
    assert coupling_of(dict(pairing="knn", pool=512, group_size=None, knn_k=8)) == dict(
        seed=0, N=None, knn_k=8, coupling="knn k=8")
    assert coupling_of(dict(pairing="none", pool=512, group_size=None, knn_k=8))["coupling"] == "none"
    t = coupling_table([metric("edm-uncond", "none", 7, 18, 5.0)], [train_stats("edm-uncond", "none", 0, 0.0)], {})
    assert t.empty and "fd_diff_std_across_seeds" in t.columns  # EDM alone: nothing to compare


def test_write_tables_coupling(tmp_path, coupling_study):
    from aot.report.tables import write_tables

    files = write_metrics(tmp_path, [metric("edm-uncond", "none", 7, 18, 5.0), metric("aot8-uncond", "aot", 7, 18,
                                                                                      4.5)])
    write_tables(files, [], tmp_path / "none")
    assert pd.read_csv(tmp_path / "none/coupling.csv").empty
    assert "No coupling comparison: no training summaries were given (`--stats`)." in (
        tmp_path / "none/coupling.md").read_text()
    stats = []
    for s in (train_stats("edm-uncond", "none", 0, 0.0), train_stats("aot8-uncond", "aot", 0, 0.02, 8)):
        stats.append(tmp_path / f"{s['model']}.json")
        stats[-1].write_text(json.dumps(s))
    write_tables(files, stats, tmp_path / "some")
    t = pd.read_csv(tmp_path / "some/coupling.csv")
    assert list(t.coupling) == ["none", "aot N=8"] and list(t.fd_diff) == [0.0, -0.5] and not t.paired.any()
    md = (tmp_path / "some/coupling.md").read_text()
    assert "| aot N=8 | aot | 8 |" in md and "same training seed" in md


def test_stochastic_sampler_rows_say_so(scores):
    """A grid setting with EDM's churn gets a `sampler` column naming its settings; a table without one has none
    (every earlier table is unchanged)."""
    churn = dict(S_churn=40, S_min=0.05, S_max=50, S_noise=1.003)
    s = score_table([metric("edm-cond", "none", 7, 256, 2.0) | {"churn": churn},
                     metric("edm-cond", "none", 7, 40, 2.5)])
    row = s[s.steps == 256].iloc[0]
    assert row.sampler == "stochastic (S_churn 40, S_min 0.05, S_max 50, S_noise 1.003)" and row.NFE == 511
    assert s[s.steps == 40].sampler.isna().all()
    assert "sampler" not in scores.columns
