"""Noise pairing: couple each training image with a nearby noise vector (AOT, paper Sec. 4.2, Eq. 8).

EDM draws images y and noise eps independently. AOT draws a pool of N augmented images y'_i and N
i.i.d. noises eps_j ~ N(0, I), solves the linear assignment problem

    pi* = argmin_pi sum_i W_{i, pi(i)},    W_ij = ||eps_j - y'_i||_2   (unsquared L2, flattened vectors)

exactly, and trains on the pairs (y'_i, eps'_i) with eps'_i = eps_{pi*(i)} (docs/method.md §1.2). The noise set
is only permuted, so its marginal stays N(0, I). For conditional models the assignment is solved per class
among the noises at that class's own positions (docs/method.md §1.3), so p(eps | label) stays N(0, I) too.

The caller draws the noise with its own generator; everything here is deterministic. Cost matrices are
built in float32 on the images' device (all classes' blocks into one buffer, copied to the CPU at once) and
solved on the CPU by an exact solver from ``aot.training.assignment``, the independent per-class problems in a few threads
where the host has cores to spare. ``BackgroundPairer`` runs the pairing of the next pool in a worker thread
(docs/method.md §1.7).
"""

from __future__ import annotations

import concurrent.futures
import time
from dataclasses import dataclass

import numpy as np
import torch

from aot.core.defaults import KNN_K
from aot.training.assignment import Solver, block_costs, check_permutation, resolve_solver

METHODS: tuple[str, ...] = ("none", "aot", "aot-sq", "immiscible", "knn")


# ----------------------------------------------------------------------------
# Cost matrices and index groups.


def assignment_groups(
    n: int, labels: torch.Tensor | None = None, micro_batch: int | None = None
) -> list[torch.Tensor]:
    """Index sets that are assigned independently: the pool, its classes, its micro-batches, or both.

    Parameters
    ----------
    n : int
        Pool size N.
    labels : Tensor, shape (N,), int, optional
        Class indices; each class forms its own group (docs/method.md §1.3). Absent classes give no group.
    micro_batch : int, optional
        Split the pool into consecutive chunks of this size (the last one may be shorter).

    Returns
    -------
    groups : list of Tensor, each shape (n_g,), int64 on the CPU, ascending; together a partition of range(N).
    """
    step = n if micro_batch is None else micro_batch
    groups = []
    for start in range(0, n, step):
        chunk = torch.arange(start, min(start + step, n))
        if labels is None:
            groups.append(chunk)
            continue
        chunk_labels = labels[start : start + step].cpu()
        order = torch.argsort(chunk_labels, stable=True)  # ascending positions within each class
        counts = torch.unique_consecutive(chunk_labels[order], return_counts=True)[1]
        groups.extend(chunk[idx] for idx in torch.split(order, counts.tolist()))
    return groups


# ----------------------------------------------------------------------------
# Public API.


@dataclass(frozen=True)
class Pairing:
    """Result of ``pair_noise``; tensors live on the noise's device."""

    noise: torch.Tensor  # (N, C, H, W): noise[i] is the noise paired with images[i]
    perm: torch.Tensor | None  # (N,) int64, noise == drawn[perm] for permutation methods; None for knn
    mean_dist_paired: float  # mean_i ||images[i] - noise[i]||_2 over flattened vectors
    mean_dist_independent: float  # mean_i ||images[i] - drawn[i]||_2 (EDM's independent pairing)
    cost_seconds: float  # time building cost matrices (including the copy to the CPU)
    solve_seconds: float  # time in the assignment solver(s)


def noise_shape(method: str, images_shape: tuple[int, ...], knn_k: int = KNN_K) -> tuple[int, ...]:
    """Shape of the i.i.d. N(0, I) noise the caller must draw: ``images_shape``, or (knn_k, *images_shape)."""
    _check_method(method)
    if method != "knn":
        return tuple(images_shape)
    if knn_k < 1:
        raise ValueError(f"knn_k must be >= 1, got {knn_k}")
    return (knn_k, *images_shape)


