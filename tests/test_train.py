"""Training loop: schedules, the pool sampler, AOT lowering the pair distance, and exact resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from aot.checkpoint import load_checkpoint
from aot.data import digits_dataset, save_dataset
from aot.train import PoolSampler, TrainSpec, ema_beta, learning_rate, load_denoiser, train

ROOT = Path(__file__).resolve().parents[1]
TINY_NET = dict(model_channels=16, channel_mult=[1, 2], channel_mult_emb=1, num_blocks=1, attn_resolutions=[4],
                dropout=0.1)


def tiny_spec(**kw):
    base = dict(pairing="aot", cond=False, network=TINY_NET, kimg=0.256, batch=32, pool=64, lr=2e-3,
                lr_rampup_kimg=0.1, ema_halflife_kimg=0.05, tick_kimg=0.128, state_kimg=0.128)
    base.update(kw)
    return TrainSpec.from_dict(base)


@pytest.fixture(scope="module")
def digits():
    return digits_dataset()


def test_learning_rate_ramp():
    spec = TrainSpec(lr=1e-3, lr_rampup_kimg=10)
    assert learning_rate(spec, 0) == 0
    assert learning_rate(spec, 5000) == pytest.approx(5e-4)
    assert learning_rate(spec, 10_000) == learning_rate(spec, 10**9) == pytest.approx(1e-3)


def test_ema_beta_matches_edm_formula():
    spec = TrainSpec(ema_halflife_kimg=500, ema_rampup_ratio=0.05)
    # Early: half-life = 0.05 * nimg; late: 500k images.
    assert ema_beta(spec, 100_000, 512) == pytest.approx(0.5 ** (512 / 5000))
    assert ema_beta(spec, 10**8, 512) == pytest.approx(0.5 ** (512 / 500_000))
    assert ema_beta(TrainSpec(ema_halflife_kimg=1, ema_rampup_ratio=None), 0, 1000) == pytest.approx(0.5)


def test_pool_sampler_epochs_and_restore():
    s = PoolSampler(10, seed=3)
    first = torch.cat([s.next(4) for _ in range(5)])  # 20 items = 2 epochs
    assert sorted(first[:10].tolist()) == list(range(10)) and sorted(first[10:].tolist()) == list(range(10))
    state = s.state()
    ahead = s.next(7)
    s2 = PoolSampler(10, seed=3)
    s2.restore(state)
    assert torch.equal(s2.next(7), ahead)
    shard = PoolSampler(10, seed=3, rank=1, world=2).next(5)
    assert sorted(shard.tolist()) == [1, 3, 5, 7, 9]


def test_spec_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown train spec keys"):
        TrainSpec.from_dict({"kimgg": 1})


@pytest.mark.parametrize("cond", [False, True])
def test_aot_lowers_pair_distance_and_edm_does_not(tmp_path, digits, cond):
    stats = {}
    for pairing in ("none", "aot"):
        spec = tiny_spec(pairing=pairing, cond=cond, kimg=0.128)
        stats[pairing] = train(spec, digits, run_dir=tmp_path / pairing, out=tmp_path / f"{pairing}.pt",
                               stats_out=tmp_path / f"{pairing}.json", progress=False)
    assert stats["none"]["mean_dist_paired"] == stats["none"]["mean_dist_independent"]
    assert stats["aot"]["mean_dist_paired"] < stats["aot"]["mean_dist_independent"]
    assert json.loads((tmp_path / "aot.json").read_text())["dist_reduction"] > 0
    net, ckpt = load_denoiser(tmp_path / "aot.pt")
    assert ckpt["config"]["pairing"] == "aot" and net.label_dim == (10 if cond else 0)


def weights(path):
    return load_checkpoint(path, kind="denoiser")["state_dict"]


def assert_same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_extend_training_resumes_exactly(tmp_path, digits):
    """Train 4 pools in one go vs 2 pools then 'extend to 4': bit-identical EMA weights on CPU."""
    full = tiny_spec(kimg=0.256)
    train(full, digits, run_dir=tmp_path / "a", out=tmp_path / "a.pt", stats_out=tmp_path / "a.json", progress=False)
    half = tiny_spec(kimg=0.128)
    train(half, digits, run_dir=tmp_path / "b", out=tmp_path / "b1.pt", stats_out=tmp_path / "b1.json",
          progress=False)
    train(full, digits, run_dir=tmp_path / "b", out=tmp_path / "b.pt", stats_out=tmp_path / "b.json", progress=False)
    assert_same_weights(tmp_path / "a.pt", tmp_path / "b.pt")
    assert json.loads((tmp_path / "b.json").read_text())["kimg"] == pytest.approx(0.256)


def test_sigkill_and_restart_is_bit_identical(tmp_path, digits):
    """A run killed (SIGKILL) after its first state dump and restarted ends with the same weights."""
    data = tmp_path / "d.npz"
    save_dataset(data, digits)
    spec = json.dumps(dict(pairing="aot", cond=True, network=TINY_NET, kimg=1.024, batch=32, pool=64, lr=2e-3,
                           lr_rampup_kimg=0.1, ema_halflife_kimg=0.05, tick_kimg=0.5, state_kimg=0.128))

    def cmd(name):
        return [sys.executable, "-m", "aot", "train", "--data", str(data), "--spec", spec, "--run-dir",
                str(tmp_path / f"run-{name}"), "--out", str(tmp_path / f"{name}.pt"), "--stats",
                str(tmp_path / f"{name}.json"), "--threads", "1", "--no-progress"]

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(cmd("ref"), check=True, env=env, capture_output=True)
    p = subprocess.Popen(cmd("killed"), env=env, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not list((tmp_path / "run-killed").glob("*/training-state.pt")) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (tmp_path / "killed.pt").exists(), "the run finished before it could be killed"
    out = subprocess.run(cmd("killed"), check=True, env=env, capture_output=True, text=True)
    assert "resuming from" in out.stderr
    assert_same_weights(tmp_path / "ref.pt", tmp_path / "killed.pt")


def test_two_process_gloo_ddp_and_resume(tmp_path, digits):
    """torchrun with 2 CPU processes (gloo): trains, and extending a finished run resumes bit-identically."""
    data = tmp_path / "d.npz"
    save_dataset(data, digits)

    def run(name, kimg, run_dir):
        spec = json.dumps(dict(pairing="aot", cond=True, network=TINY_NET, kimg=kimg, batch=32, pool=64, lr=2e-3,
                               lr_rampup_kimg=0.1, ema_halflife_kimg=0.05, tick_kimg=0.1, state_kimg=10.0))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
               "-m", "aot", "train", "--data", str(data), "--spec", spec, "--run-dir", str(tmp_path / run_dir),
               "--out", str(tmp_path / f"{name}.pt"), "--stats", str(tmp_path / f"{name}.json"), "--threads", "1",
               "--no-progress"]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        return r

    run("full", 0.256, "a")
    run("half", 0.128, "b")
    r = run("extended", 0.256, "b")
    assert "resuming from" in r.stderr
    assert list((tmp_path / "b").glob("*/streams-rank1.pt")), "process 1 saved its own random streams"
    assert_same_weights(tmp_path / "full.pt", tmp_path / "extended.pt")
    stats = json.loads((tmp_path / "full.json").read_text())
    # Global batch 32 over 2 processes = 16 images per process and step, so a pool of 64 lasts 4 steps;
    # 256 images = 8 steps = 2 pools per process.
    assert stats["kimg"] == pytest.approx(0.256) and stats["pools"] == 2


def test_ema_follows_edms_loop_from_the_first_step():
    """EDM's training_loop.py computes the EMA beta from the image count *before* the step (it adds the batch
    afterwards), so the first step has half-life 0 -> beta 0 -> the EMA copies the network. Reference: that loop
    written out here, step by step, on a tiny module."""
    import copy

    from aot.train import _optimizer_step

    spec = TrainSpec(batch=8, lr=0.1, lr_rampup_kimg=0, ema_halflife_kimg=0.5, ema_rampup_ratio=0.05)
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    ema = copy.deepcopy(net).requires_grad_(False)
    ref = [p.detach().clone() for p in ema.parameters()]
    opt = torch.optim.Adam(net.parameters(), lr=spec.lr)
    cur_nimg = 0
    for step in range(6):
        opt.zero_grad()
        net(torch.randn(4, 3)).square().sum().backward()
        # EDM: ema_halflife_nimg = min(halflife, cur_nimg * ratio); beta = 0.5 ** (batch / max(h, 1e-8)); then +=
        h = min(spec.ema_halflife_kimg * 1000, cur_nimg * spec.ema_rampup_ratio)
        beta = 0.5 ** (spec.batch / max(h, 1e-8))
        cur_nimg = _optimizer_step(spec, net, ema, opt, cur_nimg)
        assert cur_nimg == 8 * (step + 1)
        ref = [p.detach() + (r - p.detach()) * beta for r, p in zip(ref, net.parameters(), strict=True)]
        for r, e in zip(ref, ema.parameters(), strict=True):
            torch.testing.assert_close(e, r, rtol=0, atol=1e-7)
        if step == 0:
            assert beta == 0 and all(torch.equal(e, p) for e, p in zip(ema.parameters(), net.parameters(),
                                                                         strict=True))
        if step == 1:
            assert beta == pytest.approx(0.5 ** 20)  # h = 0.05 * 8 = 0.4 images


def test_block_names_its_own_run_dir_and_leaves_the_others_where_they_were():
    """TrainSpec.block (the coupling study's N) came after runs existed: without it the run dir name is the digest
    of the other fields as before, so no earlier run loses its resumable state; with it, a new run dir."""
    import dataclasses
    import hashlib

    spec = TrainSpec(pairing="aot", pool=512)
    fields = {k: v for k, v in dataclasses.asdict(spec).items() if k not in ("kimg", "tick_kimg", "state_kimg")}
    for later in ("block", "fp16", "loss_scaling"):  # fields added after runs existed
        del fields[later]
    assert spec.digest() == hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]
    # The digests of the code before fp16 and loss_scaling existed (commit d93cdd7).
    assert spec.digest() == "20fde6f256e1" and TrainSpec(pairing="aot", pool=512, block=8).digest() == "b42658ed5346"
    assert TrainSpec(pairing="aot", pool=512, block=8).digest() != spec.digest()
    assert TrainSpec(pairing="aot", pool=512, block=8).digest() != TrainSpec(pairing="aot", pool=512, block=32).digest()
    assert len({spec.digest(), TrainSpec(pairing="aot", pool=512, fp16=True).digest(),
                TrainSpec(pairing="aot", pool=512, loss_scaling=100).digest()}) == 3


def test_blocked_aot_pulls_less_and_the_summary_says_which_coupling(tmp_path, digits):
    """Same seed, same draws: assignment within blocks of 8 reduces the image-noise distance less than over the
    pool of 64; the summary records the seed, the block and the group size N the tables put on their axis."""
    out = {}
    for name, kw in (("pool", {}), ("block8", {"block": 8}), ("none", {"pairing": "none"})):
        train(tiny_spec(seed=3, **kw), digits, run_dir=tmp_path / name, out=tmp_path / f"{name}.pt",
              stats_out=tmp_path / f"{name}.json", progress=False)
        out[name] = json.loads((tmp_path / f"{name}.json").read_text())
    assert [(s["seed"], s["block"], s["group_size"]) for s in out.values()] == [(3, None, 64), (3, 8, 8),
                                                                               (3, None, None)]
    assert out["pool"]["mean_dist_independent"] == pytest.approx(out["block8"]["mean_dist_independent"], rel=1e-6)
    assert 0 < out["block8"]["dist_reduction"] < out["pool"]["dist_reduction"]
    assert out["none"]["dist_reduction"] == 0


def test_adm_fp16_run_records_its_backbone_and_precision(tmp_path, digits):
    """An ADM run with EDM's --fp16 writes a checkpoint that rebuilds as EDMPrecond(DhariwalUNet, use_fp16); on a CPU
    the network ran in float32 (as EDM), so the EMA network's output is float32 and finite."""
    from aot.networks import DhariwalUNet

    adm = dict(model_channels=16, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4], dropout=0.1)
    spec = tiny_spec(arch="adm", network=adm, fp16=True, loss_scaling=100.0, kimg=0.064)
    train(spec, digits, run_dir=tmp_path / "runs", out=tmp_path / "adm.pt", stats_out=tmp_path / "adm.json",
          progress=False)
    net, ckpt = load_denoiser(tmp_path / "adm.pt")
    assert ckpt["ctor"]["model_type"] == "DhariwalUNet" and ckpt["ctor"]["use_fp16"] is True
    assert ckpt["config"]["fp16"] is True and ckpt["config"]["loss_scaling"] == 100.0
    assert isinstance(net.model, DhariwalUNet) and net.use_fp16
    out = net(torch.zeros(2, 1, 8, 8), torch.tensor([0.5, 5.0]))
    assert out.dtype == torch.float32 and out.isfinite().all()
    # A SongUNet run without them keeps the ctor every earlier checkpoint has.
    assert set(build_ctor(tiny_spec())) == {"network", "label_dim", "sigma_data"}


