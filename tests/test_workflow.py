"""The real Snakefile: dry runs of every shipped config, lint, fast config errors, and a full smoke run."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SMK = [sys.executable, "-m", "snakemake"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
CONFIGS = sorted((ROOT / "config").glob("*.yaml"))


def run(args, cwd=ROOT, **kw):
    return subprocess.run(SMK + args, cwd=cwd, env=ENV, capture_output=True, text=True, **kw)


def job_counts(stdout: str) -> dict[str, int]:
    """Parse Snakemake's 'Job stats' table of a dry run."""
    table = stdout.split("Job stats:")[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)
            if m.group(1) != "total"}


@pytest.fixture(scope="module")
def dg_weights(tmp_path_factory):
    """--config override pointing guidance.extractor_weights (DG's classifier, downloaded by hand on a cluster) at
    a placeholder file, so the paper configs' DAG can be built here."""
    path = tmp_path_factory.mktemp("dg") / "32x32_classifier.pt"
    path.write_bytes(b"placeholder")
    return ["--config", f"guidance={{extractor_weights: {path}}}"]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_dry_run_every_config(config, dg_weights):
    extra = dg_weights if config.name.startswith("cifar10") else []
    r = run(["-n", "--forceall", "--configfile", str(config.relative_to(ROOT))] + extra)
    assert r.returncode == 0, r.stderr[-2000:]
    jobs = job_counts(r.stdout)
    assert {"sample", "evaluate", "trajectory", "tables", "figures", "all"} <= set(jobs)
    made = "import_checkpoint" if "released" in config.name else "train"
    assert jobs[made] == 4 if "released" in config.name else jobs[made] >= 2


def test_default_dry_run_has_every_model_and_setting():
    r = run(["-n", "--forceall"])
    assert r.returncode == 0, r.stderr[-2000:]
    jobs = job_counts(r.stdout)
    assert jobs["train"] == 4 and jobs["trajectory"] == 4
    # 4 models x 4 settings, plus Discriminator Guidance: generated images of 4 (model, setting) pairs for
    # 6 discriminators (3 runs x 2 conditionings), 6 guided sample sets, each scored.
    assert jobs["sample"] == 16 + 4 and jobs["train_discriminator"] == 6 and jobs["sample_guided"] == 6
    assert jobs["evaluate"] == 16 + 6


def test_nested_config_override_on_the_command_line():
    # Snakemake leaves nested --config scalars as text ('false', '1'); the workflow reads them as YAML.
    r = run(["-n", "--forceall", "--config", "guidance={enabled: false}", "sample={num_images: 100}"])
    assert r.returncode == 0, r.stderr[-2000:]
    jobs = job_counts(r.stdout)
    assert "train_discriminator" not in jobs and "sample_guided" not in jobs
    assert jobs["sample"] == 16 and jobs["evaluate"] == 16
    assert "--seeds 000000-000099 " in run(["-n", "-p", "--forceall", "--config", "sample={num_images: 100}"]).stdout


def test_missing_dg_classifier_stops_before_any_job():
    r = run(["-n", "--forceall", "--configfile", "config/cifar10-uncond.yaml"])
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert "Missing input files for rule train_discriminator" in out and "32x32_classifier.pt" in out


