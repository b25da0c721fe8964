"""Benchmark: training images/s with pairing="none" (EDM) against "aot", and the loop's stall on the pairing.

Each case trains the same tiny network with independent noise and with AOT pairing in the background thread
(docs/method.md §1.7), side by side in one process through ``aot.training.loop.train``, in ABBA order (none, aot, aot,
none; ``--long``: twice that) so a drift in machine load hits both methods alike. Reported, medians over runs:

* images/s: the loop's own ``kimg_per_second_this_run`` (wall clock). It includes the start-up pool, which
  is always waited for (nothing overlaps it), and the drain of the one pool prefetched past the end.
* aot/none: the ratio of those medians, with the range of the per-pair ratios (a noise gauge).
* step ms: the loop's mean optimizer-step time, step_time_total = wait_total (1 - f) / f with the summary's
  wait_fraction f and wait_total from the loop's per-pool history.
* wait per step, steady: the loop's wait on pools 2..K, over those pools' steps, and as a % of the mean step
  time. The acceptance criterion (< 1% with overlap) applies to this column. Max: the longest such wait.
* warm-up: the wait on pool 1 (the whole pairing of the first pool), reported separately. The summary's
  wait_fraction (all pools, warm-up included) is the last wait column.
* solver and cost ms per pool: ``Pairing.solve_seconds`` / ``cost_seconds``, measured in the worker thread.

Cases: (a) the embedded default (config/config.yaml: digits 8x8, its network, pool 512, batch 128), uncond
and cond; (b) paper-size pools of 3x32x32 data (``synthetic_dataset``, 4096 images), N=512 uncond and N=2048
cond (per-class, ~205 per class), batch 64, a tiny network so the step is short (the hardest case to hide a
pairing behind).

Run from the repository root (with the package installed, or PYTHONPATH=.):

    python bench/train_step.py            # --quick (default): a few pools per run, a few minutes on 2 cores
    python bench/train_step.py --long     # more pools per run, ABBA twice

This is a script, never a test. One torch thread (torch.set_num_threads(1)), CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import yaml

from aot.data.datasets import Dataset
from aot.data.sources import digits_dataset, synthetic_dataset
from aot.training import assignment, pairing
from aot.training.loop import train
from aot.training.spec import TrainSpec

ROOT = Path(__file__).resolve().parent.parent

# A tiny SongUNet for 3x32x32 (25k parameters, resolutions 32/16/8): the step stays short, so any stall shows.
# Three levels, not one: SongUNet always puts one attention block at its lowest resolution, and at 32x32 that
# block alone costs seconds per step on a CPU.
TINY_32 = dict(
    model_channels=8,
    channel_mult=[1, 1, 1],
    channel_mult_emb=1,
    num_blocks=1,
    attn_resolutions=[],
    dropout=0.0,
)


@dataclass(frozen=True)
class Case:
    name: str
    data: str  # "digits" | "synthetic"
    cond: bool
    pool: int
    batch: int
    network: dict
    pools: tuple[int, int]  # pools per run: (--quick, --long)


def embedded_network() -> tuple[str, dict]:
    """The embedded default's network (config/config.yaml: arch and overrides)."""
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    return cfg["network"]["arch"], dict(cfg["network"].get("overrides") or {})


def cases() -> list[Case]:
    _, digits_net = embedded_network()
    return [
        Case("digits N=512 uncond", "digits", False, 512, 128, digits_net, (3, 8)),
        Case("digits N=512 cond", "digits", True, 512, 128, digits_net, (3, 8)),
        Case("3x32x32 N=512 uncond", "synthetic", False, 512, 64, TINY_32, (3, 8)),
        Case("3x32x32 N=2048 cond", "synthetic", True, 2048, 64, TINY_32, (2, 4)),
    ]


# ----------------------------------------------------------------------------
# One training run and what the loop measured.


