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
from conftest import ROOT, TINY_NET, assert_same_weights, tiny_spec, weights

from aot.core.checkpoint import load_checkpoint
from aot.data.datasets import save_dataset
from aot.models.denoiser import load_denoiser
from aot.training.loop import train
from aot.training.runlog import PoolSampler
from aot.training.spec import TrainSpec, ema_beta, learning_rate


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


@pytest.mark.slow
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


@pytest.mark.slow
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

    from aot.training.loop import _optimizer_step

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
    for later in ("block", "precision", "fp16", "loss_scaling"):  # fields added after runs existed
        del fields[later]
    assert spec.digest() == hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]
    # The digests of the code before fp16 and loss_scaling existed (commit d93cdd7).
    assert spec.digest() == "20fde6f256e1" and TrainSpec(pairing="aot", pool=512, block=8).digest() == "b42658ed5346"
    assert TrainSpec(pairing="aot", pool=512, block=8).digest() != spec.digest()
    assert TrainSpec(pairing="aot", pool=512, block=8).digest() != TrainSpec(pairing="aot", pool=512, block=32).digest()
    assert TrainSpec(pairing="aot", pool=512, precision="bf16").digest() != spec.digest()
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


# ----------------------------------------------------------------------------
# The training log (log.jsonl): no tick is ever lost or logged twice.

LOG_SPEC = dict(tick_kimg=0.256, state_kimg=100.0)  # ticks at 0.256, 0.512; one state, at the end


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory, digits):
    """A run to 0.512 kimg: its run dir (state at 0.512) and the two lines of its log."""
    base = tmp_path_factory.mktemp("logged")
    train(tiny_spec(kimg=0.512, **LOG_SPEC), digits, run_dir=base / "run", out=base / "a.pt",
          stats_out=base / "a.json", progress=False)
    (log,) = (base / "run").glob("*/log.jsonl")
    return base / "run", log.read_text().splitlines(keepends=True)


def _old_state(run: Path) -> None:
    """A state as saved before the ticks went with it."""
    (path,) = run.glob("*/training-state.pt")
    state = torch.load(path, map_location="cpu", weights_only=True)
    del state["ticks"]
    torch.save(state, path)


@pytest.mark.parametrize("damage", ["cut inside its first line", "cut after its first line", "emptied", "deleted",
                                    "torn inside its last line", "intact", "intact, state from before"])
def test_a_cut_or_torn_log_is_rebuilt_from_the_state(tmp_path, digits, logged_run, damage, capfd):
    """The log cut by a kill or a careless copy, then the run extended to 0.768 kimg: every tick is in the log and in
    train.json once, the rebuilt lines the very text first written (was: ticks 0.256, 0.768, the 0.512 one gone
    without a word, or a refusal that asked to delete the state)."""
    import shutil

    run = shutil.copytree(logged_run[0], tmp_path / "run")
    lines = logged_run[1]
    assert [json.loads(x)["kimg"] for x in lines] == [0.256, 0.512]
    (log,) = run.glob("*/log.jsonl")
    text = "".join(lines)
    damaged = {"cut inside its first line": text[:10], "cut after its first line": lines[0], "emptied": "",
               "torn inside its last line": lines[0] + lines[1][:25]}
    if damage == "deleted":
        log.unlink()
    elif damage in damaged:
        log.write_text(damaged[damage])
    elif damage == "intact, state from before":
        _old_state(run)
    train(tiny_spec(kimg=0.768, **LOG_SPEC), digits, run_dir=run, out=tmp_path / "b.pt", stats_out=tmp_path / "b.json",
          progress=False)
    now = log.read_text().splitlines(keepends=True)
    assert now[:2] == lines and [json.loads(x)["kimg"] for x in now] == [0.256, 0.512, 0.768]
    assert json.loads((tmp_path / "b.json").read_text())["ticks"] == [json.loads(x) for x in now]
    rebuilt = f"{log}: its ticks up to 0.512 kimg were cut or torn; rebuilt its 2 ticks from " in capfd.readouterr().err
    assert rebuilt == (not damage.startswith("intact"))


def test_ticks_of_an_attempt_without_a_state_are_not_logged_twice(tmp_path, digits):
    """A run killed before its first state dump is redone from scratch: its ticks are in the log once."""
    spec = tiny_spec(kimg=0.512, **LOG_SPEC)
    stale = tmp_path / "run" / spec.digest() / "log.jsonl"
    stale.parent.mkdir(parents=True)
    stale.write_text('{"kimg": 0.256, "loss": 1.0}\n{"kimg": 0.51')  # what the killed attempt left
    train(spec, digits, run_dir=tmp_path / "run", out=tmp_path / "a.pt", stats_out=tmp_path / "a.json",
          progress=False)
    ticks = [json.loads(x) for x in stale.read_text().splitlines()]
    assert [t["kimg"] for t in ticks] == [0.256, 0.512] and ticks[0]["loss"] != 1.0
    assert json.loads((tmp_path / "a.json").read_text())["ticks"] == ticks


