"""EDM training with and without AOT noise pairing (paper-spec §1.2-1.4, §2.2-2.4).

Loop (per process): draw a pool of N images -> draw N noises -> pair them (aot.pairing, in a background thread,
one pool ahead) -> stream the N pairs in micro-batches of ``batch_gpu`` through EDM's loss -> Adam step every
``batch / processes`` images -> EMA. Resumable state lives in ``run_dir`` (not a Snakemake output, so a rerun
does not delete it); the rule's outputs are the final EMA network and a JSON summary.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
import signal
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from aot import pairing
from aot.artifacts import read_jsonl, read_state, reading
from aot.augment import AUGMENT_DIM, augment_pipe_from_config
from aot.checkpoint import atomic_write_bytes, atomic_write_text, load_checkpoint, save_checkpoint, write_json
from aot.data import Dataset, to_float
from aot.loss import edm_loss, sample_sigma
from aot.networks import network_ctor
from aot.precond import EDMPrecond
from aot.presets import ARCH_BACKBONES


@dataclass
class TrainSpec:
    """Everything that defines a training run (the rule passes it as JSON). Units: kimg = 1000 images."""

    pairing: str = "aot"  # aot.pairing method: none (EDM) | aot | aot-sq | immiscible | knn
    cond: bool = False  # class-conditional model (per-class pairing when pairing != none)
    arch: str = "ddpmpp"  # aot.networks preset
    network: dict = field(default_factory=dict)  # overrides of the preset (model_channels, ...)
    kimg: float = 200.0  # training length
    batch: int = 512  # global batch per optimizer step
    batch_gpu: int | None = None  # micro-batch per process; None = batch / processes
    pool: int = 512  # AOT pool size N per process
    micro_batch: int | None = None  # immiscible: block size of the assignment; None = batch_gpu
    block: int | None = None  # aot / aot-sq: assign within consecutive blocks of this many pool images; None = pool
    augment_p: float = 0.0  # EDM's non-leaking augmentation probability (CIFAR-10: 0.12); 0 = off
    fp16: bool = False  # EDM --fp16: the backbone runs in float16 on CUDA (float32 weights, optimizer and EMA)
    loss_scaling: float = 1.0  # EDM --ls: the loss is multiplied by this before backward (not undone: Adam is
    #                            invariant to a constant gradient scale up to its eps, as in EDM)
    knn_k: int = 8  # knn: candidate noises per image
    lr: float = 1e-3
    lr_rampup_kimg: float = 10000.0
    ema_halflife_kimg: float = 500.0
    ema_rampup_ratio: float | None = 0.05
    P_mean: float = -1.2
    P_std: float = 1.2
    sigma_data: float = 0.5
    seed: int = 0
    tick_kimg: float = 50.0
    state_kimg: float = 500.0
    device: str = "cpu"

    @classmethod
    def from_dict(cls, d: dict) -> TrainSpec:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown train spec keys {sorted(unknown)}; valid: {sorted(cls.__dataclass_fields__)}")
        return cls(**d)

    def digest(self) -> str:
        """Names the run directory. Length and logging intervals are left out: the schedules do not depend on
        them, so a finished run can be extended (more kimg) and resumes where it stopped."""
        d = {k: v for k, v in asdict(self).items() if k not in ("kimg", "tick_kimg", "state_kimg")}
        for key, default in (("block", None), ("fp16", False), ("loss_scaling", 1.0)):
            if d[key] == default:  # added later: runs without them keep their run directory
                del d[key]
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


LOG_FIX = "delete the run folder's training-state.pt and log.jsonl to restart that run from scratch"


DIVERGED_MARKER = "DIVERGED"  # in the run dir: this run diverged; a retry refuses to resume it


class DivergenceError(ValueError):
    """A run produced non-finite numbers (loss, weights or images); ``python -m aot`` reports it as one line."""


class PreemptedError(ValueError):
    """SIGTERM/SIGUSR1 (e.g. SLURM near its time limit) stopped a run after saving its resumable state;
    ``python -m aot`` reports it as one line and exits non-zero, so Snakemake's retry resumes the run."""


STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGUSR1") if hasattr(signal, n))


class Pool(NamedTuple):
    """One pool of N training pairs, drawn together (paper-spec §1.2)."""

    before: dict  # random-stream state just before this pool was drawn (what a resume restores)
    y: torch.Tensor  # (N, C, H, W) augmented images in [-1, 1]
    labels: torch.Tensor  # (N,) class indices
    aug: torch.Tensor | None  # (N, 9) augmentation labels, None without augmentation
    pairing: Future  # of aot.pairing.Pairing, computed in the background


# ----------------------------------------------------------------------------
# Small pure pieces.


