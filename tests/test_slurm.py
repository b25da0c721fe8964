"""The cluster path for real: a small config through `snakemake --profile slurm` on a single-node SLURM on localhost
(tools/slurm-localhost: slurmctld + slurmd + munge, 4 fake GPUs), with the profile installed the way the README says.

One run, three training attempts: the first is `scancel`-ed (Snakemake must see CANCELLED and resubmit), the second
gets SLURM's pre-limit signal (`scancel --signal=TERM`, as `--signal=TERM@600` delivers it: the training saves at
the end of its pool and exits), the third resumes and finishes; then sampling, scoring and the tables. Skips with
one line where no SLURM can run here (not root, or `tools/slurm-localhost install` not run)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, copy_workflow
from slurm_cluster import slurm_cluster_fixture  # noqa: F401

pytestmark = pytest.mark.slow

# One model (AOT, unconditional) trained long enough (~1 min on 2 CPU processes) to be interrupted twice; the train
# job asks for 2 GPUs (--set-resources), which on this CPU-only cluster run as 2 torchrun processes on the CPU.
CONFIG = """\
experiment: slurm
dataset: {source: digits, test_fraction: 0.2, split_seed: 0}
arms:
  aot: {pairing: aot}
conditioning: [uncond]
network:
  arch: ddpmpp
  overrides: {model_channels: 16, channel_mult: [1, 2], channel_mult_emb: 1, num_blocks: 1,
              attn_resolutions: [4], dropout: 0.0}
train: {kimg: 40, batch: 64, pool: 128, lr: 0.002, lr_rampup_kimg: 0.1, ema_halflife_kimg: 0.1,
        tick_kimg: 1, state_kimg: 100}
sample: {grid: [{rho: 7, steps: 4}], num_images: 64, batch: 64}
evaluate:
  metrics: [featnet]
  featnet: {epochs: 2}
  kid_subsets: 10
  kid_subset_size: 32
  fd_jackknife: 8
trajectory: {settings: []}
guidance: {enabled: false}
"""
CLUSTER_RULES = {"featnet", "train", "sample"}  # every other rule of this DAG is local (featnet scores: seconds)
STOPPED = re.compile(r"stopped by SIGTERM at ([\d.]+) kimg; state saved")
RESUMED = re.compile(r"resuming from \S+ at ([\d.]+) kimg")


def running_train_job(cluster) -> str | None:
    """The SLURM id of the running training job (the plugin puts 'rule_<name>_<wildcards>' in the comment)."""
    out = cluster.run("squeue", "--noheader", "--states=RUNNING", "--format=%i|%k").stdout
    rows = [line.split("|", 1) for line in out.splitlines() if "|" in line]
    return next((jid for jid, comment in rows if comment.startswith("rule_train")), None)


def kill_strays(wd: Path) -> list[int]:
    """SIGKILL what is left of this run: a cancelled job's batch-step Snakemake whose parent died first is reparented
    to init, and the test cluster's proctrack/linuxproc (real clusters: cgroup) then no longer counts it as the
    job's. Returns the pids killed."""
    killed = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if str(wd).encode() in (proc / "cmdline").read_bytes():
                os.kill(int(proc.name), signal.SIGKILL)
                killed.append(int(proc.name))
        except (OSError, ProcessLookupError):
            continue
    return killed