# train.precision and the loop's speed-ups that keep fp32's numerics.


def test_ema_update_is_edms_per_parameter_lerp_bit_for_bit():
    """The EMA is updated for all parameters at once (foreach); each EMA weight is bit-identical to EDM's
    per-parameter ``p_ema.copy_(p_net.detach().lerp(p_ema, beta))`` after the same Adam step."""
    import copy

    from aot.training.loop import _optimizer_step, build_denoiser

    spec = TrainSpec(network=TINY_NET, batch=16, lr=1e-2, lr_rampup_kimg=0, ema_halflife_kimg=0.05)
    torch.manual_seed(0)
    net, _ = build_denoiser(spec, {"num_classes": 10}, 8, 1)
    ema = copy.deepcopy(net).requires_grad_(False)
    with torch.no_grad():  # the EMA away from the network, so the lerp has something to do
        for p in ema.parameters():
            p.add_(torch.randn_like(p))
    net_ref, ema_ref = copy.deepcopy(net), copy.deepcopy(ema)
    opt = torch.optim.Adam(net.parameters(), lr=spec.lr)
    opt_ref = torch.optim.Adam(net_ref.parameters(), lr=spec.lr)
    cur_nimg = 320  # half-life 16 images: beta = 0.5
    for _ in range(3):
        for m in (net, net_ref):
            g = torch.Generator().manual_seed(cur_nimg)
            for p in m.parameters():
                p.grad = torch.randn(p.shape, generator=g)
        beta = 0.5 ** (spec.batch / min(spec.ema_halflife_kimg * 1000, cur_nimg * spec.ema_rampup_ratio))
        for gr in opt_ref.param_groups:  # EDM's update, written out
            gr["lr"] = spec.lr
        opt_ref.step()
        with torch.no_grad():
            for p_ema, p_net in zip(ema_ref.parameters(), net_ref.parameters(), strict=True):
                p_ema.copy_(p_net.detach().lerp(p_ema, beta))
        cur_nimg = _optimizer_step(spec, net, ema, opt, cur_nimg)
        assert 0 < beta < 1
        for (k, a), b in zip(ema.state_dict().items(), ema_ref.state_dict().values(), strict=True):
            assert torch.equal(a, b), k


def test_forward_precision_fp32_is_plain_float32_and_bf16_autocasts():
    from aot.models.layers import Conv2d
    from aot.training.spec import forward_precision

    conv, x = Conv2d(3, 4, kernel=3), torch.randn(2, 3, 8, 8)
    for precision, dtype in (("fp32", torch.float32), ("tf32", torch.float32), ("bf16", torch.bfloat16)):
        with forward_precision(precision, torch.device("cpu")):
            assert conv(x).dtype == dtype, precision
            assert torch.is_autocast_enabled("cpu") is (precision == "bf16")


def test_bad_precision_is_refused_before_any_work(tmp_path, digits):
    """A precision that is not fp32 / tf32 / bf16, or tf32 on a CPU, stops ``aot train`` with one line before a run
    folder exists."""
    with pytest.raises(ValueError, match="precision: 'fp16' is not one of fp32, tf32, bf16"):
        TrainSpec.from_dict({"precision": "fp16"})
    with pytest.raises(ValueError, match="tf32 is a CUDA mode .* the device is 'cpu'"):
        TrainSpec(precision="tf32")
    data = tmp_path / "d.npz"
    save_dataset(data, digits)
    for precision in ("fp16", "tf32"):
        spec = json.dumps(dict(network=TINY_NET, kimg=0.064, batch=32, pool=64, precision=precision))
        cmd = [sys.executable, "-m", "aot", "train", "--data", str(data), "--spec", spec, "--run-dir",
               str(tmp_path / "runs"), "--out", str(tmp_path / "n.pt"), "--stats", str(tmp_path / "s.json"),
               "--no-progress"]
        r = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert r.stderr.startswith("error: train spec precision: ")
        assert not (tmp_path / "runs").exists() and not (tmp_path / "n.pt").exists()


def test_bf16_trains_on_cpu_close_to_fp32(tmp_path, digits):
    """bf16 autocast runs on a CPU: same data, seeds and steps as fp32, its per-tick losses within 1% of fp32's (they
    differ only by bf16 rounding in the convolutions), but not the same numbers; its own run folder; the checkpoint
    records the precision."""
    out = {}
    for precision in ("fp32", "bf16"):
        spec = tiny_spec(cond=True, kimg=0.128, tick_kimg=0.064, precision=precision)
        out[precision] = train(spec, digits, run_dir=tmp_path / "runs", out=tmp_path / f"{precision}.pt",
                               stats_out=tmp_path / f"{precision}.json", progress=False)
    losses = {p: [t["loss"] for t in s["ticks"]] for p, s in out.items()}
    assert len(losses["bf16"]) == len(losses["fp32"]) == 2
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=1e-2)
    assert losses["bf16"] != losses["fp32"], "bf16 autocast changed nothing"
    assert len(list((tmp_path / "runs").iterdir())) == 2
    assert load_checkpoint(tmp_path / "bf16.pt", kind="denoiser")["config"]["precision"] == "bf16"
    wa, wb = weights(tmp_path / "fp32.pt"), weights(tmp_path / "bf16.pt")
    assert all(torch.isfinite(v).all() for v in wb.values())
    assert any(not torch.equal(wa[k], wb[k]) for k in wa)


