"""EDM training with and without AOT noise pairing (docs/method.md §1.2-1.4, §2.2-2.4).

Loop (per process): draw a pool of N images -> draw N noises -> pair them (aot.training.pairing, in a background thread,
one pool ahead) -> stream the N pairs in micro-batches of ``batch_gpu`` through EDM's loss -> Adam step every
``batch / processes`` images -> EMA. ``precision`` picks the numerics of the forward pass (fp32 = EDM's and the
paper's, the default; tf32; bf16 autocast). Resumable state lives in ``run_dir`` (not a Snakemake output, so a rerun
does not delete it); the rule's outputs are the final EMA network and a JSON summary.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from aot.core.artifacts import read_state
from aot.core.checkpoint import atomic_write_bytes, atomic_write_text, save_checkpoint, write_json
from aot.core.numerics import DivergenceError, finite_flags
from aot.data.datasets import Dataset, to_float
from aot.models.denoiser import denoiser_from_ctor
from aot.models.networks import network_ctor
from aot.models.precond import EDMPrecond
from aot.models.presets import ARCH_BACKBONES
from aot.training import pairing
from aot.training.augment import AUGMENT_DIM, augment_pipe_from_config
from aot.training.loss import edm_loss, sample_sigma
from aot.training.runlog import PoolSampler, log, restore_log, summarize, tick_line, truncate_log, write_tick
from aot.training.spec import TrainSpec, ema_beta, forward_precision, learning_rate, set_cuda_flags

DIVERGED_MARKER = "DIVERGED"  # in the run dir: this run diverged; a retry refuses to resume it


class PreemptedError(ValueError):
    """SIGTERM/SIGUSR1 (e.g. SLURM near its time limit) stopped a run after saving its resumable state;
    ``python -m aot`` reports it as one line and exits non-zero, so Snakemake's retry resumes the run."""


STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGUSR1") if hasattr(signal, n))


class Pool(NamedTuple):
    """One pool of N training pairs, drawn together (docs/method.md §1.2)."""

    before: dict  # random-stream state just before this pool was drawn (what a resume restores)
    y: torch.Tensor  # (N, C, H, W) augmented images in [-1, 1]
    labels: torch.Tensor  # (N,) class indices
    aug: torch.Tensor | None  # (N, 9) augmentation labels, None without augmentation
    pairing: Future  # of aot.training.pairing.Pairing, computed in the background


# ----------------------------------------------------------------------------
# Small pure pieces.


# ----------------------------------------------------------------------------
# Process group (torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; a plain run is one process).


def init_distributed(device: str) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    dev = torch.device(device)
    if world > 1:
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(dev)
        torch.distributed.init_process_group(backend=backend)
    return rank, world, dev


# ----------------------------------------------------------------------------
# The training loop.


def build_denoiser(spec: TrainSpec, ds_meta: dict, resolution: int, channels: int) -> tuple[EDMPrecond, dict]:
    label_dim = int(ds_meta["num_classes"]) if spec.cond else 0
    augment_dim = AUGMENT_DIM if spec.augment_p > 0 else 0
    net_kwargs = network_ctor(spec.arch, img_resolution=resolution, in_channels=channels, out_channels=channels,
                              label_dim=label_dim, augment_dim=augment_dim, **spec.network)
    ctor = {"network": net_kwargs, "label_dim": label_dim, "sigma_data": spec.sigma_data}
    if ARCH_BACKBONES[spec.arch] != "SongUNet":  # absent = SongUNet (every checkpoint written before ADM)
        ctor["model_type"] = ARCH_BACKBONES[spec.arch]
    if spec.fp16:
        ctor["use_fp16"] = True
    return denoiser_from_ctor(ctor), ctor