def pair_noise(
    images: torch.Tensor,
    noise: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    method: str = "aot",
    per_class: bool = False,
    micro_batch: int | None = None,
    block: int | None = None,
    solver: str = "auto",
    threads: int | None = None,
) -> Pairing:
    """Pair a pool of images with pre-drawn Gaussian noise (AOT, paper Eq. 8 and Alg. 1-2).

    Parameters
    ----------
    images : Tensor, shape (N, C, H, W)
        Augmented training images in [-1, 1].
    noise : Tensor, shape noise_shape(method, images.shape, knn_k)
        I.i.d. N(0, I) draws, on the images' device: (N, C, H, W), or (knn_k, N, C, H, W) for ``"knn"``.
    labels : Tensor, shape (N,), int64, optional
        Class indices; required when ``per_class``.
    method : str
        ``"none"``: identity (EDM). ``"aot"``: exact assignment on unsquared L2 (the paper).
        ``"aot-sq"``: exact assignment on squared L2 (minibatch OT-CFM's cost).
        ``"immiscible"``: exact assignment (unsquared L2) within consecutive micro-batches of size
        ``micro_batch`` only (Immiscible Diffusion). ``"knn"``: image i takes the nearest of its own
        candidates noise[:, i] (Improved Immiscible Diffusion). knn is *not* a permutation: the
        selected noise is biased toward its image, so the noise marginal is only approximately N(0, I).
    per_class : bool
        Solve one assignment per class among the noises at that class's positions (docs/method.md §1.3).
        Has no effect for ``"none"`` and ``"knn"``, whose candidates are already private to each image.
    micro_batch : int, optional
        Chunk size for ``"immiscible"`` (required there, ignored otherwise).
    block : int, optional
        ``"aot"`` / ``"aot-sq"``: solve the assignment within consecutive blocks of this many images only (the
        coupling-strength axis: fewer candidate noises per image pull less); ``None`` = the whole pool.
    solver : str
        A key of ``SOLVERS`` or ``"auto"`` (the fastest exact solver installed).
    threads : int, optional
        Solve independent groups (classes, micro-batches) in this many threads; the solvers release the
        GIL. ``None``: ``default_solve_threads()``. The result does not depend on it.

    Returns
    -------
    Pairing
    """
    _check_method(method)
    solve = resolve_solver(solver)
    _check_inputs(images, noise, labels, method, per_class, micro_batch)
    _check_block(method, block)
    _check_threads(threads)
    if method == "none":
        return _pair_identity(images, noise)
    if method == "knn":
        return _pair_knn(images, noise)
    groups = assignment_groups(
        images.shape[0],
        labels if per_class else None,
        micro_batch if method == "immiscible" else block,
    )
    threads = default_solve_threads() if threads is None else threads
    return _pair_by_assignment(
        images, noise, groups, squared=(method == "aot-sq"), solve=solve, threads=threads
    )


