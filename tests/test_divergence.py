"""Non-finite runs stop with one line instead of scoring garbage: training (loss, weights, EMA weights), the
discriminator's training, sampling (plain and guided) and the evaluation of constant sample sets."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, TINY_NET, tiny_spec

import aot.training.discriminator
import aot.training.loop
from aot.__main__ import main
from aot.core.checkpoint import load_checkpoint, save_checkpoint
from aot.core.numerics import DivergenceError, finite_flags
from aot.core.samples import save_samples
from aot.data.datasets import save_dataset
from aot.eval.scoring import refuse_constant, score
from aot.sampling.generate import generate
from aot.training.discriminator import DiscSpec, train_discriminator
from aot.training.loop import train

ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def good_ckpt(tmp_path_factory, digits):
    """A healthy tiny denoiser (one pool)."""
    d = tmp_path_factory.mktemp("good")
    train(tiny_spec(kimg=0.064, tick_kimg=1.0), digits, run_dir=d / "run", out=d / "net.pt", stats_out=d / "s.json",
          progress=False)
    return d / "net.pt"


def one_line(e: BaseException, *parts: str) -> str:
    msg = str(e)
    assert "\n" not in msg, msg
    for p in parts:
        assert p in msg, (p, msg)
    return msg


# ----------------------------------------------------------------------------
# Training.


@pytest.mark.parametrize("setting, what", [
    (dict(lr=1e37, lr_rampup_kimg=0), "non-finite loss, weights and EMA weights"),
    (dict(P_mean=80.0), "non-finite loss;"),
])
def test_diverging_training_stops_at_the_tick_with_one_line(tmp_path, digits, setting, what):
    """lr=1e37: Adam steps of ~1e38 overflow the weights; P_mean=80: sigma^2 overflows, the loss weight is inf/inf
    (the weights stay finite: EDM's nan_to_num zeroes the gradients). Both used to exit 0 with NaN ticks."""
    spec = tiny_spec(kimg=0.128, tick_kimg=0.128, state_kimg=1.0, **setting)
    with pytest.raises(DivergenceError) as e:
        train(spec, digits, run_dir=tmp_path / "run", out=tmp_path / "net.pt", stats_out=tmp_path / "s.json",
              progress=False, model_name="tiny-edm")
    one_line(e.value, "training of tiny-edm diverged at 0.128 kimg", what, "lower train.lr",
             "no resumable state was saved in", "no network was written")
    assert not (tmp_path / "net.pt").exists() and not (tmp_path / "s.json").exists()
    assert not list((tmp_path / "run").glob("*/training-state.pt"))
    assert not list((tmp_path / "run").glob("*/log.jsonl")), "no NaN tick was logged"

    # A retry (SLURM resubmission, --retries) stops at once instead of diverging again; deleting the marker resumes.
    (marker,) = (tmp_path / "run").glob("*/DIVERGED")
    assert marker.read_text() == str(e.value) + "\n"
    with pytest.raises(DivergenceError) as again:
        train(spec, digits, run_dir=tmp_path / "run", out=tmp_path / "net.pt", stats_out=tmp_path / "s.json",
              progress=False, model_name="tiny-edm")
    one_line(again.value, f"{marker}: an earlier attempt of this run stopped (training of tiny-edm diverged at",
             "resuming would diverge again", f"delete {marker} to resume anyway")
    marker.unlink()
    with pytest.raises(DivergenceError, match="diverged at 0.128 kimg"):
        train(spec, digits, run_dir=tmp_path / "run", out=tmp_path / "net.pt", stats_out=tmp_path / "s.json",
              progress=False, model_name="tiny-edm")


def test_a_divergence_mid_run_keeps_the_last_good_state(tmp_path, digits, monkeypatch):
    """A healthy run leaves its state at 0.128 kimg; extended with an lr spike from there on, the weights overflow
    and the state dump at 0.192 kimg (before any tick) refuses: the good state file is untouched, no network."""
    kw = dict(run_dir=tmp_path / "run", out=tmp_path / "net.pt", stats_out=tmp_path / "s.json", progress=False,
              model_name="tiny-aot")
    train(tiny_spec(kimg=0.128, tick_kimg=1.0, state_kimg=1.0), digits, **kw)
    (state,) = (tmp_path / "run").glob("*/training-state.pt")
    before, mtime = state.read_bytes(), state.stat().st_mtime_ns
    (tmp_path / "net.pt").unlink()
    (tmp_path / "s.json").unlink()

    lr = aot.training.loop.learning_rate
    monkeypatch.setattr(aot.training.loop, "learning_rate", lambda spec, n: 1e38 if n >= 128 else lr(spec, n))
    with pytest.raises(DivergenceError) as e:
        train(tiny_spec(kimg=0.256, tick_kimg=1.0, state_kimg=0.064), digits, **kw)
    one_line(e.value, "training of tiny-aot diverged at 0.192 kimg", "weights",
             f"the last good state (0.128 kimg) is kept in {state}")
    assert state.read_bytes() == before and state.stat().st_mtime_ns == mtime
    assert not (tmp_path / "net.pt").exists() and not (tmp_path / "s.json").exists()


def test_cli_train_divergence_exits_2_with_one_line(tmp_path, digits):
    data = tmp_path / "d.npz"
    save_dataset(data, digits)
    spec = json.dumps(dict(pairing="aot", network=TINY_NET, kimg=0.128, batch=32, pool=64, lr=1e37, lr_rampup_kimg=0,
                           tick_kimg=0.128, state_kimg=1.0))
    r = subprocess.run([sys.executable, "-m", "aot", "train", "--data", str(data), "--spec", spec, "--run-dir",
                        str(tmp_path / "run"), "--out", str(tmp_path / "net.pt"), "--stats", str(tmp_path / "s.json"),
                        "--model", "aot-uncond", "--threads", "1", "--no-progress"],
                       env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-3000:]
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: training of aot-uncond diverged at 0.128 kimg"), r.stderr
    assert not (tmp_path / "net.pt").exists()


def test_the_check_is_pure_and_healthy_runs_are_unchanged(tmp_path, digits):
    """finite_flags draws no random numbers and changes nothing; two healthy runs stay bit-identical."""
    torch.manual_seed(0)
    net, ema = torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2)
    losses = [torch.rand(4), torch.rand(2)]
    rng = torch.get_rng_state()
    params = [p.clone() for p in net.parameters()]
    assert finite_flags(losses, net, ema).tolist() == [True, True, True]
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(a, b) for a, b in zip(params, net.parameters(), strict=True))
    assert finite_flags([], net).tolist() == [True, True]
    with torch.no_grad():
        ema.running_var[0] = math.inf  # a floating buffer counts as a weight
        net.bias[1] = math.nan
    assert finite_flags([*losses, torch.tensor([1.0, math.nan])], net, ema).tolist() == [False, False, False]

    for name in ("a", "b"):
        train(tiny_spec(kimg=0.128), digits, run_dir=tmp_path / name, out=tmp_path / f"{name}.pt",
              stats_out=tmp_path / f"{name}.json", progress=False)
    wa, wb = (load_checkpoint(tmp_path / f"{n}.pt", kind="denoiser")["state_dict"] for n in ("a", "b"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert all(math.isfinite(t["loss"]) for t in json.loads((tmp_path / "a.json").read_text())["ticks"])


# ----------------------------------------------------------------------------
# Discriminator training.


def toy(n=64):
    rng = np.random.default_rng(0)
    real = rng.integers(150, 256, size=(n, 1, 8, 8), dtype=np.uint8)
    fake = rng.integers(0, 100, size=(n, 1, 8, 8), dtype=np.uint8)
    labels = np.zeros(n, np.int64)
    return aot.data.datasets.Dataset(real, labels, real[:4], labels[:4], {"num_classes": 1, "name": "toy"}), fake, labels


HEAD = {"model_channels": 32, "num_head_channels": 32, "num_res_blocks": 1}


def test_diverging_discriminator_stops_with_one_line(tmp_path):
    ds, fake, fl = toy()
    kw = dict(out=tmp_path / "d.pt", stats_out=tmp_path / "d.json", state_dir=tmp_path / "state", progress=False,
              model_name="aot_dg-uncond")
    with pytest.raises(DivergenceError) as e:
        train_discriminator(DiscSpec.from_dict(dict(epochs=1, batch=32, lr=1e30, head=HEAD)), ds, fake, fl, **kw)
    one_line(e.value, "discriminator aot_dg-uncond diverged in epoch 1", "non-finite loss and head weights",
             "guidance.train.lr (now 1e+30)", "no resumable state was saved", "no discriminator was written")
    assert not (tmp_path / "d.pt").exists() and not list((tmp_path / "state").glob("*/disc-state.pt"))


def test_discriminator_divergence_keeps_the_last_good_epoch(tmp_path, monkeypatch):
    """Epoch 1 healthy (its state saved); in epoch 2 the diffused inputs turn NaN: refused, state untouched."""
    ds, fake, fl = toy()
    kw = dict(out=tmp_path / "d.pt", stats_out=tmp_path / "d.json", state_dir=tmp_path / "state", progress=False)
    train_discriminator(DiscSpec.from_dict(dict(epochs=1, batch=32, head=HEAD)), ds, fake, fl, **kw)
    (state,) = (tmp_path / "state").glob("*/disc-state.pt")
    before = state.read_bytes()
    (tmp_path / "d.pt").unlink()
    perturb = aot.training.discriminator.perturb
    monkeypatch.setattr(aot.training.discriminator, "perturb", lambda x, t, z: perturb(x, t, z) * math.nan)
    with pytest.raises(DivergenceError) as e:
        train_discriminator(DiscSpec.from_dict(dict(epochs=2, batch=32, head=HEAD)), ds, fake, fl, **kw)
    one_line(e.value, "discriminator training diverged in epoch 2", f"the last good state (epoch 1) is kept in {state}")
    assert state.read_bytes() == before and not (tmp_path / "d.pt").exists()


# ----------------------------------------------------------------------------
# Sampling.


def test_sampling_a_nan_checkpoint_fails_with_one_line(tmp_path, good_ckpt):
    ckpt = load_checkpoint(good_ckpt, kind="denoiser")
    sd = {k: (v * math.nan if v.is_floating_point() else v) for k, v in ckpt["state_dict"].items()}
    bad = tmp_path / "nan.pt"
    save_checkpoint(bad, kind="denoiser", state_dict=sd, ctor=ckpt["ctor"], config=ckpt["config"],
                    extra=ckpt["extra"])
    out = tmp_path / "s.npz"
    r = subprocess.run([sys.executable, "-m", "aot", "sample", "--ckpt", str(bad), "--rho", "7", "--steps", "4",
                        "--seeds", "10-17", "--batch", "4", "--out", str(out), "--grid", str(tmp_path / "g.png"),
                        "--threads", "1", "--no-progress"], env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-3000:]
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}: sampling at rho=7, steps=4 gave non-finite "
                                                   "images for 4 of 4 seeds in 10-13 (first: 10, 11, 12, 13)"), r.stderr
    assert not out.exists() and not (tmp_path / "g.png").exists()
    # The healthy checkpoint samples as before.
    arrays = generate(good_ckpt, rho=7, steps=4, seeds=range(10, 14), progress=False)
    assert arrays["images"].shape == (4, 1, 8, 8) and arrays["images"].std() > 0