def finite_flags(losses: list[torch.Tensor], *modules: nn.Module) -> torch.Tensor:
    """Bool tensor on the device: [all ``losses`` finite, then per module all its parameters and floating buffers
    finite]. Fused, with no device sync and no random draw: the caller reads it once (``.tolist()``)."""
    device = next(modules[0].parameters()).device if modules else torch.device("cpu")

    def all_finite(ts: list[torch.Tensor]) -> torch.Tensor:
        flags = [t.isfinite().all() for t in ts]
        return torch.stack(flags).all() if flags else torch.ones((), dtype=torch.bool, device=device)

    weights = [[*m.parameters(), *(b for b in m.buffers() if b.is_floating_point())] for m in modules]
    return torch.stack([all_finite(losses), *map(all_finite, weights)])


def learning_rate(spec: TrainSpec, cur_nimg: int) -> float:
    """EDM: linear warm-up over lr_rampup_kimg, then constant."""
    ramp = spec.lr_rampup_kimg * 1000
    return spec.lr * (min(cur_nimg / ramp, 1.0) if ramp > 0 else 1.0)


def ema_beta(spec: TrainSpec, cur_nimg: int, batch: int) -> float:
    """EDM: half-life in images, ramped up as min(halflife, ratio * nimg); beta = 0.5^(batch / halflife)."""
    halflife = spec.ema_halflife_kimg * 1000
    if spec.ema_rampup_ratio is not None:
        halflife = min(halflife, cur_nimg * spec.ema_rampup_ratio)
    return 0.5 ** (batch / max(halflife, 1e-8))


class PoolSampler:
    """Endless shuffled stream of dataset indices, drawn N at a time; its state is two integers.

    Epoch e is the permutation from a generator seeded with (seed, e), restricted to this process's shard
    (indices rank, rank + world, ...), so the state (epoch, pos) alone restores the stream exactly.
    """

    def __init__(self, n_items: int, seed: int, rank: int = 0, world: int = 1):
        self.items = torch.arange(rank, n_items, world)
        self.seed, self.epoch, self.pos = seed, 0, 0
        self._perm = self._permutation()

    def _permutation(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return self.items[torch.randperm(len(self.items), generator=g)]

    def next(self, n: int) -> torch.Tensor:
        out = []
        while n > 0:
            take = min(n, len(self._perm) - self.pos)
            out.append(self._perm[self.pos : self.pos + take])
            self.pos += take
            n -= take
            if self.pos == len(self._perm):
                self.epoch, self.pos = self.epoch + 1, 0
                self._perm = self._permutation()
        return torch.cat(out)

    def state(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def restore(self, state: dict) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self._perm = self._permutation()


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


def log(msg: str, rank: int = 0) -> None:
    if rank == 0:
        print(msg, file=sys.stderr, flush=True)


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


def denoiser_from_ctor(ctor: dict) -> EDMPrecond:
    """EDMPrecond(backbone) from a checkpoint's ``ctor``: ``network`` (the backbone's kwargs), ``label_dim``,
    ``sigma_data``, and optionally ``model_type`` (EDM's class name; default SongUNet) and ``use_fp16``."""
    from aot.networks import BACKBONES

    model_type = ctor.get("model_type", "SongUNet")
    if model_type not in BACKBONES:
        raise ValueError(f"unknown backbone model_type {model_type!r}; valid choices: {', '.join(BACKBONES)}")
    return EDMPrecond(BACKBONES[model_type](**ctor["network"]), label_dim=ctor["label_dim"],
                      sigma_data=ctor["sigma_data"], use_fp16=bool(ctor.get("use_fp16", False)))


def load_denoiser(path: str | Path, device="cpu") -> tuple[EDMPrecond, dict]:
    """Rebuild a trained denoiser from its checkpoint (EMA weights), in eval mode."""
    ckpt = load_checkpoint(path, kind="denoiser")
    net = denoiser_from_ctor(ckpt["ctor"])
    net.load_state_dict(ckpt["state_dict"])
    return net.eval().requires_grad_(False).to(device), ckpt


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
    if device.type == "cuda":  # EDM: fp32 without TF32, cuDNN autotuning on
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
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

    # Randomness: one stream per role and per process (paper-spec §1.2: seed * world + rank).
    proc_seed = spec.seed * world + rank
    sampler = PoolSampler(len(ds.train_images), spec.seed, rank=rank, world=world)
    noise_gen = torch.Generator(device=device).manual_seed(2 * proc_seed + 1)
    sigma_gen = torch.Generator(device=device).manual_seed(2 * proc_seed + 2)
    torch.manual_seed(proc_seed + 10_000)  # dropout draws from the global stream

    cur_nimg, history, pool_done = 0, [], False
    streams_path = state_path if rank == 0 else run_dir / f"streams-rank{rank}.pt"
    if state_path.exists():
        cur_nimg, history = _resume(state_path, streams_path, rank, device, net=net, ema=ema, opt=opt,
                                    sampler=sampler, noise_gen=noise_gen, sigma_gen=sigma_gen)

    images_all = torch.as_tensor(ds.train_images)
    labels_all = torch.as_tensor(ds.train_labels)
    shape = tuple(images_all.shape[1:])
    total_nimg = int(round(spec.kimg * 1000))
    augment_pipe = augment_pipe_from_config(spec.augment_p)
    pair_kwargs = dict(method=spec.pairing, per_class=per_class, micro_batch=spec.micro_batch or batch_gpu,
                       block=spec.block)

    def draw_pool() -> Pool:
        """Draw the next pool, augment it once, draw its noise and hand the pairing to the background thread.
        Runs in the main thread so the random streams stay ordered (paper-spec §1.2 steps 1-5, §1.5)."""
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
        if rank == 0:
            state.update(net=net.state_dict(), ema=ema.state_dict(), opt=opt.state_dict(),
                         history=json.dumps(history), spec=json.dumps(asdict(spec)))
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
                    line = _tick_line(cur_nimg, tick_losses, pools, sec=now - t_start, kimg_per_s=rate,
                                      wait_frac=wait_total / max(step_time_total + wait_total, 1e-9))
                    if rank == 0:
                        _write_tick(run_dir / "log.jsonl", line, bar)
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
    log_path = run_dir / "log.jsonl"
    summary["ticks"] = read_jsonl(log_path, kind="training log", fix=LOG_FIX) if log_path.exists() else []
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
            sigma_gen: torch.Generator) -> tuple[int, list[dict]]:
    """Load the saved weights, optimizer and this process's random streams in place; return (cur_nimg, history).

    Process 0's streams are in ``state_path`` with the weights, the others' in their own ``streams_path``; all must
    be at the same image count, else the run dir is inconsistent (ValueError naming it).
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
    if rank == 0:  # ticks logged after the state dump are redone: drop them from the log
        _truncate_log(state_path.parent / "log.jsonl", cur_nimg / 1000)
    return cur_nimg, history


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
    with torch.no_grad():
        for p_ema, p in zip(ema.parameters(), net.parameters(), strict=True):
            p_ema.copy_(p.detach().lerp(p_ema, beta))
    return cur_nimg + spec.batch


def _tick_line(cur_nimg: int, losses: list[torch.Tensor], pools: list[dict], *, sec: float, kimg_per_s: float,
               wait_frac: float) -> dict:
    """One log.jsonl record: mean loss over the tick's micro-batches (one device sync), pairing stats of its pools."""
    return dict(kimg=round(cur_nimg / 1000, 3), loss=torch.stack(losses).mean().item(), sec=round(sec, 2),
                kimg_per_s=kimg_per_s,
                dist_paired=float(np.mean([h["dist_paired"] for h in pools])),
                dist_independent=float(np.mean([h["dist_independent"] for h in pools])),
                solve_ms=1000 * float(np.mean([h["solve_s"] for h in pools])),
                wait_frac=wait_frac)


def _write_tick(path: Path, line: dict, bar) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(line) + "\n")
    msg = (f"kimg {line['kimg']:.1f}  loss {line['loss']:.4f}  {line['kimg_per_s']:.3f} kimg/s  "
           f"pair dist {line['dist_paired']:.3f} (indep {line['dist_independent']:.3f})  "
           f"solve {line['solve_ms']:.1f} ms/pool  wait {100 * line['wait_frac']:.2f}%")
    (bar.write(msg, file=sys.stderr) if bar is not None else log(msg))


