"""Benchmark: the AOT paper's pairing recipe against aot.training.pairing.pair_noise, side by side on the same pools.

The paper's recipe (AOT code, docs/method.md §1.2): torch.cdist in float32 -> numpy -> float64
scipy.optimize.linear_sum_assignment, one solve per class in the conditional case (docs/method.md §1.3).
In the per-class case the AOT code as shipped (``assignment_problem_label``: the same recipe wrapped in Python
loops over the pool) is timed too, as "paper code as shipped"; the "paper" columns are the recipe with that glue
vectorised, the stricter baseline. Ours: aot.training.pairing.pair_noise(method="aot", solver=...). All see the same
images and noise; their assignments are scored on one float64 cost matrix, so "same optimum" is checked exactly.

Run from the repository root (with the package installed, or PYTHONPATH=.):

    python bench/pairing.py                      # N = 256..2048 and the per-class 2048/10 case, digits data
    python bench/pairing.py --full               # adds N = 4096 (scipy needs 20-45 s per pool there)
    python bench/pairing.py --sizes 512,2048 --data gauss --device cuda

This is a script, never a test.
"""

from __future__ import annotations

import argparse
import functools
import math
import platform
import statistics
import time

import numpy as np
import scipy
import scipy.optimize
import torch
import torch.nn.functional as F

from aot.training.assignment import SOLVERS, resolve_solver
from aot.training.pairing import pair_noise

# ----------------------------------------------------------------------------
# Data: digits upsampled to 3x32x32 (as pairing-bench.md), or a Gaussian control.


