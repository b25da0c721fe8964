"""The paper's tables: our numbers land in the right cells, missing rows stay, the paper's numbers are intact."""

import pandas as pd
import pytest

from aot.paper import TABLE4, TABLE4_RHOS, paper_fid
from aot.tables import pairing_table, score_table, table3, table4, table5, table12, to_latex, to_markdown


def metric(model, pairing, rho, steps, value, seeds=(0, 999)):
    # value_std: a recognisable function of the value, so the tests can tell which row's std landed in a cell
    return dict(model=model, pairing=pairing, rho=rho, steps=steps, nfe=2 * steps - 1, num_images=1000,
                seed_first=seeds[0], seed_last=seeds[1], cond=model.endswith("-cond"),
                scores={"featnet": dict(metric="FD (featnet-v1)", value=value, value_std=value / 100, kid=0.01)})


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
    assert t.note[1] == "prior work (not run here)" and (t.metric == "FD (featnet-v1)").all()
    t2 = table12(scores, "cond")
    assert t2.ours.isna().sum() == 3 and t2.ours.iloc[3] == 2.5 and t2.note[0] == "not run"


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
    assert (t.note == "not run (config guidance.runs)").all()


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

    from aot.metrics import frechet_distance, gaussian_stats
    from aot.tables import comparisons_table

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
