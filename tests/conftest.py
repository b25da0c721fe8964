"""Shared test helpers and fixtures.

Test modules import the plain helpers (``from conftest import ROOT, ENV, run_aot``); pytest injects the fixtures.
``-m "not slow"`` is the quick run: it starts no Snakemake, no cluster and no multi-process job (those tests carry
``pytest.mark.slow``).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}  # subprocesses import aot from this checkout
SMK = [sys.executable, "-m", "snakemake"]
AOT = [sys.executable, "-m", "aot"]

# A SongUNet small enough for a CPU training step in milliseconds (the embedded default's shape, fewer channels).
TINY_NET = dict(model_channels=16, channel_mult=[1, 2], channel_mult_emb=1, num_blocks=1, attn_resolutions=[4],
                dropout=0.1)


def tiny_spec(**kw):
    """A TrainSpec for TINY_NET on digits: 2 ticks of 128 images, states every tick."""
    from aot.training.spec import TrainSpec

    base = dict(pairing="aot", cond=False, network=TINY_NET, kimg=0.256, batch=32, pool=64, lr=2e-3,
                lr_rampup_kimg=0.1, ema_halflife_kimg=0.05, tick_kimg=0.128, state_kimg=0.128)
    base.update(kw)
    return TrainSpec.from_dict(base)


def weights(path) -> dict[str, torch.Tensor]:
    from aot.core.checkpoint import load_checkpoint

    return load_checkpoint(path, kind="denoiser")["state_dict"]


def assert_same_weights(a, b) -> None:
    """The checkpoints at ``a`` and ``b`` hold bit-identical weights."""
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def run_aot(args, cwd=ROOT, env=None, **kw) -> subprocess.CompletedProcess:
    """``python -m aot <args>`` in a subprocess, output captured as text."""
    return subprocess.run(AOT + [str(a) for a in args], cwd=cwd, env=env or ENV, capture_output=True, text=True,
                          **kw)


def run_snakemake(args, cwd=ROOT, env=None, **kw) -> subprocess.CompletedProcess:
    """``python -m snakemake <args>`` in a subprocess, output captured as text."""
    return subprocess.run(SMK + [str(a) for a in args], cwd=cwd, env=env or ENV, capture_output=True, text=True,
                          **kw)


def job_settings(line: str) -> dict:
    """The ``--settings`` JSON of one ``python -m aot <stage>`` command as Snakemake prints it (-p); {} if none."""
    if "--settings " not in line:
        return {}
    return json.loads(shlex.split(line[line.index("--settings "):])[1])


def copy_workflow(dest: Path) -> Path:
    """A private copy of the workflow (Snakefile, workflow/, config/) in ``dest`` for tests that run Snakemake for
    real, so their results/ and .snakemake/ never touch the checkout; returns ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "Snakefile", dest)
    shutil.copytree(ROOT / "workflow", dest / "workflow")
    shutil.copytree(ROOT / "config", dest / "config")
    return dest


def run_shipped_config(dest: Path, configfile: str, overrides: list[str], timeout: int = 1800) -> str:
    """Run ``configfile`` with ``--config overrides`` through a private copy of the workflow in ``dest`` (2 cores,
    commands printed); on failure, the assertion shows Snakemake's stderr and the failed jobs' logs. Returns the
    output."""
    copy_workflow(dest)
    r = run_snakemake(["--cores", "2", "-p", "--configfile", configfile, "--config", *overrides], cwd=dest,
                      timeout=timeout)
    logs = "\n".join(f"--- {p}\n{p.read_text()[-1500:]}" for p in sorted((dest / "results").rglob("*.log"))
                     if r.returncode and "Error" in p.read_text())
    assert r.returncode == 0, r.stderr[-4000:] + logs[-6000:]
    return r.stdout + r.stderr


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's digits in the project's Dataset format (read once per test run)."""
    from aot.data.sources import digits_dataset

    return digits_dataset()


def metric(model, pairing, rho, steps, value, seeds=(0, 999)):
    """A metrics JSON as the evaluate stage writes it (featnet FD ``value`` at one setting)."""
    # value_std: a recognisable function of the value, so the tests can tell which row's std landed in a cell
    return dict(model=model, pairing=pairing, rho=rho, steps=steps, nfe=2 * steps - 1, num_images=1000,
                seed_first=seeds[0], seed_last=seeds[1], cond=model.endswith("-cond"),
                scores={"featnet": dict(metric="FD (featnet-v1)", value=value, value_std=value / 100, kid=0.01)})


def train_stats(model, pairing, seed, reduction, group_size=None, **over):
    """A training summary (train.json) as the train stage writes it."""
    s = dict(model=model, pairing=pairing, cond=model.endswith("-cond"), pool=512, kimg=1.0, mean_dist_paired=9.0,
             mean_dist_independent=10.0, dist_reduction=reduction, solve_seconds_mean=0.004, wait_fraction=0.001,
             seed=seed, block=group_size if pairing in ("aot", "aot-sq") else None, group_size=group_size, knn_k=8)
    s.update(over)
    return s
