"""EDM training with and without AOT noise pairing (docs/method.md §1.2-1.4, §2.2-2.4).

Loop (per process): draw a pool of N images -> draw N noises -> pair them (aot.training.pairing, in a background thread,
one pool ahead) -> stream the N pairs in micro-batches of ``batch_gpu`` through EDM's loss -> Adam step every
``batch / processes`` images -> EMA. ``precision`` picks the numerics of the forward pass (fp32 = EDM's and the
paper's, the default; tf32; bf16 autocast). Resumable state lives in ``run_dir`` (not a Snakemake output, so a rerun
does not delete it; aot.training.runstate dumps and resumes it); the rule's outputs are the final EMA network and a
JSON summary. :func:`_train` is that loop; set-up, one optimizer step, a tick and the finish are the functions after it.
"""

from __future__ import annotations

import contextlib
import copy
import os
import signal
import threading
import time
from concurrent.futures import Future
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from aot.core.checkpoint import save_checkpoint, write_json
from aot.data.datasets import Dataset, to_float
from aot.models.denoiser import denoiser_from_ctor
from aot.models.networks import network_ctor
from aot.models.precond import EDMPrecond
from aot.models.presets import ARCH_BACKBONES
from aot.training import pairing
from aot.training.augment import AUGMENT_DIM, augment_pipe_from_config
from aot.training.loss import edm_loss, sample_sigma
from aot.training.runlog import PoolSampler, Ticker, pool_record, progress_bar, summarize, write_tick
from aot.training.runstate import RunState, refuse_diverged
from aot.training.spec import TrainSpec, ema_beta, forward_precision, learning_rate, set_cuda_flags


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


