"""Self-test of tools/slurm-localhost + tests/slurm_cluster.py (skips where no SLURM can run; ~10 s)."""

from __future__ import annotations

import pytest
from slurm_cluster import gpus_requested, parse_fields, slurm_cluster_fixture  # noqa: F401

pytestmark = pytest.mark.slow  # starts Snakemake, torchrun or a cluster: not in the quick run (-m "not slow")


def test_parse_fields_and_gpus():
    f = parse_fields("JobId=3 JobName=a b WorkDir=/x y AllocNode:Sid=h:1 TresPerJob=gres:gpu:2 NumNodes=1")
    assert f["JobName"] == "a b" and f["WorkDir"] == "/x y" and f["AllocNode:Sid"] == "h:1"
    assert gpus_requested(f) == 2
    assert gpus_requested({"TresPerNode": "gres:gpu:a100:3", "NumNodes": "2"}) == 6
    assert gpus_requested({"TresPerJob": "cpu:1"}) == 0


def test_gpu_job_signal_and_cancel(slurm_cluster, tmp_path):
    c = slurm_cluster
    out = tmp_path / "gpu.out"
    gpu = c.sbatch(
        "--gpus=2", "--cpus-per-gpu=1", "--mem=100", "-t", "5", "-p", "gpu", "-J", "smoke-gpu",
        f"--chdir={tmp_path}", f"--output={out}", "--wrap", "srun -n1 --gpus=2 env | grep CUDA",
    )  # fmt: skip
    trap = tmp_path / "trap.out"
    script = tmp_path / "trap.sh"
    script.write_text(
        "#!/bin/bash\nsrun bash -c 'trap \"echo got TERM; exit 3\" TERM; echo ready; sleep 60 & wait'\n"
        'echo "srun rc=$?"\n'
    )
    term = c.sbatch("-t", "5", "-J", "smoke-term", f"--chdir={tmp_path}", f"--output={trap}", str(script))
    sleeper = c.sbatch(
        "-t", "5", "-J", "smoke-cancel", f"--chdir={tmp_path}", "--output=/dev/null", "--wrap", "srun sleep 60"
    )

    def state(jid):
        return next((s for i, _, s in c.squeue() if i == jid), None)

    c.wait_for(lambda: state(gpu) == "COMPLETED", 30, what="gpu job COMPLETED")
    assert "CUDA_VISIBLE_DEVICES=0,1" in out.read_text()

    c.wait_for(lambda: trap.exists() and "ready" in trap.read_text(), 30, what="trap job's step ready")
    c.scancel(term, signal="TERM")  # signals the step's processes only, the batch script goes on
    c.wait_for(lambda: state(term) == "COMPLETED", 30, what="trap job COMPLETED")
    assert "got TERM" in trap.read_text() and "srun rc=3" in trap.read_text()

    c.wait_for(lambda: state(sleeper) == "RUNNING", 30, what="sleeper RUNNING")
    c.scancel(sleeper)
    c.wait_for(lambda: state(sleeper) == "CANCELLED", 30, what="sleeper CANCELLED")

    jobs = c.wait_for(
        lambda: (j := {x["job_id"]: x for x in c.jobs()}) and {gpu, term, sleeper} <= j.keys() and j,
        30,
        what="jobcomp records",
    )
    assert jobs[gpu]["name"] == "smoke-gpu" and jobs[gpu]["state"] == "COMPLETED"
    assert jobs[gpu]["gpus"] == 2 and jobs[gpu]["cpus"] == 2 and jobs[gpu]["partition"] == "gpu"
    assert jobs[gpu]["exit_code"] == "0:0"
    assert jobs[term]["state"] == "COMPLETED" and jobs[term]["gpus"] == 0 and jobs[term]["partition"] == "debug"
    assert jobs[sleeper]["state"] == "CANCELLED"