def paper_cells(cond: str) -> set[tuple[str, str]]:
    """(arm, setting) of every cell of the paper's Tables 1/2, 4 (uncond) and 5, from aot/paper.py."""
    from aot.config import setting_name
    from aot.paper import TABLE1_ROWS, TABLE2_ROWS, TABLE4, TABLE4_RHOS, TABLE5, TABLE5_NFES
    from aot.tables import TABLE5_RHOS

    cells = {(arm, setting_name(rho, steps)) for _, arm, rho, steps, _, _ in
             (TABLE1_ROWS if cond == "uncond" else TABLE2_ROWS) if arm}
    if cond == "uncond":
        cells |= {(arm, setting_name(rho, steps)) for arm, steps in TABLE4 for rho in TABLE4_RHOS}
    cells |= {(arm, setting_name(rho, (n + 1) // 2)) for arm, c in TABLE5 if c == cond for n in TABLE5_NFES
              for rho in TABLE5_RHOS}
    return cells


@pytest.mark.parametrize("cond", ["uncond", "cond"])
def test_paper_configs_list_fid50k_jobs_for_every_cell(cond, dg_weights):
    r = run(["-n", "-p", "--forceall", "--configfile", f"config/cifar10-{cond}.yaml"] + dg_weights)
    assert r.returncode == 0, r.stderr[-2000:]
    # The scoring commands as Snakemake would run them (-p), one per (model, setting).
    evaluated = {(m.group(1), m.group(2)) for m in
                 re.finditer(r"python -m aot evaluate .*--out results/[\w.-]+/metrics/(\w+)-\w+/(\S+)\.json", r.stdout)}
    missing = paper_cells(cond) - evaluated
    assert not missing, sorted(missing)
    jobs = job_counts(r.stdout)
    # Each (model, setting) is scored on 3 disjoint blocks of 50k seeds, sampled in 15 shards of 10k; the 3 DG
    # runs add 50k generated images (5 shards) per (base model, setting) and 3 guided models of 15 shards each.
    guided = jobs["train_discriminator"]
    assert guided == 3 and jobs["sample_guided"] == 15 * guided
    assert jobs["sample"] == 15 * (jobs["evaluate"] - guided) + 5 * 2 and jobs["fid_ref"] == 1
    assert "--fid-block 50000" in r.stdout and "--metrics inception" in r.stdout


def test_slurm_profile_dry_run(dg_weights):
    pytest.importorskip("snakemake_executor_plugin_slurm")
    r = run(["--profile", "profiles/slurm", "-n", "--forceall", "--configfile", "config/cifar10-uncond.yaml"]
            + dg_weights)
    assert r.returncode == 0, r.stderr[-2000:]


def test_lint_is_clean():
    r = run(["--lint"])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]


def test_bad_config_fails_fast_with_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {kimg: -3}\n")
    t0 = time.perf_counter()
    r = run(["-n", "--configfile", str(bad)])
    assert time.perf_counter() - t0 < 10
    assert r.returncode != 0
    lines = [line for line in (r.stdout + r.stderr).splitlines() if "config error" in line]
    assert lines == ["config error: train.kimg: -3 is less than or equal to the minimum of 0 (see config/README.md)"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """Copy the workflow into a temp dir and run the whole DAG on config/smoke.yaml."""
    d = tmp_path_factory.mktemp("wf")
    shutil.copy(ROOT / "Snakefile", d)
    shutil.copytree(ROOT / "workflow", d / "workflow")
    shutil.copytree(ROOT / "config", d / "config")
    r = run(["--cores", "2", "--configfile", "config/smoke.yaml"], cwd=d)
    assert r.returncode == 0, r.stderr[-4000:]
    return d


@pytest.mark.slow
def test_smoke_run_produces_tables(smoke):
    tables = smoke / "results/tables/smoke"
    all_scores = pd.read_csv(tables / "scores.csv")
    scores = all_scores[all_scores["guidance"] == "none"]
    assert len(scores) == 8  # 2 arms x 2 conditionings x 2 settings
    assert set(scores["arm"]) == {"edm", "aot"} and set(scores["conditioning"]) == {"uncond", "cond"}
    assert scores["ours"].notna().all() and (scores["ours"] > 0).all()
    assert (scores["ours_std"] > 0).all()  # jackknife std of each FD (evaluate.fd_jackknife: 8)
    assert set(scores["NFE"]) == {7, 5} and (scores["samples"] == 64).all()
    assert scores["metric"].str.startswith("FD (featnet").all()
    pairs = pd.read_csv(tables / "pairing.csv").set_index(["arm", "conditioning"])
    for cond in ("uncond", "cond"):
        assert pairs.loc[("aot", cond), "mean_dist_paired"] < pairs.loc[("edm", cond), "mean_dist_paired"]
    md = (tables / "scores.md").read_text()
    assert "paper" in md and "comparable" in md
    # The paper's tables keep every row; ours are missing where the smoke grid has no such setting.
    t1 = pd.read_csv(tables / "table1.csv")
    assert list(t1["paper_fid"]) == [1.97, 1.91, 1.90, 1.95, 1.88] and t1["ours"].isna().all()
    assert len(pd.read_csv(tables / "table4.csv")) == 50 and len(pd.read_csv(tables / "table5.csv")) == 32
    assert (tables / "table2.tex").read_text().startswith("\\begin{table}")
    traj = pd.read_csv(tables / "trajectory.csv")
    assert len(traj) == 4 and (traj["straightness"] >= 0).all() and traj["global_error"].notna().all()
    for png in ("score_vs_nfe", "score_vs_rho", "loss", "trajectory-rho7-steps4"):
        assert (smoke / f"results/smoke/figures/{png}.png").read_bytes()[:4] == b"\x89PNG"
    assert (smoke / "results/smoke/samples/aot-cond/rho7-steps4.png").exists()


@pytest.mark.slow
def test_smoke_run_discriminator_guidance(smoke):
    """Table 3 filled: 3 guidance runs x 2 conditionings, each beside its unguided model at the same seeds."""
    tables = smoke / "results/tables/smoke"
    scores = pd.read_csv(tables / "scores.csv")
    g = scores[scores["guidance"] != "none"]
    assert len(g) == 6 and set(g["arm"]) == {"edm_dg", "aot_dg", "aot_dgaot"} and (g["ours"] > 0).all()
    assert set(g["disc_pairing"]) == {"none", "aot"} and set(g["dg_weight"]) == {2.0, 1.0}
    comp = pd.read_csv(tables / "comparisons.csv")  # paired differences at the same seeds
    for cond in ("uncond", "cond"):
        pairs = set(zip(*comp[comp.conditioning == cond][["model", "baseline"]].values.T, strict=True))
        assert {("aot", "edm"), ("edm_dg", "edm"), ("aot_dg", "aot"), ("aot_dgaot", "aot"),
                ("aot_dgaot", "aot_dg")} <= pairs, pairs
    assert (comp.difference_std > 0).all()
    assert ((comp.model_score - comp.baseline_score - comp.difference).abs() < 1e-6).all()
    t3 = pd.read_csv(tables / "table3.csv")
    for col in ("ours_uncond", "ours_cond", "ours_unguided_uncond", "ours_unguided_cond"):
        assert t3[col].notna().all(), col
    assert list(t3["paper_fid_uncond"]) == [1.77, 1.70, 1.68]
    # Guidance changed the samples (same seeds, same score model): the scores differ from the unguided ones.
    assert (t3["ours_uncond"] != t3["ours_unguided_uncond"]).all()
    discs = pd.read_csv(tables / "discriminators.csv")
    assert len(discs) == 6 and discs["final_accuracy"].between(0, 1).all() and (discs["epochs"] == 2).all()
    aot = discs[discs["disc_pairing"] == "aot"]
    assert len(aot) == 2 and (aot["pair_dist_reduction_pct"] > 0).all()
    assert discs[discs["disc_pairing"] == "none"]["pair_dist_reduction_pct"].isna().all()
    # Two discriminators with the same spec but different fakes are different networks.
    a, b = (torch.load(smoke / f"results/smoke/discriminators/{m}-uncond/discriminator.pt", weights_only=True)
            for m in ("edm_dg", "aot_dg"))
    assert any(not torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    meta = json.loads((smoke / "results/smoke/metrics/aot_dgaot-cond/rho90-steps3.json").read_text())
    assert meta["guidance"]["weight"] == 1.0 and meta["guidance"]["discriminator_config"]["pairing"] == "aot"
    assert meta["guidance"]["boosting"] is True  # smoke.yaml: boosting for cond only, as DG
    assert "boosting" in t3["setting"].iloc[2] and "boosting" not in t3["setting"].iloc[2].split(";")[0]
    assert (smoke / "results/smoke/samples/aot_dgaot-cond/rho90-steps3.png").exists()


@pytest.mark.slow
def test_report_builds_with_tables_and_figures(smoke):
    r = run(["--configfile", "config/smoke.yaml", "--report", "results/report.html"], cwd=smoke)
    assert r.returncode == 0, r.stderr[-3000:]
    html = (smoke / "results/report.html").read_text(errors="replace")
    for name in ("table1.csv", "table4.csv", "pairing.csv", "score_vs_nfe.png", "trajectory-rho7-steps4.png",
                 "rho90-steps3.png"):
        assert name in html, name


@pytest.mark.slow
def test_smoke_noop_rerun_and_single_stage_rerun(smoke):
    r = run(["--cores", "2", "--configfile", "config/smoke.yaml"], cwd=smoke)
    assert r.returncode == 0 and "Nothing to be done" in (r.stdout + r.stderr)
    r = run(["-n", "--configfile", "config/smoke.yaml", "-R", "sample"], cwd=smoke)
    jobs = job_counts(r.stdout)
    # 16 samples of the grid + 8 shards of generated images for the discriminators (4 base models x 2)
    assert "train" not in jobs and "prepare_dataset" not in jobs and jobs["sample"] == 24
    before = (smoke / "results/smoke/models/aot-cond/network.pt").stat().st_mtime_ns
    r = run(["--cores", "2", "--configfile", "config/smoke.yaml", "-R", "tables"], cwd=smoke)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (smoke / "results/smoke/models/aot-cond/network.pt").stat().st_mtime_ns == before
