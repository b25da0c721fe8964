"""AOT's assignment problem: cost matrices (W_ij = ||eps_j - y_i||_2, every class's block in one buffer) and the
exact linear-assignment solvers, square cost W (n, n) -> col (n,) int64, row i takes column col[i]. ``SOLVERS``
holds those installed (``lapjv``'s Jonker-Volgenant, 8-20x faster than scipy's, and scipy's
``linear_sum_assignment``); ``"auto"`` picks the fastest installed (docs/performance.md, bench/pairing.py).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.optimize
import torch

try:  # fast exact Jonker-Volgenant solver (PyPI `lapjv`); it releases the GIL while solving
    import lapjv as _lapjv
except ImportError:  # pragma: no cover - exercised only where lapjv is missing
    _lapjv = None

Solver = Callable[[np.ndarray], np.ndarray]

# ----------------------------------------------------------------------------
# Exact linear-assignment solvers.


def solve_scipy(W: np.ndarray) -> np.ndarray:
    """Exact LSA with ``scipy.optimize.linear_sum_assignment`` in float64 (the AOT code's solver)."""
    if W.shape[0] == 0:
        return np.empty(0, dtype=np.int64)
    rows, col = scipy.optimize.linear_sum_assignment(np.asarray(W, dtype=np.float64))
    return col.astype(np.int64)  # square problem: rows == arange(n)


def solve_lapjv(W: np.ndarray) -> np.ndarray:
    """Exact LSA with PyPI ``lapjv`` (AVX2 Jonker-Volgenant) on float32 input; releases the GIL.

    Each row's mean is subtracted first. That shifts every assignment's total by the same constant, so the
    optimum is unchanged (the float32 subtraction is exact while a row's entries lie within a factor 2 of
    its mean, as distances between 3072-dim images and noise do), and it gives JV's initial column
    reduction better starting duals when rows (images) differ in norm. Measured on one Xeon core:
    1.45-1.75x faster on digits at N = 512-4096, 1.1-1.5x on Gaussian data (row minima: 1.2-1.4x).
    """
    n = W.shape[0]
    if n <= 1:  # lapjv rejects 0x0 and returns sentinel duals for 1x1
        return np.zeros(n, dtype=np.int64)
    W = np.asarray(W, dtype=np.float32)
    col = _lapjv.lapjv(np.ascontiguousarray(W - W.mean(axis=1, keepdims=True, dtype=np.float32)))[0]
    return col.astype(np.int64)


SOLVERS: dict[str, Solver] = {"scipy": solve_scipy}
if _lapjv is not None:
    SOLVERS["lapjv"] = solve_lapjv

# Fastest first; "auto" picks the first one installed (measured in bench/pairing.py).
_SOLVER_PREFERENCE: tuple[str, ...] = ("lapjv", "scipy")


def resolve_solver(solver: str) -> Solver:
    """Map a solver name (a key of ``SOLVERS`` or ``"auto"``) to its function."""
    if solver == "auto":
        solver = next(name for name in _SOLVER_PREFERENCE if name in SOLVERS)
    if solver not in SOLVERS:
        raise ValueError(f"solver={solver!r} is unknown; valid choices: {', '.join(['auto', *SOLVERS])}")
    return SOLVERS[solver]


def check_permutation(solve: Solver, W: np.ndarray) -> np.ndarray:
    """Run ``solve`` on W and check that it returned a permutation (guards solver bugs on odd input)."""
    col = solve(W)
    n = W.shape[0]
    if col.shape != (n,) or not np.array_equal(np.sort(col), np.arange(n)):
        raise RuntimeError(f"assignment solver returned an invalid permutation for a {n}x{n} cost matrix")
    return col


def cost_matrix(y: torch.Tensor, eps: torch.Tensor, squared: bool = False) -> torch.Tensor:
    """Pairwise cost W_ij = ||eps_j - y_i||_2 (paper Eq. 8), or its square, in float32.

    Parameters
    ----------
    y : Tensor, shape (N, *dims)
        Images (rows of W).
    eps : Tensor, shape (M, *dims)
        Noises (columns of W), on the same device as ``y``.
    squared : bool
        Return ||eps_j - y_i||_2^2 instead.

    Returns
    -------
    W : Tensor, shape (N, M), float32, on ``y``'s device.
    """
    y = y.flatten(1).float()  # (N, D)
    eps = eps.flatten(1).float()  # (M, D)
    W = torch.empty((y.shape[0], eps.shape[0]), dtype=torch.float32, device=y.device)
    _squared_distances(y, eps, _squared_norms(y), _squared_norms(eps), out=W)
    W.clamp_(min=0)  # cancellation can dip below zero; clamped so the sqrt gives no NaN
    return W if squared else W.sqrt_()


def _squared_norms(x: torch.Tensor) -> torch.Tensor:
    """||x_i||^2 of the rows of x (N, D) -> (N,), in one fused pass."""
    return torch.linalg.vector_norm(x, dim=1).square_()


def _squared_distances(
    y: torch.Tensor, eps: torch.Tensor, y_sq: torch.Tensor, eps_sq: torch.Tensor, out: torch.Tensor
) -> torch.Tensor:
    """out_ij = ||y_i||^2 + ||eps_j||^2 - 2 y_i . eps_j (one GEMM), before clamping; returns out."""
    torch.addmm(y_sq[:, None], y, eps.T, alpha=-2, out=out)
    return out.add_(eps_sq)


def block_costs(
    y: torch.Tensor, eps: torch.Tensor, groups: list[torch.Tensor], sizes: list[int], squared: bool
) -> torch.Tensor:
    """Each group's cost matrix among the images and noises at its positions, concatenated and flattened.

    Groups that are consecutive position ranges (one pool, micro-batches) are used in place. Otherwise (classes)
    each group's rows are gathered into two small buffers reused from group to group: gathering the whole pool
    into group order instead costs two pool-sized allocations, whose first-touch page faults took as long as
    the GEMMs themselves on a 2-core VM (29 vs 55 ms for 2048 per class). Each block is one GEMM written straight
    into its slice of the output. Same arithmetic as ``cost_matrix`` per group.

    Raises ValueError, before any GEMM, if the images or noise hold a NaN or an infinity: every non-finite
    input makes its row's squared norm non-finite, and finite norms bound every product |y_i . eps_j| by
    Cauchy-Schwarz, so this one check on 2N numbers stands for the whole matrix.

    Returns
    -------
    W_flat : Tensor, shape (sum_g n_g^2,), float32, on ``y``'s device; block g is row-major (n_g, n_g).
    """
    y = y.flatten(1).float()  # (N, D)
    eps = eps.flatten(1).float()  # (N, D)
    y_sq, eps_sq = _squared_norms(y), _squared_norms(eps)  # (N,)
    if not torch.isfinite(y_sq.sum() + eps_sq.sum()):  # one sync on a GPU
        raise ValueError("images or noise contain non-finite values")
    W_flat = torch.empty(sum(k * k for k in sizes), dtype=torch.float32, device=y.device)
    starts = np.cumsum([0, *sizes[:-1]])
    in_place = all(
        k == 0 or (int(idx[0]) == start and int(idx[-1]) == start + k - 1)
        for idx, k, start in zip(groups, sizes, starts, strict=True)
    )  # groups are ascending and partition range(N), so first/last fix a consecutive range
    if not in_place:
        k_max = max(sizes)
        y_buf = torch.empty((k_max, y.shape[1]), dtype=torch.float32, device=y.device)
        eps_buf = torch.empty_like(y_buf)
    pos = 0
    for idx, k, start in zip(groups, sizes, starts, strict=True):
        out = W_flat[pos : pos + k * k].view(k, k)
        if in_place:
            rows = slice(int(start), int(start) + k)
            _squared_distances(y[rows], eps[rows], y_sq[rows], eps_sq[rows], out=out)
        else:
            idx = idx.to(y.device)
            y_g = torch.index_select(y, 0, idx, out=y_buf[:k])
            eps_g = torch.index_select(eps, 0, idx, out=eps_buf[:k])
            _squared_distances(y_g, eps_g, y_sq[idx], eps_sq[idx], out=out)
        pos += k * k
    W_flat.clamp_(min=0)  # cancellation can dip below zero; clamped so the sqrt gives no NaN
    return W_flat if squared else W_flat.sqrt_()