def default_solve_threads() -> int:
    """Threads for the per-group solves: half of torch's intra-op threads, at most 4, at least 1.

    The pairing runs beside training (``BackgroundPairer``), so it takes a minority share of the threads the
    process was given (``torch.set_num_threads``, ``python -m aot train --threads``): 1 on a 2-core box or a
    1-thread job, where a second solver thread would only compete with the training step; 4 on a 16-core GPU
    host, where the ten ~205-image per-class problems of a 2048 pool then run 4 at a time.
    """
    return max(1, min(4, torch.get_num_threads() // 2))


class BackgroundPairer:
    """Runs pair_noise in one worker thread so the next pool's assignment overlaps training (docs/method.md §1.7).

    Results come back in submission order. The exact solvers release the GIL, so the main thread keeps
    training while the worker solves. On a GPU the worker issues the cost-matrix kernels on its current
    stream (the default stream), so they run after whatever the caller queued before ``submit``.
    Do not modify ``images``, ``noise`` or ``labels`` in place until their future is done.
    """

    def __init__(
        self,
        *,
        method: str = "aot",
        per_class: bool = False,
        micro_batch: int | None = None,
        block: int | None = None,
        solver: str = "auto",
        threads: int | None = None,
    ) -> None:
        _check_method(method)
        resolve_solver(solver)
        _check_micro_batch(method, micro_batch)
        _check_block(method, block)
        _check_threads(threads)
        self.pair_kwargs = dict(
            method=method, per_class=per_class, micro_batch=micro_batch, block=block, solver=solver, threads=threads
        )
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="aot-pairing"
        )

    def submit(
        self, images: torch.Tensor, noise: torch.Tensor, labels: torch.Tensor | None = None
    ) -> concurrent.futures.Future[Pairing]:
        """Queue one pool; the future's result is ``pair_noise(images, noise, labels, **pair_kwargs)``."""
        return self._executor.submit(pair_noise, images, noise, labels, **self.pair_kwargs)

    def close(self) -> None:
        """Finish the queued pools and stop the worker."""
        self._executor.shutdown(wait=True)

    def __enter__(self) -> BackgroundPairer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# ----------------------------------------------------------------------------
# Pairing methods.


def _pair_identity(y: torch.Tensor, eps: torch.Tensor) -> Pairing:
    """EDM's independent pairing: eps'_i = eps_i."""
    t0 = time.perf_counter()
    d = torch.linalg.vector_norm((y - eps).flatten(1).float(), dim=1).mean().item()
    perm = torch.arange(y.shape[0], device=eps.device)
    return Pairing(eps, perm, d, d, time.perf_counter() - t0, 0.0)


def _pair_knn(y: torch.Tensor, eps_k: torch.Tensor) -> Pairing:
    """Nearest of k private candidates: eps'_i = eps_k[j*(i), i], j*(i) = argmin_j ||eps_k[j, i] - y_i||."""
    t0 = time.perf_counter()
    # d[j, i] = ||eps_k[j, i] - y_i||, one candidate row at a time to keep memory at one (N, D) temporary.
    d = torch.stack([torch.linalg.vector_norm((e - y).flatten(1).float(), dim=1) for e in eps_k])  # (k, N)
    j = d.argmin(0)  # (N,), first candidate on ties
    i = torch.arange(y.shape[0], device=eps_k.device)
    noise = eps_k[j.to(eps_k.device), i]
    mean_paired, mean_independent = d[j, i.to(d.device)].mean().item(), d[0].mean().item()
    return Pairing(noise, None, mean_paired, mean_independent, time.perf_counter() - t0, 0.0)


def _pair_by_assignment(
    y: torch.Tensor, eps: torch.Tensor, groups: list[torch.Tensor], squared: bool, solve: Solver, threads: int
) -> Pairing:
    """Exact assignment within each index group; perm[idx_g] = idx_g[col_g]."""
    n = y.shape[0]
    # Cost matrices: every group's block in one device buffer, then one copy to the CPU.
    t0 = time.perf_counter()
    order = torch.cat(groups)  # (N,): the pool's positions, group after group
    sizes = [len(idx) for idx in groups]
    W_flat = block_costs(y, eps, groups, sizes, squared).cpu().numpy()
    ends = np.cumsum([k * k for k in sizes])
    Ws = [W_flat[end - k * k : end].reshape(k, k) for k, end in zip(sizes, ends, strict=True)]
    t1 = time.perf_counter()

    # Exact assignment per group.
    cols = _solve_groups(solve, Ws, threads)
    t2 = time.perf_counter()

    # Assemble the permutation: row i of group g sits at position order[off_g + i] and takes the noise at
    # order[off_g + col_g[i]]. Distances come from the same cost entries.
    offsets = np.repeat(np.cumsum([0, *sizes[:-1]]), sizes)  # (N,) off_g of each sorted slot
    order = order.numpy()
    perm = np.empty(n, dtype=np.int64)
    perm[order] = order[offsets + np.concatenate(cols)]
    d_paired = np.concatenate([W[np.arange(len(col)), col] for W, col in zip(Ws, cols, strict=True)])
    d_independent = np.concatenate([np.diagonal(W) for W in Ws])
    d_paired, d_independent = d_paired.astype(np.float64), d_independent.astype(np.float64)
    if squared:
        d_paired, d_independent = np.sqrt(d_paired), np.sqrt(d_independent)
    perm = torch.from_numpy(perm).to(eps.device)
    noise = eps.index_select(0, perm)  # = eps[perm]; index_select is 2-3x faster on the CPU
    return Pairing(noise, perm, float(d_paired.mean()), float(d_independent.mean()), t1 - t0, t2 - t1)


def _solve_groups(solve: Solver, Ws: list[np.ndarray], threads: int) -> list[np.ndarray]:
    """Solve the independent problems Ws, in ``threads`` threads when there are several (largest first)."""
    if threads <= 1 or len(Ws) <= 1:
        return [check_permutation(solve, W) for W in Ws]
    largest_first = sorted(range(len(Ws)), key=lambda g: -Ws[g].shape[0])
    with concurrent.futures.ThreadPoolExecutor(min(threads, len(Ws)), thread_name_prefix="aot-solve") as pool:
        futures = {g: pool.submit(check_permutation, solve, Ws[g]) for g in largest_first}
        return [futures[g].result() for g in range(len(Ws))]


# ----------------------------------------------------------------------------
# Argument checks: unknown names and bad shapes raise ValueError naming the argument.


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method={method!r} is unknown; valid choices: {', '.join(METHODS)}")


def _check_block(method: str, block: int | None) -> None:
    if block is None:
        return
    if method not in ("aot", "aot-sq"):
        raise ValueError(f"block is for method 'aot' or 'aot-sq', got method={method!r}")
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise ValueError(f"block must be a positive int, got {block!r}")


def _check_micro_batch(method: str, micro_batch: int | None) -> None:
    if method == "immiscible" and micro_batch is None:
        raise ValueError("micro_batch is required for method='immiscible'")
    if micro_batch is not None and (
        isinstance(micro_batch, bool) or not isinstance(micro_batch, int) or micro_batch < 1
    ):
        raise ValueError(f"micro_batch must be a positive int, got {micro_batch!r}")


def _check_threads(threads: int | None) -> None:
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive int or None, got {threads!r}")


def _check_inputs(
    images: torch.Tensor,
    noise: torch.Tensor,
    labels: torch.Tensor | None,
    method: str,
    per_class: bool,
    micro_batch: int | None,
) -> None:
    _check_micro_batch(method, micro_batch)
    if images.ndim < 2 or images.shape[0] == 0:
        raise ValueError(f"images must have shape (N, C, H, W) with N >= 1, got {tuple(images.shape)}")
    if not images.is_floating_point() or not noise.is_floating_point():
        raise ValueError(f"images and noise must be floating point, got {images.dtype} and {noise.dtype}")
    if method == "knn":
        ok = noise.ndim == images.ndim + 1 and noise.shape[0] >= 1 and noise.shape[1:] == images.shape
        expected = f"(knn_k, {', '.join(map(str, images.shape))})"
    else:
        ok = noise.shape == images.shape
        expected = str(tuple(images.shape))
    if not ok:
        raise ValueError(f"noise has shape {tuple(noise.shape)}; method={method!r} expects {expected}")
    if noise.device != images.device:
        raise ValueError(f"noise is on {noise.device} but images are on {images.device}")
    if per_class and labels is None:
        raise ValueError("per_class=True requires labels")
    if labels is not None:
        if labels.shape != images.shape[:1] or labels.is_floating_point() or labels.is_complex():
            raise ValueError(
                f"labels must be integer class indices of shape ({images.shape[0]},), "
                f"got {labels.dtype} of shape {tuple(labels.shape)}"
            )
