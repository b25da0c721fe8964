"""Training across nodes: the SLURM submission and srun/torchrun lines the workflow prints for train.nodes > 1, and a
two-node c10d rendezvous of workflow/scripts/torchrun-nodes on localhost (two launchers, one CPU process each).

The localhost SLURM of the CI has one node, so the multi-node job itself is not submitted: its sbatch line is built by
the installed SLURM executor plugin from the resources the dry run prints, exactly as the plugin would submit it.
"""

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import ENV, ROOT
from snakemake_executor_plugin_slurm.submit_string import get_submit_command
from snakemake_executor_plugin_slurm.utils import set_gres_string

from aot.data.datasets import save_dataset
from aot.data.sources import digits_dataset

pytestmark = pytest.mark.slow  # starts Snakemake, torchrun or a cluster: not in the quick run (-m "not slow")

LAUNCHER = ROOT / "workflow" / "scripts" / "torchrun-nodes"


class _Resources(dict):
    """A job's resources as the plugin reads them (``.get`` and attributes)."""

    __getattr__ = dict.__getitem__


def dry_run_train_job(configfile: str, model: str) -> tuple[dict, str]:
    """(resources, shell command) of the train job of ``model``, from `snakemake -n -p`."""
    target = f"results/{Path(configfile).stem}/models/{model}/network.pt"
    r = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-p", "--forceall", target, "--configfile",
                        configfile], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    block = r.stdout.split("rule train:", 1)[1]
    res = re.search(r"^\s+resources: (.*)$", block, re.M).group(1)
    resources = _Resources()
    for item in res.split(", "):
        key, value = item.split("=", 1)
        resources[key] = int(value) if re.fullmatch(r"\d+", value) else value
    shell = re.search(r"^Shell command: (.*)$", block, re.M).group(1)
    return resources, shell


def sbatch_line(resources: dict) -> str:
    job = SimpleNamespace(resources=resources, threads=1)
    params = dict(run_uuid="uuid", slurm_logfile="log", comment_str="rule_train", account="", partition="",
                  workdir="/work")
    return get_submit_command(job, params) + set_gres_string(job)


def test_four_nodes_of_eight_gpus_are_one_job_with_one_torchrun_per_node():
    """config/imagenet64-cond.yaml (EDM's 4 nodes x 8 A100s): one SLURM job of 4 nodes, 8 GPUs on each (gres, a
    per-node count), one task per node; the job's shell runs once (mpi: no srun around it) and its srun starts one
    torchrun-nodes per node, 8 processes each."""
    resources, shell = dry_run_train_job("config/imagenet64-cond.yaml", "aot-cond")
    assert resources["nodes"] == 4 and resources["tasks"] == 4 and resources["gres"] == "gpu:8"
    assert "mpi" in resources and "gpu" not in resources
    sbatch = sbatch_line(resources)
    for flag in ("--nodes=4", "--ntasks=4", "--gres=gpu:8", "--cpus-per-gpu=4", "--signal=TERM@600", "-t 1440"):
        assert f" {flag}" in sbatch, (flag, sbatch)
    assert "--gpus=" not in sbatch  # a total over the nodes, which SLURM may spread unevenly
    launch = (f"srun --nodes=4 --ntasks=4 --ntasks-per-node=1 --kill-on-bad-exit=1 {LAUNCHER} 4 8 -m aot train "
              "--data results/imagenet64-cond/data/dataset.npz --spec '")
    assert launch in shell, shell
    spec = json.loads(re.search(r"--spec '(\{.*?\})'", shell).group(1))
    assert "nodes" not in spec and "gpus" not in spec and spec["batch"] == 4096


def test_one_node_job_is_as_before():
    """config/cifar10-uncond.yaml: one node, its 4 GPUs as --gpus, torchrun --standalone."""
    resources, shell = dry_run_train_job("config/cifar10-uncond.yaml", "aot-uncond")
    assert resources["nodes"] == 1 and resources["gpu"] == 4 and "mpi" not in resources
    sbatch = sbatch_line(resources)
    assert " --nodes=1" in sbatch and " --gpus=4" in sbatch and "--gres" not in sbatch
    assert " torchrun --standalone --nnodes=1 --nproc_per_node=4 -m aot train " in shell and "srun" not in shell


def _free_rendezvous_port() -> int:
    """A free port in torchrun-nodes's range (20000 + job id % 10000)."""
    for port in range(20000 + os.getpid() % 5000, 30000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port in 20000-29999")


def test_two_node_rendezvous_on_localhost(tmp_path):
    """Two torchrun-nodes launchers, as srun starts them on two nodes (same SLURM job id, the launching node's
    address), meet in one c10d rendezvous: a tiny CPU training runs with world size 2 (gloo), rank 1 saves its own
    random streams beside rank 0's state, and rank 0 writes the network."""
    data = tmp_path / "digits.npz"
    save_dataset(data, digits_dataset())
    spec = dict(pairing="aot", network=dict(model_channels=8, channel_mult=[1, 2], channel_mult_emb=1, num_blocks=1,
                                            attn_resolutions=[4], dropout=0.0),
                kimg=0.128, batch=32, pool=64, lr=2e-3, lr_rampup_kimg=0.1, ema_halflife_kimg=0.05, tick_kimg=0.064,
                state_kimg=0.064)
    port = _free_rendezvous_port()
    env = {**ENV, "SLURM_JOB_ID": str(port - 20000), "SLURM_LAUNCH_NODE_IPADDR": "127.0.0.1", "OMP_NUM_THREADS": "1"}
    cmd = [str(LAUNCHER), "2", "1", "-m", "aot", "train", "--data", str(data), "--spec", json.dumps(spec),
           "--run-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "net.pt"), "--stats", str(tmp_path / "s.json"),
           "--model", "aot-uncond", "--threads", "1", "--no-progress"]
    nodes = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    try:
        outs = [p.communicate(timeout=300)[0] for p in nodes]
    finally:
        for p in nodes:
            p.kill()
    assert [p.returncode for p in nodes] == [0, 0], "\n".join(o[-3000:] for o in outs)
    (run,) = (tmp_path / "runs").iterdir()
    assert (run / "training-state.pt").is_file() and (run / "streams-rank1.pt").is_file()
    assert (tmp_path / "net.pt").is_file() and json.loads((tmp_path / "s.json").read_text())["kimg"] == 0.128


def test_launcher_outside_a_job_step_is_one_line():
    env = {k: v for k, v in ENV.items() if not k.startswith("SLURM_")}
    r = subprocess.run([str(LAUNCHER), "2", "1", "-m", "aot", "train"], env=env, capture_output=True, text=True)
    assert r.returncode != 0 and "runs inside a SLURM job step (srun); SLURM_LAUNCH_NODE_IPADDR is not set" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