def test_guided_sampling_with_a_nan_weight_fails_with_one_line(tmp_path, good_ckpt):
    ds, fake, fl = toy()
    disc = tmp_path / "d.pt"
    train_discriminator(DiscSpec.from_dict(dict(epochs=1, batch=32, head=HEAD)), ds, fake, fl, out=disc,
                        stats_out=tmp_path / "d.json", state_dir=tmp_path / "state", progress=False)
    with pytest.raises(DivergenceError) as e:
        generate(good_ckpt, rho=7, steps=3, seeds=range(2), progress=False, disc_path=disc, dg_weight=math.nan)
    one_line(e.value, f"sampling at rho=7, steps=3, guided by {disc} (weight nan", "first: 0, 1")


# ----------------------------------------------------------------------------
# Evaluation.


def test_constant_sample_sets_are_refused(tmp_path, capsys):
    meta = np.array(json.dumps(dict(rho=7, steps=4, nfe=7, train=dict(pairing="aot", cond=False))))
    black = tmp_path / "black.npz"
    save_samples(black, dict(images=np.zeros((6, 1, 8, 8), np.uint8), labels=np.full(6, -1), seeds=np.arange(6),
                             meta=meta))
    out = tmp_path / "m.json"
    with pytest.raises(ValueError) as e:
        score([black], out, metrics=["featnet"], model="aot_dg-uncond")
    one_line(e.value, str(black), "all 6 sample images of model aot_dg-uncond are constant (every pixel 0)")
    rc = main(["evaluate", "--samples", str(black), "--out", str(out), "--model", "aot_dg-uncond"])
    err = capsys.readouterr().err.splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith(f"error: {black}: all 6 sample images"), err
    assert not out.exists()

    img = np.random.default_rng(0).integers(0, 256, (1, 1, 8, 8), dtype=np.uint8)
    with pytest.raises(ValueError, match="are identical"):
        refuse_constant(np.repeat(img, 5, axis=0), ["a.npz", "b.npz", "c.npz", "d.npz"], "m")
    refuse_constant(img, ["a.npz"])  # one image with structure is fine
    refuse_constant(np.concatenate([np.repeat(img, 5000, axis=0), img[:, :, ::-1]]), ["a.npz"])  # last differs