def test_workflow_through_sbatch_survives_cancel_and_preemption(slurm_cluster, tmp_path):
    pytest.importorskip("snakemake_executor_plugin_slurm")
    c = slurm_cluster
    wd = copy_workflow(tmp_path / "wf")
    (wd / "slurm.yaml").write_text(CONFIG)
    xdg = tmp_path / "xdg"  # the README's install: cp -r profiles/slurm ~/.config/snakemake/
    shutil.copytree(ROOT / "profiles/slurm", xdg / "snakemake/slurm")
    env = {**c.env, "XDG_CONFIG_HOME": str(xdg), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "snakemake", "--profile", "slurm", "--slurm-init-seconds-before-status-checks", "3",
           "--set-resources", "train:gpu=2", "--configfile", "slurm.yaml"]
    attempts = wd / "results/slurm/logs/train/aot-uncond.log.attempts"
    ticks = wd / "results/slurm/runs/aot-uncond"

    def progressed(n_attempts: int):
        """The n-th attempt runs, has resumed (after the first) and trained at least one tick since."""
        logs = sorted(attempts.glob("*.log")) if attempts.is_dir() else []
        if len(logs) < n_attempts:
            return None
        text = logs[n_attempts - 1].read_text(errors="replace")
        if n_attempts > 1 and not RESUMED.search(text):
            return None
        return re.findall(r"^kimg ", text, re.M)[1:] and running_train_job(c)  # a tick line after the first

    out = (tmp_path / "snakemake.log").open("w")
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, cwd=wd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        first = c.wait_for(lambda: progressed(1), 240, 1, "the first training attempt to make progress")
        c.scancel(first)  # cancelled by the user (or an admin): Snakemake must see it and resubmit
        second = c.wait_for(lambda: progressed(2), 240, 1, "a resubmitted training that resumed")
        assert second != first
        c.scancel(second, signal="TERM")  # what --signal=TERM@600 sends 10 min before the time limit
        third = c.wait_for(lambda: progressed(3), 240, 1, "a third attempt that resumed")
        assert third not in (first, second)
        rc = p.wait(timeout=480)
    finally:
        if p.poll() is None:
            p.terminate()
            p.wait(timeout=120)
        out.close()
        kill_strays(wd)
    log = (tmp_path / "snakemake.log").read_text(errors="replace")
    assert rc == 0, log[-5000:]
    wall = time.monotonic() - t0

    # Snakemake saw the cancel (squeue state) and the failed (preempted) attempt, and resubmitted both.
    assert f"SLURM-job '{first}' failed, SLURM status is: 'CANCELLED'" in log, log[-5000:]
    assert f"SLURM-job '{second}' failed, SLURM status is: 'FAILED'" in log, log[-5000:]

    # Every attempt's log is kept; each interrupted attempt saved its state and the next resumed exactly there.
    logs = [f.read_text(errors="replace") for f in sorted(attempts.glob("*.log"))]
    names = sorted(f.name for f in attempts.glob("*.log"))
    assert len(logs) == 3 and [n.rsplit("-", 1)[1] for n in names] == [f"{j}.log" for j in (first, second, third)]
    saved = [float(STOPPED.search(t).group(1)) for t in logs[:2]]
    resumed = [float(RESUMED.search(t).group(1)) for t in logs[1:]]
    assert resumed == pytest.approx(saved, abs=0.05), (saved, resumed)
    assert 0 < saved[0] < saved[1] < 40 and not re.search(r"^error:", logs[2], re.M)
    assert (wd / "results/slurm/logs/train/aot-uncond.log").read_text() == logs[2]  # the log is the last attempt
    assert ticks.is_dir() and (wd / "results/slurm/models/aot-uncond/network.pt").is_file()
    assert (wd / "results/tables/slurm/scores.md").is_file()

    # Every cluster job went through sbatch (SLURM's own job records), local rules did not, and each asked for what
    # its rule declares: the training 2 GPUs on one node with 4 CPUs per GPU, 128 GB and 24 h.
    jobs = c.wait_for(lambda: [j for j in c.jobs() if j["work_dir"] == str(wd)], 30, what="the jobs' records")
    by_rule: dict[str, list[dict]] = {}
    for j in jobs:
        by_rule.setdefault(re.match(r"rule_([a-z_]+?)(?:_wildcards|$)", j["comment"] or "").group(1), []).append(j)
    assert set(by_rule) == CLUSTER_RULES, sorted(by_rule)
    assert [j["state"] for j in by_rule["train"]] == ["CANCELLED", "FAILED", "COMPLETED"]
    assert all(len(by_rule[r]) == 1 and by_rule[r][0]["state"] == "COMPLETED" for r in CLUSTER_RULES - {"train"})
    assert len({j["name"] for j in jobs}) == 1  # all under this run's id
    for j in by_rule["train"]:
        d = j["details"]
        assert j["gpus"] == 2 and j["cpus"] == 8 and d["NumNodes"] == "1", d
        assert d["TimeLimit"] == "1-00:00:00" and d["MinMemoryNode"] in ("125G", "128000M"), d
    assert all(j["gpus"] == 0 for r in CLUSTER_RULES - {"train"} for j in by_rule[r])
    print(f"slurm run: {len(jobs)} sbatch jobs, {wall:.0f} s")