def run_once(case: Case, method: str, ds: Dataset, arch: str, pools: int) -> dict:
    """Train ``pools`` pools with ``method``; return the loop's summary plus its per-pool history."""
    kimg = pools * case.pool / 1000  # whole pools: the run ends on a pool boundary and dumps its history
    spec = TrainSpec(
        pairing=method,
        cond=case.cond,
        arch=arch,
        network=case.network,
        kimg=kimg,
        batch=case.batch,
        pool=case.pool,
        lr=2e-3,
        lr_rampup_kimg=5,
        ema_halflife_kimg=5,
        tick_kimg=1e6,
        state_kimg=1e6,
        seed=0,
        device="cpu",
    )
    with tempfile.TemporaryDirectory(prefix="aot-bench-") as tmp:
        tmp = Path(tmp)
        log = io.StringIO()
        with contextlib.redirect_stderr(log):  # the loop's tick line
            summary = train(
                spec,
                ds,
                run_dir=tmp / "runs",
                out=tmp / "net.pt",
                stats_out=tmp / "stats.json",
                progress=False,
            )
        history = _history(tmp / "runs")
    return dict(summary=summary, history=history, steps_per_pool=case.pool // case.batch)


def _history(run_dir: Path) -> list[dict] | None:
    """Per-pool records (wait_s, solve_s, cost_s) from the resumable state the loop writes at its end."""
    states = list(run_dir.glob("*/training-state.pt"))
    if len(states) != 1:
        return None
    state = torch.load(states[0], map_location="cpu", weights_only=True)
    return json.loads(state["history"]) if "history" in state else None


def metrics(run: dict) -> dict:
    """Throughput and stall figures of one run (see the module docstring)."""
    s, h, spp = run["summary"], run["history"], run["steps_per_pool"]
    images = s["kimg"] * 1000
    steps = round(images / (s["pool"] / spp))
    out = dict(
        img_s=s["kimg_per_second_this_run"] * 1000,
        solve_ms=1e3 * s["solve_seconds_mean"],
        wait_fraction=s["wait_fraction"],
    )
    if not h:
        return out
    wait = sum(p["wait_s"] for p in h)  # == the loop's wait_total
    f = s["wait_fraction"]
    step = wait * (1 - f) / f / steps if f > 0 else float("nan")  # the loop's step_time_total / steps
    steady_steps = steps - spp
    steady_wait = sum(p["wait_s"] for p in h[1:]) / steady_steps if steady_steps else float("nan")
    out.update(
        step_ms=1e3 * step,
        wait_step_ms=1e3 * steady_wait,
        wait_pct=100 * steady_wait / step,
        max_wait_ms=1e3 * max((p["wait_s"] for p in h[1:]), default=float("nan")),
        warmup_ms=1e3 * h[0]["wait_s"],
        cost_ms=1e3 * statistics.mean(p["cost_s"] for p in h),
    )
    return out
    wait = sum(p["wait_s"] for p in h)  # == the loop's wait_total
    f = s["wait_fraction"]
    step_total = wait * (1 - f) / f if f > 0 else float("nan")  # the loop's step_time_total
    step = step_total / steps
    steady_steps = steps - spp
    steady_wait = sum(p["wait_s"] for p in h[1:]) / steady_steps if steady_steps else float("nan")
    out.update(
        img_s_loop=images / (step_total + wait),
        step_ms=1e3 * step,
        wait_step_ms=1e3 * steady_wait,
        wait_pct=100 * steady_wait / step,
        warmup_ms=1e3 * h[0]["wait_s"],
        cost_ms=1e3 * statistics.mean(p["cost_s"] for p in h),
        max_wait_ms=1e3 * max((p["wait_s"] for p in h[1:]), default=float("nan")),
    )
    return out


# ----------------------------------------------------------------------------
# Table.


def fmt(x: float | None, spec: str) -> str:
    return "n/a" if x is None or x != x else format(x, spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    length = ap.add_mutually_exclusive_group()
    length.add_argument("--quick", action="store_true", help="a few pools per run (the default)")
    length.add_argument("--long", action="store_true", help="more pools per run, ABBA twice")
    ap.add_argument("--cases", default="all", help="comma-separated case numbers 1-4, or 'all'")
    args = ap.parse_args()

    torch.set_num_threads(1)
    arch, _ = embedded_network()
    todo = cases() if args.cases == "all" else [cases()[int(i) - 1] for i in args.cases.split(",")]
    order = ["none", "aot", "aot", "none"] * (2 if args.long else 1)  # ABBA
    datasets = {
        "digits": digits_dataset(),
        "synthetic": synthetic_dataset(n_train=4096, channels=3, resolution=32),
    }
    print(
        f"# training throughput, pairing none vs aot (background thread, solver "
        f"{assignment.resolve_solver('auto').__name__}, {pairing.default_solve_threads()} solve thread(s)); "
        f"{'--long' if args.long else '--quick'}: {len(order)} runs per case in ABBA order, medians"
    )
    print(f"# {_cpu_name()}, {torch.get_num_threads()} torch thread, torch {torch.__version__}; arch {arch}")
    print()
    print(
        "| case | method | pools x steps | images/s | aot/none (pair range) | step ms | wait/step ms, steady "
        "| % of step | max wait ms | warm-up wait ms (pool 1) | wait_fraction (all) | solver ms/pool "
        "| cost ms/pool |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    t_start = time.perf_counter()
    for case in todo:
        ds = datasets[case.data]
        pools = case.pools[1] if args.long else case.pools[0]
        train_once_warm(case, ds, arch)
        res: dict[str, list[dict]] = {"none": [], "aot": []}
        for method in order:
            res[method].append(metrics(run_once(case, method, ds, arch, pools)))
        pair_ratios = [a["img_s"] / n["img_s"] for a, n in zip(res["aot"], res["none"], strict=True)]
        med = {m: _median(rs) for m, rs in res.items()}
        for method in ("none", "aot"):
            r, aot = med[method], method == "aot"
            ratio = r["img_s"] / med["none"]["img_s"]
            cells = [
                case.name,
                method,
                f"{pools} x {case.pool // case.batch}",
                f"{r['img_s']:.0f}",
                f"{ratio:.3f} ({min(pair_ratios):.2f}-{max(pair_ratios):.2f})" if aot else "",
                fmt(r.get("step_ms"), ".1f"),
                fmt(r.get("wait_step_ms"), ".4f"),
                fmt(r.get("wait_pct"), ".4f") + "%",
                fmt(r.get("max_wait_ms"), ".2f"),
                fmt(r.get("warmup_ms"), ".1f"),
                f"{100 * r['wait_fraction']:.3f}%",
                fmt(r["solve_ms"], ".1f") if aot else "",
                fmt(r.get("cost_ms"), ".1f") if aot else "",
            ]
            print("| " + " | ".join(cells) + " |", flush=True)
    print(f"\n# total {time.perf_counter() - t_start:.0f} s")


def train_once_warm(case: Case, ds: Dataset, arch: str) -> None:
    """One short pool (one step) of each method first, untimed: lazy imports, allocator and kernel warm-up."""
    for method in ("none", "aot"):
        run_once(replace(case, pool=case.batch), method, ds, arch, pools=1)


def _median(runs: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "cpu"


if __name__ == "__main__":
    main()