def build_ctor(spec: TrainSpec) -> dict:
    from aot.train import build_denoiser

    with torch.device("meta"):
        return build_denoiser(spec, {"num_classes": 10}, 8, 1)[1]


def test_loss_scaling_multiplies_the_gradients(tmp_path, digits, monkeypatch):
    """EDM's --ls: the first step's gradients are loss_scaling times larger (same weights, same draws); nothing
    divides them back (Adam is invariant to a constant gradient scale up to its eps, as EDM relies on)."""
    import aot.train as train_module

    step = train_module._optimizer_step
    for ls in (1.0, 100.0):
        norms = []

        def spy(spec, net, ema, opt, cur_nimg, norms=norms):
            norms.append(torch.stack([p.grad.norm() for p in net.parameters()]).clone())
            return step(spec, net, ema, opt, cur_nimg)

        monkeypatch.setattr(train_module, "_optimizer_step", spy)
        train(tiny_spec(loss_scaling=ls, kimg=0.064, seed=1), digits, run_dir=tmp_path / f"ls{ls}",
              out=tmp_path / f"ls{ls}.pt", stats_out=tmp_path / f"ls{ls}.json", progress=False)
        if ls == 1.0:
            base = norms[0]
    assert (base > 0).all()
    torch.testing.assert_close(norms[0], 100 * base, rtol=1e-5, atol=0)
