"""The real Snakefile: dry runs of every shipped config, lint, fast config errors, and a full smoke run."""

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

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


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_dry_run_every_config(config):
    r = run(["-n", "--forceall", "--configfile", str(config.relative_to(ROOT))])
    assert r.returncode == 0, r.stderr[-2000:]
    jobs = job_counts(r.stdout)
    assert {"sample", "evaluate", "trajectory", "tables", "figures", "all"} <= set(jobs)
    made = "import_checkpoint" if "released" in config.name else "train"
    assert jobs[made] == 4 if "released" in config.name else jobs[made] >= 2


def test_default_dry_run_has_every_model_and_setting():
    r = run(["-n", "--forceall"])
    assert r.returncode == 0, r.stderr[-2000:]
    jobs = job_counts(r.stdout)
    assert jobs["train"] == 4 and jobs["sample"] == 16 and jobs["evaluate"] == 16 and jobs["trajectory"] == 4


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
def test_paper_configs_list_fid50k_jobs_for_every_cell(cond):
    r = run(["-n", "-p", "--forceall", "--configfile", f"config/cifar10-{cond}.yaml"])
    assert r.returncode == 0, r.stderr[-2000:]
    # The scoring commands as Snakemake would run them (-p), one per (model, setting).
    evaluated = {(m.group(1), m.group(2)) for m in
                 re.finditer(r"python -m aot evaluate .*--out results/[\w.-]+/metrics/(\w+)-\w+/(\S+)\.json", r.stdout)}
    missing = paper_cells(cond) - evaluated
    assert not missing, sorted(missing)
    jobs = job_counts(r.stdout)
    # Each (model, setting) is scored on 3 disjoint blocks of 50k seeds, sampled in 15 shards of 10k.
    assert jobs["sample"] == 15 * jobs["evaluate"] and jobs["fid_ref"] == 1
    assert "--fid-block 50000" in r.stdout and "--metrics inception" in r.stdout


def test_slurm_profile_dry_run():
    pytest.importorskip("snakemake_executor_plugin_slurm")
    r = run(["--profile", "profiles/slurm", "-n", "--forceall", "--configfile", "config/cifar10-uncond.yaml"])
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
    scores = pd.read_csv(tables / "scores.csv")
    assert len(scores) == 8  # 2 arms x 2 conditionings x 2 settings
    assert set(scores["arm"]) == {"edm", "aot"} and set(scores["conditioning"]) == {"uncond", "cond"}
    assert scores["ours"].notna().all() and (scores["ours"] > 0).all()
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
    assert "train" not in jobs and "prepare_dataset" not in jobs and jobs["sample"] == 16
    before = (smoke / "results/smoke/models/aot-cond/network.pt").stat().st_mtime_ns
    r = run(["--cores", "2", "--configfile", "config/smoke.yaml", "-R", "tables"], cwd=smoke)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (smoke / "results/smoke/models/aot-cond/network.pt").stat().st_mtime_ns == before