class Feed(NamedTuple):
    """What the loop feeds EDM's loss, fixed for the run: the training split, the augmentation, the batching."""

    images: torch.Tensor  # (n, C, H, W) the training split as stored (uint8)
    labels: torch.Tensor  # (n,) class indices
    augment_pipe: nn.Module | None  # EDM's augmentation, None without
    per_proc: int  # images per process and optimizer step (batch / processes)
    batch_gpu: int  # images per micro-batch
    rounds: int  # micro-batches per optimizer step (gradient accumulation)
    pair_kwargs: dict  # of pairing.BackgroundPairer: method, per_class, micro_batch, block
    meta: dict  # the dataset's meta, saved with the EMA network


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
    """The loop of the module's docstring, in one process; ``stop["signal"]`` is set by a stop signal."""
    run, feed = _start(spec, ds, Path(run_dir) / spec.digest(), progress=progress, model_name=model_name)
    ticker = Ticker(run.cur_nimg, len(run.history))
    state_every = int(spec.state_kimg * 1000)
    next_state_nimg = (run.cur_nimg // state_every + 1) * state_every
    pool_done = preempted = False
    with pairing.BackgroundPairer(**feed.pair_kwargs) as pairer:
        pending = _draw_pool(run, feed, pairer) if run.cur_nimg < run.total_nimg else None
        while run.cur_nimg < run.total_nimg:
            # Take the pool paired in the background; prefetch the next one, only if this pool does not finish the
            # run (no pairing is computed for nothing). The periodic state dump comes first, at the pool boundary.
            pool = pending
            pair, wait = ticker.wait_for(pool.pairing)
            if run.cur_nimg >= next_state_nimg:
                run.dump(pool.before, ticker.losses)
                next_state_nimg += state_every
            pending = _draw_pool(run, feed, pairer) if run.cur_nimg + spec.pool * run.world < run.total_nimg else None
            run.history.append(pool_record(run.cur_nimg, pair, wait))

            # Stream the pool through optimizer steps of per_proc images; a tick whenever one is due.
            pool_done = True
            for step_start in range(0, spec.pool, feed.per_proc):
                if run.cur_nimg >= run.total_nimg:  # the run ends inside this pool
                    pool_done = False
                    break
                _train_step(run, feed, ticker, pool, pair, step_start)
                if ticker.due(run.cur_nimg, spec.tick_kimg, run.total_nimg):
                    _tick(run, ticker)

            # A pool boundary: the state saved here resumes bit-identically (as the periodic dump above). The last
            # pool (pending None) just finishes the run.
            if pool_done and pending is not None and run.stop_requested(stop):
                run.dump(pending.before, ticker.losses)
                preempted = True
                break
        if pending is not None:
            pending.pairing.result()
    if run.bar is not None:
        run.bar.close()
    if preempted:
        raise _stopped(run, stop)
    return _finish(run, feed, ticker, out=out, stats_out=stats_out, pool_done=pool_done)


def _start(spec: TrainSpec, ds: Dataset, run_dir: Path, *, progress: bool, model_name: str) -> tuple[RunState, Feed]:
    """Set up this process's run: check the batching, build the model, EMA and optimizer (seeded: ranks start
    identical), seed the random streams, and resume from the run folder's saved state if it has one."""
    rank, world, device = init_distributed(spec.device)
    set_cuda_flags(spec.precision, device)
    per_proc = spec.batch // world
    batch_gpu = spec.batch_gpu or per_proc
    if spec.pool % per_proc or per_proc % batch_gpu or spec.batch % world:
        raise ValueError(f"pool {spec.pool}, batch {spec.batch}, batch_gpu {batch_gpu}, processes {world}: "
                         "pool must be a multiple of batch/processes, and batch_gpu must divide it")
    run_dir.mkdir(parents=True, exist_ok=True)
    refuse_diverged(run_dir)

    torch.manual_seed(spec.seed)
    net, ctor = build_denoiser(spec, ds.meta, ds.resolution, ds.channels)
    net.train().requires_grad_(True).to(device)
    ema = copy.deepcopy(net).eval().requires_grad_(False)
    opt = torch.optim.Adam(net.parameters(), lr=spec.lr, betas=(0.9, 0.999), eps=1e-8)
    ddp = nn.parallel.DistributedDataParallel(net) if world > 1 else net

    # Randomness: one stream per role and per process (docs/method.md §1.2: seed * world + rank).
    proc_seed = spec.seed * world + rank
    run = RunState(spec=spec, dir=run_dir, rank=rank, world=world, device=device, net=net, ddp=ddp, ema=ema, opt=opt,
                   ctor=ctor, sampler=PoolSampler(len(ds.train_images), spec.seed, rank=rank, world=world),
                   noise_gen=torch.Generator(device=device).manual_seed(2 * proc_seed + 1),
                   sigma_gen=torch.Generator(device=device).manual_seed(2 * proc_seed + 2),
                   model_name=model_name, total_nimg=int(round(spec.kimg * 1000)))
    torch.manual_seed(proc_seed + 10_000)  # dropout draws from the global stream
    run.resume()

    per_class = spec.cond and spec.pairing != "none"
    feed = Feed(torch.as_tensor(ds.train_images), torch.as_tensor(ds.train_labels),
                augment_pipe_from_config(spec.augment_p), per_proc, batch_gpu, per_proc // batch_gpu,
                dict(method=spec.pairing, per_class=per_class, micro_batch=spec.micro_batch or batch_gpu,
                     block=spec.block), ds.meta)
    if progress and rank == 0:
        run.bar = progress_bar(spec, run.cur_nimg)
    return run, feed


def _draw_pool(run: RunState, feed: Feed, pairer: pairing.BackgroundPairer) -> Pool:
    """Draw the next pool, augment it once, draw its noise and hand the pairing to the background thread.
    Runs in the main thread so the random streams stay ordered (docs/method.md §1.2 steps 1-5, §1.5)."""
    spec = run.spec
    before = run.pool_streams()
    idx = run.sampler.next(spec.pool)
    y = to_float(feed.images[idx]).to(run.device)
    labels = feed.labels[idx].to(run.device)
    aug = None
    if feed.augment_pipe is not None:
        with torch.no_grad():
            y, aug = feed.augment_pipe(y, run.noise_gen)
    shape = pairing.noise_shape(spec.pairing, (spec.pool, *feed.images.shape[1:]), spec.knn_k)
    noise = torch.randn(shape, generator=run.noise_gen, device=run.device)
    return Pool(before, y, labels, aug, pairer.submit(y, noise, labels if feed.pair_kwargs["per_class"] else None))


def _train_step(run: RunState, feed: Feed, ticker: Ticker, pool: Pool, pair: pairing.Pairing, start: int) -> None:
    """One optimizer step on the pool's images [start, start + per_proc): the gradients of ``rounds`` micro-batches
    accumulated (DDP averages them across processes on the last), each loss scaled by loss_scaling / per_proc as in
    EDM; then Adam and the EMA (:func:`_optimizer_step`)."""
    spec = run.spec
    t_step = time.perf_counter()
    run.opt.zero_grad(set_to_none=True)
    for r in range(feed.rounds):
        sl = slice(start + r * feed.batch_gpu, start + (r + 1) * feed.batch_gpu)
        y, n = pool.y[sl], pair.noise[sl]
        labels = pool.labels[sl] if spec.cond else None
        aug = pool.aug[sl] if pool.aug is not None else None
        sigma = sample_sigma(len(y), P_mean=spec.P_mean, P_std=spec.P_std, generator=run.sigma_gen)
        sync = r == feed.rounds - 1 or run.world == 1
        with run.ddp.no_sync() if not sync else contextlib.nullcontext():
            with forward_precision(spec.precision, run.device):
                loss = edm_loss(run.ddp, y, n, sigma, labels, aug, sigma_data=spec.sigma_data)
            loss.sum().mul(spec.loss_scaling / feed.per_proc).backward()
        ticker.losses.append(loss.detach().mean())  # synced once per tick, not per step
    run.cur_nimg = _optimizer_step(spec, run.net, run.ema, run.opt, run.cur_nimg)
    ticker.step_total += time.perf_counter() - t_step
    if run.bar is not None:
        run.bar.update(min(run.cur_nimg, run.total_nimg) / 1000 - run.bar.n)


def _tick(run: RunState, ticker: Ticker) -> None:
    """The end of a tick: loss and weights checked finite, then its line in the log (process 0 writes log.jsonl)."""
    run.check_finite(ticker.losses)
    line = ticker.end(run.cur_nimg, run.history)
    run.ticks.append(line)
    if run.rank == 0:
        write_tick(run.log_path, line, run.bar)


def _stopped(run: RunState, stop: dict) -> PreemptedError:
    """Leave the process group of a run stopped by a signal (its state saved); the error that says so."""
    if run.world > 1:
        torch.distributed.destroy_process_group()
    sig = stop["signal"]
    name = signal.Signals(sig).name if sig is not None else "a stop signal in another process"
    return PreemptedError(f"training of {run.title} stopped by {name} at "
                          f"{run.cur_nimg / 1000:g} kimg; state saved in {run.dir}; rerun the job to resume")


def _finish(run: RunState, feed: Feed, ticker: Ticker, *, out: str | Path, stats_out: str | Path,
            pool_done: bool) -> dict:
    """The summary; the weights checked finite once more, the state saved if the run ended at a pool boundary (a
    later, longer run resumes exactly from there), then process 0 writes the EMA network and the summary."""
    spec = run.spec
    seconds = time.perf_counter() - ticker.start
    summary = {"model": run.model_name, **summarize(run.history, spec, seconds, ticker.wait_total, ticker.step_total,
                                                     run.cur_nimg, micro_batch=feed.pair_kwargs["micro_batch"])}
    summary["ticks"] = run.ticks  # what log.jsonl holds (process 0)
    run.check_finite([])  # the last tick checked the loss; weights again before anything is written
    if pool_done:  # a later, longer run resumes exactly from here (no pool was prefetched after the last one)
        run.dump(run.pool_streams(), ticker.losses)
    if run.rank == 0:
        save_checkpoint(out, kind="denoiser", state_dict=run.ema.state_dict(), ctor=run.ctor, config=asdict(spec),
                        extra={"kimg": run.cur_nimg / 1000, "dataset": feed.meta})
        write_json(stats_out, summary)
    if run.world > 1:
        torch.distributed.destroy_process_group()
    return summary


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


