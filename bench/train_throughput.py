"""Training throughput, EDM (independent noise) vs AOT, side by side in one run (a script, never a test).

For each network size it trains a few pools with `pairing=none` and `pairing=aot` through the real training
loop (aot.training.loop.train: pools, background pairing, EMA) on CIFAR-shaped synthetic data, and prints steady-state
kimg/s (the last tick), the aot/none ratio, the loop's wait for pairing, the solver time per pool and, on CUDA,
the peak GPU memory.

    python bench/train_throughput.py                          # CPU: tiny and paper-size (a few steps) networks
    python bench/train_throughput.py --device cuda --cases paper --kimg 20 --batch 128
    python bench/train_throughput.py --cases paper --cond      # per-class pairing, pool 2048
    python bench/train_throughput.py --device cuda --cases paper --precision bf16   # train.precision
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from aot.data.sources import synthetic_dataset
from aot.models.networks import count_parameters
from aot.training.assignment import resolve_solver
from aot.training.loop import build_denoiser, train
from aot.training.spec import TrainSpec

CASES = {
    # name: (arch, network overrides)
    "tiny": ("ddpmpp", dict(model_channels=32, channel_mult=[1, 2, 2], channel_mult_emb=2, num_blocks=1,
                            attn_resolutions=[8], dropout=0.0)),
    "paper": ("ncsnpp", {}),  # EDM's CIFAR-10 NCSN++ as the AOT paper trains it (56.4M parameters)
}


def measure(case: str, pairing: str, args, ds) -> dict:
    arch, net = CASES[case]
    spec = TrainSpec(pairing=pairing, cond=args.cond, arch=arch, network=net, kimg=args.kimg, batch=args.batch,
                     pool=args.pool, lr=1e-3, lr_rampup_kimg=10, ema_halflife_kimg=500, augment_p=args.augment,
                     tick_kimg=args.kimg / 4, state_kimg=1e9, device=args.device, precision=args.precision)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as d:
        summary = train(spec, ds, run_dir=Path(d) / "run", out=Path(d) / "net.pt", stats_out=Path(d) / "s.json",
                        progress=False)
        ticks = [json.loads(line) for line in next(Path(d, "run").glob("*/log.jsonl")).read_text().splitlines()]
    params = count_parameters(build_denoiser(spec, ds.meta, ds.resolution, ds.channels)[0])
    out = dict(case=case, arch=arch, params=params, pairing=pairing, kimg_s=ticks[-1]["kimg_per_s"],
               kimg_s_all=summary["kimg_per_second_this_run"], wait_pct=100 * summary["wait_fraction"],
               solve_ms=1000 * summary["solve_seconds_mean"], reduction_pct=100 * summary["dist_reduction"])
    if args.device.startswith("cuda"):
        out["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--cases", default="tiny,paper")
    p.add_argument("--kimg", type=float, default=None, help="per run (default: 1.024 tiny CPU, 0.064 paper CPU)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--pool", type=int, default=None, help="AOT pool N (default 512, or 2048 with --cond)")
    p.add_argument("--cond", action="store_true", help="class-conditional, per-class pairing")
    p.add_argument("--augment", type=float, default=0.12, help="augment_p (EDM CIFAR-10: 0.12)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--precision", default="fp32", help="train.precision: fp32 (EDM's numerics) | tf32 | bf16")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.pool = args.pool or (2048 if args.cond else 512)
    ds = synthetic_dataset(n_train=max(4096, 2 * args.pool), n_test=64, channels=3, resolution=32)
    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    print(f"# device: {args.device} ({dev}), torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"batch {args.batch}, pool {args.pool}, cond {args.cond}, augment_p {args.augment}, "
          f"precision {args.precision}, "
          f"solver {resolve_solver('auto').__name__}")
    rows = []
    for case in args.cases.split(","):
        default_kimg = args.kimg or (1.024 if case == "tiny" or args.device != "cpu" else 0.064)
        kimg = max(default_kimg, args.pool / 1000)  # at least one pool, rounded to whole pools below
        args_case = argparse.Namespace(**{**vars(args), "kimg": round(kimg * 1000 / args.pool) * args.pool / 1000})
        for pairing in ("none", "aot"):
            t0 = time.perf_counter()
            rows.append(measure(case, pairing, args_case, ds))
            rows[-1]["wall_s"] = time.perf_counter() - t0
    print("| case | arch | params | pairing | kimg/s (last tick) | kimg/s (run) | aot/none | wait % | solve ms/pool"
          " | pair dist reduction % | peak GiB | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    base = {r["case"]: r["kimg_s"] for r in rows if r["pairing"] == "none"}
    for r in rows:
        ratio = r["kimg_s"] / base[r["case"]]
        print(f"| {r['case']} | {r['arch']} | {r['params'] / 1e6:.2f}M | {r['pairing']} | {r['kimg_s']:.3f} | "
              f"{r['kimg_s_all']:.3f} | {ratio:.3f} | {r['wait_pct']:.2f} | {r['solve_ms']:.1f} | "
              f"{r['reduction_pct']:.2f} | {r.get('peak_gib', float('nan')):.2f} | {r['wall_s']:.1f} |")


if __name__ == "__main__":
    main()