def digits_pool(n: int, generator: torch.Generator, res: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """N sklearn digits in [-1, 1], bilinearly upsampled to 3 x res x res, random gain and shift per image."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    idx = torch.randint(0, len(digits.images), (n,), generator=generator)
    x = torch.as_tensor(digits.images, dtype=torch.float32)[idx] / 8 - 1  # (N, 8, 8) in [-1, 1]
    x = F.interpolate(x[:, None], size=(res, res), mode="bilinear", align_corners=False)  # (N, 1, res, res)
    gain = 0.6 + 0.4 * torch.rand((n, 3, 1, 1), generator=generator)
    x = (x + 1) * gain - 1  # (N, 3, res, res), still in [-1, 1]
    shifts = torch.randint(-res // 16, res // 16 + 1, (n, 2), generator=generator)
    x = torch.stack([xi.roll(tuple(s.tolist()), dims=(1, 2)) for xi, s in zip(x, shifts, strict=True)])
    return x, torch.as_tensor(digits.target, dtype=torch.int64)[idx]


def gauss_pool(n: int, generator: torch.Generator, res: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Control: x ~ N(0, 0.5^2 I), labels uniform over 10 classes."""
    x = 0.5 * torch.randn((n, 3, res, res), generator=generator)
    return x, torch.randint(0, 10, (n,), generator=generator)


DATA = {"digits": digits_pool, "gauss": gauss_pool}

# ----------------------------------------------------------------------------
# The two pipelines.


def paper_recipe(y: torch.Tensor, eps: torch.Tensor, labels: torch.Tensor | None) -> dict:
    """AOT code's pairing: cdist fp32 on the device -> CPU numpy -> scipy LSA, per class if labels given."""
    n = y.shape[0]
    groups = (
        [torch.arange(n)]
        if labels is None
        else [torch.nonzero(labels.cpu() == c)[:, 0] for c in labels.unique().cpu()]
    )
    t0 = time.perf_counter()
    Ws = [torch.cdist(y[idx].flatten(1), eps[idx].flatten(1)).cpu().numpy() for idx in groups]
    t1 = time.perf_counter()
    perm = np.empty(n, dtype=np.int64)
    for idx, W in zip(groups, Ws, strict=True):
        col = scipy.optimize.linear_sum_assignment(W)[1]
        perm[idx.numpy()] = idx.numpy()[col]
    t2 = time.perf_counter()
    noise = eps[torch.from_numpy(perm).to(eps.device)]
    _sync(eps.device)
    t3 = time.perf_counter()
    return dict(cost=t1 - t0, solve=t2 - t1, total=t3 - t0, perm=perm, noise=noise)


def paper_code_per_class(y: torch.Tensor, eps: torch.Tensor, labels: torch.Tensor) -> dict:
    """The AOT code's per-class pairing as shipped (training/loss.py, ``assignment_problem_label``), step by step.

    Same recipe as ``paper_recipe`` with labels, plus the shipped glue: one-hot labels, a Python loop over the
    pool building each class's index list (indexing a list with a 0-d tensor element: a device sync per image on
    a GPU), per-class cdist on list-indexed rows, and a second loop that pops each class's assignment from the
    front of a NumPy array (O(N x class size) copies) before gathering the noise with a Python list.
    Re-written here for timing; the output equals ``paper_recipe``'s (checked in ``run_case``).
    """
    n, num_classes = y.shape[0], int(labels.max()) + 1
    t0 = time.perf_counter()
    onehot = F.one_hot(labels, num_classes)  # the shipped code receives one-hot labels ...
    label_of = torch.argmax(onehot, 1)  # ... and recovers the class indices
    members: list[list[int]] = [[] for _ in range(num_classes)]
    for i in range(n):
        members[label_of[i]].append(i)
    y_flat, eps_flat = y.reshape(n, -1), eps.reshape(n, -1)
    cols = []
    for c in range(num_classes):
        W = torch.cdist(y_flat[members[c]], eps_flat[members[c]]).detach().cpu().numpy()
        cols.append(scipy.optimize.linear_sum_assignment(W)[1])
    chosen = [0] * n
    for i in range(n):
        c = label_of[i]
        chosen[i] = members[c][cols[c][0]]
        cols[c] = cols[c][1:]
    noise = eps[chosen]
    _sync(eps.device)
    return dict(total=time.perf_counter() - t0, perm=np.asarray(chosen, dtype=np.int64), noise=noise)


def ours(y: torch.Tensor, eps: torch.Tensor, labels: torch.Tensor | None, solver: str) -> dict:
    t0 = time.perf_counter()
    p = pair_noise(y, eps, labels, method="aot", per_class=labels is not None, solver=solver)
    _sync(eps.device)
    total = time.perf_counter() - t0
    return dict(cost=p.cost_seconds, solve=p.solve_seconds, total=total, perm=p.perm.cpu().numpy(), pairing=p)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------
# One table row: several instances (pools), each solved by both pipelines in alternating order.


def run_case(n: int, per_class: bool, args: argparse.Namespace, device: torch.device) -> dict:
    rows = []
    for instance in range(args.instances):
        g = torch.Generator().manual_seed(1000 * n + instance)
        y, labels = DATA[args.data](n, g)
        eps = torch.randn(y.shape, generator=g)
        y, eps, labels = y.to(device), eps.to(device), labels.to(device)
        lab = labels if per_class else None
        for rep in range(args.repeats):
            order = [
                ("paper", functools.partial(paper_recipe, y, eps, lab)),
                ("ours", functools.partial(ours, y, eps, lab, args.solver)),
            ]
            if per_class:
                order.append(("shipped", functools.partial(paper_code_per_class, y, eps, lab)))
            if (instance + rep) % 2:
                order.reverse()
            res = {name: fn() for name, fn in order}
            if per_class:  # the shipped code computes the paper recipe's pairing
                assert np.array_equal(res["shipped"]["perm"], res["paper"]["perm"])
            # Score both assignments on one float64 cost (exact distances, no norm trick).
            W = torch.cdist(y.flatten(1).double().cpu(), eps.flatten(1).double().cpu()).numpy()
            cost = {k: W[np.arange(n), res[k]["perm"]] for k in ("paper", "ours")}
            if per_class:  # both must stay within classes
                lab_np = labels.cpu().numpy()
                assert all((lab_np[res[k]["perm"]] == lab_np).all() for k in ("paper", "ours"))
            rows.append(
                dict(
                    paper_cost=res["paper"]["cost"],
                    paper_solve=res["paper"]["solve"],
                    paper_total=res["paper"]["total"],
                    ours_cost=res["ours"]["cost"],
                    ours_solve=res["ours"]["solve"],
                    ours_total=res["ours"]["total"],
                    shipped_total=res["shipped"]["total"] if per_class else math.nan,
                    rel_diff=abs(cost["ours"].sum() - cost["paper"].sum()) / cost["paper"].sum(),
                    same_perm=bool((res["ours"]["perm"] == res["paper"]["perm"]).all()),
                    d_indep=float(np.diagonal(W).mean()),
                    d_paper=float(cost["paper"].mean()),
                    d_ours=float(cost["ours"].mean()),
                )
            )
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0] if k not in ("rel_diff", "same_perm")}
    med["ratio"] = statistics.median(r["paper_total"] / r["ours_total"] for r in rows)
    med["shipped_ratio"] = statistics.median(r["shipped_total"] / r["ours_total"] for r in rows)
    med["rel_diff"] = max(r["rel_diff"] for r in rows)
    med["same_perm"] = sum(r["same_perm"] for r in rows)
    med["runs"] = len(rows)
    return med


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "cpu"