# CUDA only: marked `cuda` (bench/gpu.sh runs `pytest -m cuda` on a lent GPU); skipped on a CPU machine.
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _host_syncs(spec, ds, tmp_path, name) -> list[str]:
    """Every host-device synchronisation a CUDA training run makes (torch's sync debug mode, as warnings)."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            train(spec, ds, run_dir=tmp_path / name, out=tmp_path / f"{name}.pt", stats_out=tmp_path / f"{name}.json",
                  progress=False)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message)]


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("cond", [False, True])
def test_cuda_loop_makes_no_host_sync_per_step(tmp_path, digits, cond):
    """The loop waits for the GPU per pool and per tick, never per optimizer step: the same 2 pools and one tick
    taken as 2 or as 8 steps per pool make the same number of synchronisations."""
    common = dict(cond=cond, kimg=0.128, pool=64, tick_kimg=0.128, state_kimg=100.0, augment_p=0.12, device="cuda")
    few = _host_syncs(tiny_spec(batch=32, **common), digits, tmp_path, "few")
    many = _host_syncs(tiny_spec(batch=8, **common), digits, tmp_path, "many")
    assert few, "sync debug mode reported nothing: the check did not run"
    assert len(many) == len(few), f"{len(many) - len(few)} more syncs with 4x the steps: {sorted(set(many))[:5]}"


@pytest.mark.cuda
@requires_cuda
def test_cuda_precisions_set_edms_flags_and_train_close_to_fp32(tmp_path, digits):
    """On CUDA: fp32 trains with TF32 off everywhere (EDM's flags), tf32 with TF32 convolutions only, bf16 under
    autocast; all finite, the tf32 and bf16 losses within 1% of fp32's at the same seeds."""
    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    losses = {}
    try:
        for precision in ("fp32", "tf32", "bf16"):
            spec = tiny_spec(cond=True, kimg=0.128, tick_kimg=0.064, augment_p=0.12, precision=precision,
                             device="cuda")
            s = train(spec, digits, run_dir=tmp_path / "runs", out=tmp_path / f"{precision}.pt",
                      stats_out=tmp_path / f"{precision}.json", progress=False)
            assert torch.backends.cudnn.allow_tf32 is (precision == "tf32")
            assert torch.backends.cuda.matmul.allow_tf32 is False
            assert all(torch.isfinite(v).all() for v in weights(tmp_path / f"{precision}.pt").values())
            losses[precision] = [t["loss"] for t in s["ticks"]]
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags
    for precision in ("tf32", "bf16"):
        assert losses[precision] == pytest.approx(losses["fp32"], rel=1e-2), precision
    assert losses["bf16"] != losses["fp32"]


@pytest.mark.cuda
@requires_cuda
def test_cuda_ema_update_is_edms_per_parameter_lerp_bit_for_bit():
    """The foreach EMA update on CUDA equals EDM's per-parameter lerp exactly (same rounding)."""
    from aot.training.loop import _optimizer_step

    spec = TrainSpec(batch=16, lr=1e-2, lr_rampup_kimg=0, ema_halflife_kimg=0.05)
    g = torch.Generator(device="cuda").manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 300), torch.nn.Linear(300, 7)).cuda()
    ema = torch.nn.Sequential(torch.nn.Linear(64, 300), torch.nn.Linear(300, 7)).cuda().requires_grad_(False)
    for p in net.parameters():
        p.grad = torch.randn(p.shape, generator=g, device="cuda")
    opt = torch.optim.Adam(net.parameters(), lr=spec.lr)
    before = [p.detach().clone() for p in ema.parameters()]
    _optimizer_step(spec, net, ema, opt, 320)  # beta = 0.5
    for b, e, p in zip(before, ema.parameters(), net.parameters(), strict=True):
        assert torch.equal(e, p.detach().lerp(b, 0.5))


def test_adm_fp16_run_records_its_backbone_and_precision(tmp_path, digits):
    """An ADM run with EDM's --fp16 writes a checkpoint that rebuilds as EDMPrecond(DhariwalUNet, use_fp16); on a CPU
    the network ran in float32 (as EDM), so the EMA network's output is float32 and finite."""
    from aot.models.dhariwal import DhariwalUNet

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
    from aot.training.loop import build_denoiser

    with torch.device("meta"):
        return build_denoiser(spec, {"num_classes": 10}, 8, 1)[1]


def test_loss_scaling_multiplies_the_gradients(tmp_path, digits, monkeypatch):
    """EDM's --ls: the first step's gradients are loss_scaling times larger (same weights, same draws); nothing
    divides them back (Adam is invariant to a constant gradient scale up to its eps, as EDM relies on)."""
    import aot.training.loop as train_module

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
