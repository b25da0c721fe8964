"""Preemption (SLURM's SIGTERM / SIGUSR1 before the time limit): the run saves its state at the next pool boundary,
exits non-zero with one ``error:`` line, and its rerun ends bit-identical to an uninterrupted run."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, TINY_NET, assert_same_weights, tiny_spec

from aot.core.artifacts import read_state
from aot.data.datasets import save_dataset
from aot.data.sources import digits_dataset
from aot.training.loop import train

pytestmark = pytest.mark.slow  # starts Snakemake, torchrun or a cluster: not in the quick run (-m "not slow")

POOL = 64
SPEC = json.dumps(dict(pairing="aot", cond=True, network=TINY_NET, kimg=4.096, batch=32, pool=POOL, lr=2e-3,
                       lr_rampup_kimg=0.1, ema_halflife_kimg=0.05, tick_kimg=0.064, state_kimg=100.0))
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def cmd(base: Path, name: str) -> list[str]:
    return [sys.executable, "-m", "aot", "train", "--data", str(base / "d.npz"), "--spec", SPEC, "--run-dir",
            str(base / f"run-{name}"), "--out", str(base / f"{name}.pt"), "--stats", str(base / f"{name}.json"),
            "--threads", "1", "--no-progress", "--model", name]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The data and one uninterrupted run, shared by both signals."""
    base = tmp_path_factory.mktemp("preempt")
    save_dataset(base / "d.npz", digits_dataset())
    subprocess.run(cmd(base, "ref"), check=True, env=ENV, capture_output=True, timeout=120)
    return base


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1], ids=lambda s: s.name)
def test_signal_saves_state_and_rerun_is_bit_identical(reference, sig):
    base, name = reference, f"sig-{sig.name}"
    p = subprocess.Popen(cmd(base, name), env=ENV, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and p.poll() is None:  # the first tick line: training has made progress
            logs = list((base / f"run-{name}").glob("*/log.jsonl"))
            if logs and logs[0].read_text().strip():
                break
            time.sleep(0.02)
        assert p.poll() is None, "the run ended before it could be signalled"
        p.send_signal(sig)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode != 0, err[-2000:]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err[-2000:]
    assert f"stopped by {sig.name}" in errors[0] and "rerun the job to resume" in errors[0], errors[0]
    assert not (base / f"{name}.pt").exists(), "no network is written by a stopped run"
    (state_path,) = (base / f"run-{name}").glob("*/training-state.pt")
    nimg = int(read_state(state_path)["cur_nimg"])
    assert 0 < nimg < 4096 and nimg % POOL == 0, nimg  # stopped at a pool boundary, before the end
    assert re.search(rf"at {nimg / 1000:g} kimg; state saved in ", errors[0]), errors[0]

    out = subprocess.run(cmd(base, name), env=ENV, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "resuming from" in out.stderr
    assert_same_weights(base / "ref.pt", base / f"{name}.pt")


def test_handlers_are_restored_after_train(tmp_path):
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    train(tiny_spec(kimg=0.064), digits_dataset(), run_dir=tmp_path / "r", out=tmp_path / "o.pt",
          stats_out=tmp_path / "s.json", progress=False)
    assert {s: signal.getsignal(s) for s in before} == before
    assert (tmp_path / "o.pt").exists()