def fmt_s(t: float) -> str:
    return f"{t * 1e3:.1f} ms" if t < 1 else f"{t:.2f} s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--sizes", default="256,512,1024,2048", help="comma-separated pool sizes N (unconditional)"
    )
    ap.add_argument("--full", action="store_true", help="add N=4096 to --sizes")
    ap.add_argument("--no-per-class", action="store_true", help="skip the per-class 2048/10 case")
    ap.add_argument("--data", choices=sorted(DATA), default="digits")
    ap.add_argument("--device", default="cpu", help="where the cost matrices are built (cpu | cuda)")
    ap.add_argument("--solver", default="auto", help=f"our solver: auto | {' | '.join(SOLVERS)}")
    ap.add_argument("--instances", type=int, default=3, help="pools per size (different seeds)")
    ap.add_argument("--repeats", type=int, default=1, help="timed repeats per pool")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = ap.parse_args()

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but CUDA is not available")
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if args.full and 4096 not in sizes:
        sizes.append(4096)
    solver_name = next(k for k, v in SOLVERS.items() if v is resolve_solver(args.solver))

    # Warm up kernels and lazy imports on a small pool.
    g = torch.Generator().manual_seed(0)
    y, labels = DATA[args.data](64, g)
    for lab in (None, labels):
        paper_recipe(y.to(device), y.to(device), lab if lab is None else lab.to(device))
        ours(y.to(device), y.to(device), lab if lab is None else lab.to(device), args.solver)

    print(
        f"# AOT pairing: paper recipe (torch.cdist fp32 -> numpy -> scipy {scipy.__version__}) "
        f"vs aot.training.pairing (solver={args.solver} -> {solver_name})"
    )
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(
        f"# data={args.data} 3x32x32, cost matrices on {device} ({dev_name}); solvers on {cpu_name()}, "
        f"{torch.get_num_threads()} torch threads, {args.instances} pools x {args.repeats} repeats per row, "
        f"medians; torch {torch.__version__}"
    )
    print()
    print(
        "| N | classes | paper cost | paper solve | paper total | ours cost | ours solve | ours total | "
        "paper/ours | paper code as shipped | shipped/ours | same perm | max rel. cost diff | mean dist indep. | "
        "paper | ours | reduction |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    cases = [(n, False) for n in sizes] + ([] if args.no_per_class else [(2048, True)])
    for n, per_class in cases:
        r = run_case(n, per_class, args, device)
        print(
            f"| {n} | {10 if per_class else 1} | {fmt_s(r['paper_cost'])} | {fmt_s(r['paper_solve'])} | "
            f"{fmt_s(r['paper_total'])} | {fmt_s(r['ours_cost'])} | {fmt_s(r['ours_solve'])} | "
            f"{fmt_s(r['ours_total'])} | {r['ratio']:.1f}x | "
            + (f"{fmt_s(r['shipped_total'])} | {r['shipped_ratio']:.1f}x | " if per_class else "= recipe | | ")
            + f"{r['same_perm']}/{r['runs']} | "
            f"{r['rel_diff']:.1e} | {r['d_indep']:.3f} | {r['d_paper']:.3f} | {r['d_ours']:.3f} | "
            f"{100 * (1 - r['d_ours'] / r['d_indep']):.2f}% |",
            flush=True,
        )


if __name__ == "__main__":
    main()