def _truncate_log(path: Path, kimg: float) -> None:
    if path.exists():
        with reading(path, "training log", fix=LOG_FIX):
            keep = [x for x in path.read_text().splitlines() if x.strip() and json.loads(x)["kimg"] <= kimg + 1e-9]
        path.write_text("".join(k + "\n" for k in keep))


def summarize(history: list[dict], spec: TrainSpec, seconds: float, wait: float, step_time: float,
              nimg: int, micro_batch: int | None = None) -> dict:
    paired = float(np.mean([h["dist_paired"] for h in history])) if history else math.nan
    indep = float(np.mean([h["dist_independent"] for h in history])) if history else math.nan
    group = {"none": None, "knn": None, "immiscible": micro_batch}.get(
        spec.pairing, spec.block or spec.pool)  # images one assignment pairs (the coupling's N)
    return dict(
        pairing=spec.pairing, cond=spec.cond, kimg=nimg / 1000, pools=len(history), pool=spec.pool,
        seed=spec.seed, block=spec.block, group_size=group, knn_k=spec.knn_k,
        mean_dist_paired=paired, mean_dist_independent=indep,
        dist_reduction=(1 - paired / indep) if history else math.nan,
        solve_seconds_mean=float(np.mean([h["solve_s"] for h in history])) if history else math.nan,
        wait_fraction=wait / max(step_time + wait, 1e-9), seconds_this_run=seconds,
        kimg_per_second_this_run=(nimg / 1000) / max(seconds, 1e-9),
    )
