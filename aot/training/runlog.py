"""The training run's resumable bookkeeping: the epoch-permutation pool sampler (its state saved with the run), each
pool's record, the current tick's losses and timings, the per-tick log (``log.jsonl``, rebuilt from the saved state when
it is cut or torn), the progress bar and the run summary."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from aot.core.artifacts import reading
from aot.core.checkpoint import atomic_write_text
from aot.training.spec import TrainSpec

LOG_FIX = "delete the run folder's training-state.pt and log.jsonl to restart that run from scratch"


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


def pool_record(cur_nimg: int, pair, wait: float) -> dict:
    """The run's history entry for one pool: its pairing's statistics (an aot.training.pairing.Pairing) and how long
    the loop waited for it."""
    return dict(kimg=cur_nimg / 1000, dist_paired=pair.mean_dist_paired, dist_independent=pair.mean_dist_independent,
                solve_s=pair.solve_seconds, cost_s=pair.cost_seconds, wait_s=wait)


class Ticker:
    """The current tick: where it started (images, time, pools), its micro-batches' losses (kept on the device, synced
    once at the tick's end), and the run's time waiting for the pairing and stepping since ``start``."""

    def __init__(self, cur_nimg: int, pools: int):
        self.start = self.tick_time = time.perf_counter()
        self.tick_nimg, self.tick_pool, self.losses = cur_nimg, pools, []
        self.wait_total, self.step_total = 0.0, 0.0

    def wait_for(self, future):
        """The future's result (a pool's pairing) and the seconds waited for it."""
        t0 = time.perf_counter()
        result = future.result()
        wait = time.perf_counter() - t0
        self.wait_total += wait
        return result, wait

    def due(self, cur_nimg: int, tick_kimg: float, total_nimg: int) -> bool:
        return cur_nimg - self.tick_nimg >= tick_kimg * 1000 or cur_nimg >= total_nimg

    def end(self, cur_nimg: int, history: list[dict]) -> dict:
        """The tick's log record; the next tick starts here."""
        now = time.perf_counter()
        rate = (cur_nimg - self.tick_nimg) / 1000 / max(now - self.tick_time, 1e-9)
        pools = history[self.tick_pool:] or history[-1:]  # the pools of this tick
        line = tick_line(cur_nimg, self.losses, pools, sec=now - self.start, kimg_per_s=rate,
                         wait_frac=self.wait_total / max(self.step_total + self.wait_total, 1e-9))
        self.tick_nimg, self.tick_time, self.losses, self.tick_pool = cur_nimg, now, [], len(history)
        return line


def tick_line(cur_nimg: int, losses: list[torch.Tensor], pools: list[dict], *, sec: float, kimg_per_s: float,
               wait_frac: float) -> dict:
    """One log.jsonl record: mean loss over the tick's micro-batches (one device sync), pairing stats of its pools."""
    return dict(kimg=round(cur_nimg / 1000, 3), loss=torch.stack(losses).mean().item(), sec=round(sec, 2),
                kimg_per_s=kimg_per_s,
                dist_paired=float(np.mean([h["dist_paired"] for h in pools])),
                dist_independent=float(np.mean([h["dist_independent"] for h in pools])),
                solve_ms=1000 * float(np.mean([h["solve_s"] for h in pools])),
                wait_frac=wait_frac)


def write_tick(path: Path, line: dict, bar) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(line) + "\n")
    msg = (f"kimg {line['kimg']:.1f}  loss {line['loss']:.4f}  {line['kimg_per_s']:.3f} kimg/s  "
           f"pair dist {line['dist_paired']:.3f} (indep {line['dist_independent']:.3f})  "
           f"solve {line['solve_ms']:.1f} ms/pool  wait {100 * line['wait_frac']:.2f}%")
    (bar.write(msg, file=sys.stderr) if bar is not None else log(msg))


def progress_bar(spec: TrainSpec, cur_nimg: int):
    """A tqdm bar in kimg, redrawn at most every second on a terminal and every 30 s in a log file."""
    from tqdm import tqdm

    return tqdm(total=spec.kimg, initial=cur_nimg / 1000, unit="kimg", desc=f"train {spec.pairing}",
                mininterval=1.0 if sys.stderr.isatty() else 30.0,
                bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} kimg [{elapsed}<{remaining}, {rate_fmt}]")


def restore_log(path: Path, ticks: list[dict], state_path: Path) -> None:
    """Set ``log.jsonl`` to the ticks saved with the state: those logged after it are redone, and a log cut or torn
    since (a kill mid-write, a copy cut short) is rebuilt from the state, with a line saying so. Each line is the
    same text as when it was first written (JSON floats round-trip)."""
    text = "".join(json.dumps(t) + "\n" for t in ticks)
    old = path.read_bytes() if path.exists() else b""
    if not old.startswith(text.encode()):
        log(f"{path}: its ticks up to {ticks[-1]['kimg'] if ticks else 0:g} kimg were cut or torn; rebuilt its "
            f"{len(ticks)} ticks from {state_path}")
    if old != text.encode():
        atomic_write_text(path, text)


def truncate_log(path: Path, kimg: float) -> list[dict]:
    """Drop the log's ticks after ``kimg`` (they are redone) and return those kept: for a state without its ticks."""
    if not path.exists():
        return []
    with reading(path, "training log", fix=LOG_FIX):
        keep = [x for x in path.read_text().splitlines() if x.strip() and json.loads(x)["kimg"] <= kimg + 1e-9]
    path.write_text("".join(k + "\n" for k in keep))
    return [json.loads(k) for k in keep]


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


def log(msg: str, rank: int = 0) -> None:
    if rank == 0:
        print(msg, file=sys.stderr, flush=True)