def train(spec: TrainSpec, ds: Dataset, *, run_dir: str | Path, out: str | Path, stats_out: str | Path,
          progress: bool = True, model_name: str = "") -> dict:
    """Train (or resume) one model; write the EMA network to ``out`` and a summary JSON to ``stats_out``.

    SIGTERM or SIGUSR1 (SLURM's warning before the time limit) only sets a flag; the loop reads it at the end of
    each pool (the points a resume restores exactly), saves the state there and raises PreemptedError. The
    previous handlers are restored on return (handlers are only installed from the main thread)."""
    stop: dict = {"signal": None}

    def on_signal(signum, frame) -> None:  # no I/O here: the loop acts on the flag
        stop["signal"] = signum

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {s: signal.signal(s, on_signal) for s in STOP_SIGNALS}
    try:
        return _train(spec, ds, run_dir=run_dir, out=out, stats_out=stats_out, progress=progress,
                      model_name=model_name, stop=stop)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _train(spec: TrainSpec, ds: Dataset, *, run_dir: str | Path, out: str | Path, stats_out: str | Path,
           progress: bool, model_name: str, stop: dict) -> dict:
    rank, world, device = init_distributed(spec.device)
    set_cuda_flags(spec.precision, device)
    per_proc = spec.batch // world
    batch_gpu = spec.batch_gpu or per_proc
    rounds = per_proc // batch_gpu
    if spec.pool % per_proc or per_proc % batch_gpu or spec.batch % world:
        raise ValueError(f"pool {spec.pool}, batch {spec.batch}, batch_gpu {batch_gpu}, processes {world}: "
                         "pool must be a multiple of batch/processes, and batch_gpu must divide it")
    per_class = spec.cond and spec.pairing != "none"
    run_dir = Path(run_dir) / spec.digest()
    run_dir.mkdir(parents=True, exist_ok=True)
    state_path = run_dir / "training-state.pt"
    # A diverged run is not resumed by a retry (SLURM resubmissions, Snakemake --retries): it would restart from the
    # same state with the same random streams and diverge again, hours of GPU time later.
    diverged = run_dir / DIVERGED_MARKER
    if diverged.exists():
        earlier = " ".join(diverged.read_text(errors="replace").split())
        raise DivergenceError(f"{diverged}: an earlier attempt of this run stopped ({earlier}); resuming would "
                              f"diverge again from the same state; change the config (e.g. lower train.lr, a new run) "
                              f"or delete {diverged} to resume anyway")

    # Model, EMA, optimizer. Parameter init is seeded; ranks start identical.
    torch.manual_seed(spec.seed)
    net, ctor = build_denoiser(spec, ds.meta, ds.resolution, ds.channels)
    net.train().requires_grad_(True).to(device)
    ema = copy.deepcopy(net).eval().requires_grad_(False)
    opt = torch.optim.Adam(net.parameters(), lr=spec.lr, betas=(0.9, 0.999), eps=1e-8)
    ddp = nn.parallel.DistributedDataParallel(net) if world > 1 else net

    # Randomness: one stream per role and per process (docs/method.md §1.2: seed * world + rank).
    proc_seed = spec.seed * world + rank
    sampler = PoolSampler(len(ds.train_images), spec.seed, rank=rank, world=world)
    noise_gen = torch.Generator(device=device).manual_seed(2 * proc_seed + 1)
    sigma_gen = torch.Generator(device=device).manual_seed(2 * proc_seed + 2)
    torch.manual_seed(proc_seed + 10_000)  # dropout draws from the global stream

    cur_nimg, history, ticks, pool_done = 0, [], [], False
    streams_path = state_path if rank == 0 else run_dir / f"streams-rank{rank}.pt"
    log_path = run_dir / "log.jsonl"
    if state_path.exists():
        cur_nimg, history, ticks = _resume(state_path, streams_path, rank, device, net=net, ema=ema, opt=opt,
                                           sampler=sampler, noise_gen=noise_gen, sigma_gen=sigma_gen)
    elif rank == 0 and log_path.exists():  # ticks of an attempt that saved no state: this run redoes them
        log_path.unlink()

    images_all = torch.as_tensor(ds.train_images)
    labels_all = torch.as_tensor(ds.train_labels)
    shape = tuple(images_all.shape[1:])
    total_nimg = int(round(spec.kimg * 1000))
    augment_pipe = augment_pipe_from_config(spec.augment_p)
    pair_kwargs = dict(method=spec.pairing, per_class=per_class, micro_batch=spec.micro_batch or batch_gpu,
                       block=spec.block)

    def draw_pool() -> Pool:
        """Draw the next pool, augment it once, draw its noise and hand the pairing to the background thread.
        Runs in the main thread so the random streams stay ordered (docs/method.md §1.2 steps 1-5, §1.5)."""
        before = {"sampler": sampler.state(), "noise_gen": noise_gen.get_state()}
        idx = sampler.next(spec.pool)
        y = to_float(images_all[idx]).to(device)
        labels = labels_all[idx].to(device)
        aug = None
        if augment_pipe is not None:
            with torch.no_grad():
                y, aug = augment_pipe(y, noise_gen)
        noise = torch.randn(pairing.noise_shape(spec.pairing, (spec.pool, *shape), spec.knn_k),
                            generator=noise_gen, device=device)
        return Pool(before, y, labels, aug, pairer.submit(y, noise, labels if per_class else None))

    last_good = {"nimg": cur_nimg if state_path.exists() else None}

    def check_finite(losses: list[torch.Tensor]) -> None:
        """At each tick, before each state dump and at the end: loss, weights and EMA weights must be finite,
        else stop (DivergenceError, one line) before anything non-finite is logged, dumped or written."""
        bad = (~finite_flags(losses, net, ema)).to(torch.int32)
        if world > 1:  # a loss can be non-finite in one process only: all stop together
            torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX)
        what = [w for w, b in zip(("loss", "weights", "EMA weights"), bad.tolist(), strict=True) if b]
        if not what:
            return
        what = ", ".join(what[:-1]) + " and " + what[-1] if len(what) > 1 else what[0]
        if bar is not None:
            bar.close()
        kept = (f"the last good state ({last_good['nimg'] / 1000:g} kimg) is kept in {state_path}"
                if last_good["nimg"] is not None else f"no resumable state was saved in {run_dir}")
        msg = (f"training of {model_name or spec.pairing + ' model'} diverged at {cur_nimg / 1000:g} kimg: "
               f"non-finite {what}; lower train.lr (now {spec.lr:g}) or check the data and P_mean/P_std; {kept}; "
               f"no network was written")
        if rank == 0:  # the marker a retry stops at (written atomically)
            atomic_write_text(diverged, msg + "\n")
        raise DivergenceError(msg)

    def dump_state(before: dict) -> None:
        """Every process saves its own random streams; process 0 also the weights, written last, so a
        training-state.pt at N images implies every streams file is at N images too. Checked finite first:
        a diverged run never overwrites the last good state."""
        check_finite(tick_losses)
        state = {"cur_nimg": cur_nimg, "sampler": before["sampler"], "noise_gen": before["noise_gen"],
                 "sigma_gen": sigma_gen.get_state(), "torch_rng": torch.get_rng_state()}
        if device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(device)
        if rank != 0:
            atomic_write_bytes(streams_path, lambda f: torch.save(state, f))
        if world > 1:
            torch.distributed.barrier()
        if rank == 0:  # the ticks logged so far go with it: a log cut or torn later is rebuilt from them
            state.update(net=net.state_dict(), ema=ema.state_dict(), opt=opt.state_dict(),
                         history=json.dumps(history), ticks=json.dumps(ticks), spec=json.dumps(asdict(spec)))
            atomic_write_bytes(state_path, lambda f: torch.save(state, f))
        last_good["nimg"] = cur_nimg

    bar = None
    if progress and rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=spec.kimg, initial=cur_nimg / 1000, unit="kimg", desc=f"train {spec.pairing}",
                   mininterval=1.0 if sys.stderr.isatty() else 30.0, bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} "
                   "kimg [{elapsed}<{remaining}, {rate_fmt}]")
    t_start, tick_start_nimg, tick_losses = time.perf_counter(), cur_nimg, []
    tick_start_time, tick_start_pool = t_start, len(history)
    next_state_nimg = (cur_nimg // int(spec.state_kimg * 1000) + 1) * int(spec.state_kimg * 1000)
    wait_total, step_time_total = 0.0, 0.0

    def stop_requested() -> bool:
        """Whether a stop signal arrived, in any process (all processes stop at the same pool boundary)."""
        flag = stop["signal"] is not None
        if world > 1:
            t = torch.tensor([int(flag)], dtype=torch.int32, device=device)
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
            flag = bool(t.item())
        return flag

    preempted = False
    with pairing.BackgroundPairer(**pair_kwargs) as pairer:
        pending = draw_pool() if cur_nimg < total_nimg else None
        while cur_nimg < total_nimg:
            # Take the pool paired in the background; prefetch the next one.
            before, y_pool, labels_pool, aug_pool, fut = pending
            t0 = time.perf_counter()
            pair = fut.result()
            wait = time.perf_counter() - t0
            wait_total += wait
            if cur_nimg >= next_state_nimg:
                dump_state(before)
                next_state_nimg += int(spec.state_kimg * 1000)
            # Prefetch only if this pool does not finish the run (no pairing is computed for nothing).
            pending = draw_pool() if cur_nimg + spec.pool * world < total_nimg else None
            history.append(dict(kimg=cur_nimg / 1000, dist_paired=pair.mean_dist_paired,
                                dist_independent=pair.mean_dist_independent, solve_s=pair.solve_seconds,
                                cost_s=pair.cost_seconds, wait_s=wait))

            # Stream the pool through optimizer steps of per_proc images (rounds micro-batches each).
            pool_done = False
            for step_start in range(0, spec.pool, per_proc):
                if cur_nimg >= total_nimg:
                    break
                t_step = time.perf_counter()
                opt.zero_grad(set_to_none=True)
                for r in range(rounds):
                    sl = slice(step_start + r * batch_gpu, step_start + (r + 1) * batch_gpu)
                    y, n = y_pool[sl], pair.noise[sl]
                    labels = labels_pool[sl] if spec.cond else None
                    aug = aug_pool[sl] if aug_pool is not None else None
                    sigma = sample_sigma(len(y), P_mean=spec.P_mean, P_std=spec.P_std, generator=sigma_gen)
                    sync = r == rounds - 1 or world == 1
                    ctx = ddp.no_sync() if not sync else contextlib.nullcontext()
                    with ctx:
                        with forward_precision(spec.precision, device):
                            loss = edm_loss(ddp, y, n, sigma, labels, aug, sigma_data=spec.sigma_data)
                        loss.sum().mul(spec.loss_scaling / per_proc).backward()
                    tick_losses.append(loss.detach().mean())  # synced once per tick, not per step
                cur_nimg = _optimizer_step(spec, net, ema, opt, cur_nimg)
                step_time_total += time.perf_counter() - t_step
                if bar is not None:
                    bar.update(min(cur_nimg, total_nimg) / 1000 - bar.n)
                if cur_nimg - tick_start_nimg >= spec.tick_kimg * 1000 or cur_nimg >= total_nimg:
                    check_finite(tick_losses)
                    now = time.perf_counter()
                    rate = (cur_nimg - tick_start_nimg) / 1000 / max(now - tick_start_time, 1e-9)
                    pools = history[tick_start_pool:] or history[-1:]  # the pools of this tick
                    line = tick_line(cur_nimg, tick_losses, pools, sec=now - t_start, kimg_per_s=rate,
                                      wait_frac=wait_total / max(step_time_total + wait_total, 1e-9))
                    ticks.append(line)
                    if rank == 0:
                        write_tick(log_path, line, bar)
                    tick_start_nimg, tick_start_time, tick_losses = cur_nimg, now, []
                    tick_start_pool = len(history)
            else:
                pool_done = True
                # A pool boundary: the state saved here resumes bit-identically (as the periodic dump at the
                # top of the loop). The last pool (pending None) just finishes the run.
                if pending is not None and stop_requested():
                    dump_state(pending.before)
                    preempted = True
                    break
        if pending is not None:
            pending.pairing.result()
    if bar is not None:
        bar.close()
    if preempted:
        if world > 1:
            torch.distributed.destroy_process_group()
        sig = stop["signal"]
        name = signal.Signals(sig).name if sig is not None else "a stop signal in another process"
        raise PreemptedError(f"training of {model_name or spec.pairing + ' model'} stopped by {name} at "
                             f"{cur_nimg / 1000:g} kimg; state saved in {run_dir}; rerun the job to resume")

    seconds = time.perf_counter() - t_start
    summary = {"model": model_name, **summarize(history, spec, seconds, wait_total, step_time_total, cur_nimg,
                                                 micro_batch=pair_kwargs["micro_batch"])}
    summary["ticks"] = ticks  # what log.jsonl holds (process 0)
    check_finite([])  # the last tick checked the loss; weights again before anything is written
    if pool_done:  # a later, longer run resumes exactly from here
        dump_state(pending.before if pending is not None else
                   {"sampler": sampler.state(), "noise_gen": noise_gen.get_state()})
    if rank == 0:
        save_checkpoint(out, kind="denoiser", state_dict=ema.state_dict(), ctor=ctor, config=asdict(spec),
                        extra={"kimg": cur_nimg / 1000, "dataset": ds.meta})
        write_json(stats_out, summary)
    if world > 1:
        torch.distributed.destroy_process_group()
    return summary


def _resume(state_path: Path, streams_path: Path, rank: int, device: torch.device, *, net: nn.Module,
            ema: nn.Module, opt: torch.optim.Optimizer, sampler: PoolSampler, noise_gen: torch.Generator,
            sigma_gen: torch.Generator) -> tuple[int, list[dict], list[dict]]:
    """Load the saved weights, optimizer and this process's random streams in place; return (cur_nimg, history,
    ticks), ticks being the log.jsonl records up to the state.

    Process 0's streams are in ``state_path`` with the weights, the others' in their own ``streams_path``; all must
    be at the same image count, else the run dir is inconsistent (ValueError naming it). Process 0 sets the log back
    to the state's ticks (:func:`_restore_log`).
    """
    s = read_state(state_path)
    net.load_state_dict(s["net"])
    ema.load_state_dict(s["ema"])
    opt.load_state_dict(s["opt"])
    cur_nimg, history = int(s["cur_nimg"]), json.loads(s["history"])
    r = s if rank == 0 else read_state(streams_path, kind="random-stream state")
    if int(r["cur_nimg"]) != cur_nimg:
        raise ValueError(f"{streams_path} is at {r['cur_nimg']} images but {state_path} at {cur_nimg}; "
                         f"the run dir {state_path.parent} is inconsistent: delete it to restart")
    sampler.restore(r["sampler"])
    noise_gen.set_state(r["noise_gen"])
    sigma_gen.set_state(r["sigma_gen"])
    torch.set_rng_state(r["torch_rng"])
    if device.type == "cuda" and "cuda_rng" in r:
        torch.cuda.set_rng_state(r["cuda_rng"], device)
    log(f"resuming from {state_path} at {cur_nimg / 1000:.1f} kimg", rank)
    log_path = state_path.parent / "log.jsonl"
    if "ticks" in s:
        ticks = json.loads(s["ticks"])
        if rank == 0:
            restore_log(log_path, ticks, state_path)
    else:  # a state saved before ticks went with it: the log is all there is
        ticks = truncate_log(log_path, cur_nimg / 1000) if rank == 0 else []
    return cur_nimg, history, ticks


def _optimizer_step(spec: TrainSpec, net: nn.Module, ema: nn.Module, opt: torch.optim.Optimizer,
                    cur_nimg: int) -> int:
    """One Adam step on the accumulated gradients (EDM: lr ramp, NaN/Inf cleanup), then the EMA update.

    Both the learning rate and the EMA's rampup use the image count *before* the step, as EDM's training loop
    does (it adds the batch to ``cur_nimg`` after the EMA update): the first step has beta 0, so the EMA starts
    as a copy of the once-updated network. Returns the image count after the step (``cur_nimg + spec.batch``).
    """
    lr = learning_rate(spec, cur_nimg)
    for g in opt.param_groups:
        g["lr"] = lr
    for p in net.parameters():
        if p.grad is not None:
            torch.nan_to_num(p.grad, nan=0, posinf=1e5, neginf=-1e5, out=p.grad)
    opt.step()
    beta = ema_beta(spec, cur_nimg, spec.batch)
    with torch.no_grad():  # EDM's p_ema <- p.lerp(p_ema, beta) for all parameters at once (same rounding)
        p_ema = list(ema.parameters())
        torch._foreach_copy_(p_ema, torch._foreach_lerp([p.detach() for p in net.parameters()], p_ema, beta))
    return cur_nimg + spec.batch


