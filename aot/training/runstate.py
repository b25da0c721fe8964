"""One process's training run as state (:class:`RunState`): the networks, the optimizer, the random streams, the image
count and the logs so far; the state dump in the run folder and the resume from it, the finiteness check before
anything is dumped or written, and the marker that keeps a retry from resuming a diverged run."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from aot.core.artifacts import read_state
from aot.core.checkpoint import atomic_write_bytes, atomic_write_text
from aot.core.numerics import DivergenceError, finite_flags
from aot.training.runlog import PoolSampler, log, restore_log, truncate_log
from aot.training.spec import TrainSpec

DIVERGED_MARKER = "DIVERGED"  # in the run dir: this run diverged; a retry refuses to resume it


def refuse_diverged(run_dir: Path) -> None:
    """A diverged run is not resumed by a retry (SLURM resubmissions, Snakemake --retries): it would restart from the
    same state with the same random streams and diverge again, hours of GPU time later."""
    diverged = run_dir / DIVERGED_MARKER
    if diverged.exists():
        earlier = " ".join(diverged.read_text(errors="replace").split())
        raise DivergenceError(f"{diverged}: an earlier attempt of this run stopped ({earlier}); resuming would "
                              f"diverge again from the same state; change the config (e.g. lower train.lr, a new run) "
                              f"or delete {diverged} to resume anyway")


@dataclass(eq=False)
class RunState:
    """Everything of one process's run that training changes, and where it is saved (``dir``, the run's folder)."""

    spec: TrainSpec
    dir: Path
    rank: int
    world: int
    device: torch.device
    net: nn.Module  # the trained network (EDMPrecond)
    ddp: nn.Module  # net wrapped in DistributedDataParallel when world > 1, else net itself
    ema: nn.Module
    opt: torch.optim.Optimizer
    ctor: dict  # the network's constructor arguments, saved with the EMA network
    sampler: PoolSampler  # which images each pool holds
    noise_gen: torch.Generator  # augmentation and noise draws
    sigma_gen: torch.Generator  # noise levels
    model_name: str = ""
    total_nimg: int = 0  # the image count the run trains to
    cur_nimg: int = 0
    history: list[dict] = field(default_factory=list)  # one record per pool (its pairing statistics)
    ticks: list[dict] = field(default_factory=list)  # the log.jsonl records
    last_good: int | None = None  # the image count of the last state dumped or resumed; None before any
    bar: object = None  # the tqdm progress bar (process 0 with progress), closed before an error is raised

    @property
    def title(self) -> str:  # the model, in messages
        return self.model_name or self.spec.pairing + " model"

    @property
    def state_path(self) -> Path:
        return self.dir / "training-state.pt"

    @property
    def streams_path(self) -> Path:  # this process's random streams: process 0's go with the weights
        return self.state_path if self.rank == 0 else self.dir / f"streams-rank{self.rank}.pt"

    @property
    def log_path(self) -> Path:
        return self.dir / "log.jsonl"

    def pool_streams(self) -> dict:
        """The random streams the next pool is drawn from: what a state dump at a pool boundary saves."""
        return {"sampler": self.sampler.state(), "noise_gen": self.noise_gen.get_state()}

    def resume(self) -> None:
        """Continue from the saved state, if there is one; without one, the ticks logged by an attempt that saved no
        state are dropped (this run redoes them)."""
        if self.state_path.exists():
            self.cur_nimg, self.history, self.ticks = restore(
                self.state_path, self.streams_path, self.rank, self.device, net=self.net, ema=self.ema, opt=self.opt,
                sampler=self.sampler, noise_gen=self.noise_gen, sigma_gen=self.sigma_gen)
            self.last_good = self.cur_nimg
        elif self.rank == 0 and self.log_path.exists():
            self.log_path.unlink()

    def check_finite(self, losses: list[torch.Tensor]) -> None:
        """At each tick, before each state dump and at the end: loss, weights and EMA weights must be finite,
        else stop (DivergenceError, one line) before anything non-finite is logged, dumped or written."""
        bad = (~finite_flags(losses, self.net, self.ema)).to(torch.int32)
        if self.world > 1:  # a loss can be non-finite in one process only: all stop together
            torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX)
        what = [w for w, b in zip(("loss", "weights", "EMA weights"), bad.tolist(), strict=True) if b]
        if not what:
            return
        what = ", ".join(what[:-1]) + " and " + what[-1] if len(what) > 1 else what[0]
        if self.bar is not None:
            self.bar.close()
        spec = self.spec
        kept = (f"the last good state ({self.last_good / 1000:g} kimg) is kept in {self.state_path}"
                if self.last_good is not None else f"no resumable state was saved in {self.dir}")
        msg = (f"training of {self.title} diverged at {self.cur_nimg / 1000:g} kimg: "
               f"non-finite {what}; lower train.lr (now {spec.lr:g}) or check the data and P_mean/P_std; {kept}; "
               f"no network was written")
        if self.rank == 0:  # the marker a retry stops at (written atomically)
            atomic_write_text(self.dir / DIVERGED_MARKER, msg + "\n")
        raise DivergenceError(msg)

    def dump(self, before: dict, losses: list[torch.Tensor]) -> None:
        """Save the state at a pool boundary, ``before`` being the streams the next pool is drawn from. Every process
        saves its own random streams; process 0 also the weights, written last, so a training-state.pt at N images
        implies every streams file is at N images too. Checked finite first (with the tick's ``losses``): a diverged
        run never overwrites the last good state."""
        self.check_finite(losses)
        state = {"cur_nimg": self.cur_nimg, "sampler": before["sampler"], "noise_gen": before["noise_gen"],
                 "sigma_gen": self.sigma_gen.get_state(), "torch_rng": torch.get_rng_state()}
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        if self.rank != 0:
            atomic_write_bytes(self.streams_path, lambda f: torch.save(state, f))
        if self.world > 1:
            torch.distributed.barrier()
        if self.rank == 0:  # the ticks logged so far go with it: a log cut or torn later is rebuilt from them
            state.update(net=self.net.state_dict(), ema=self.ema.state_dict(), opt=self.opt.state_dict(),
                         history=json.dumps(self.history), ticks=json.dumps(self.ticks),
                         spec=json.dumps(asdict(self.spec)))
            atomic_write_bytes(self.state_path, lambda f: torch.save(state, f))
        self.last_good = self.cur_nimg

    def stop_requested(self, stop: dict) -> bool:
        """Whether a stop signal arrived (``stop["signal"]`` set), in any process: all stop at the same pool
        boundary."""
        flag = stop["signal"] is not None
        if self.world > 1:
            t = torch.tensor([int(flag)], dtype=torch.int32, device=self.device)
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
            flag = bool(t.item())
        return flag


def restore(state_path: Path, streams_path: Path, rank: int, device: torch.device, *, net: nn.Module,
            ema: nn.Module, opt: torch.optim.Optimizer, sampler: PoolSampler, noise_gen: torch.Generator,
            sigma_gen: torch.Generator) -> tuple[int, list[dict], list[dict]]:
    """Load the saved weights, optimizer and this process's random streams in place; return (cur_nimg, history,
    ticks), ticks being the log.jsonl records up to the state.

    Process 0's streams are in ``state_path`` with the weights, the others' in their own ``streams_path``; all must
    be at the same image count, else the run dir is inconsistent (ValueError naming it). Process 0 sets the log back
    to the state's ticks (:func:`aot.training.runlog.restore_log`).
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
