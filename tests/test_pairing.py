"""Tests for aot.training.pairing: exactness against scipy/POT, per-class structure, marginals, background worker."""

import time

import numpy as np
import pytest
import scipy.optimize
import scipy.stats
import torch

from aot.training import assignment, pairing
from aot.training.assignment import SOLVERS, cost_matrix
from aot.training.pairing import METHODS, BackgroundPairer, Pairing, noise_shape, pair_noise

PERMUTATION_METHODS = ("none", "aot", "aot-sq", "immiscible")


def make_pool(n: int, seed: int, kind: str = "random", shape: tuple[int, ...] = (3, 4, 4)):
    """Images in [-1, 1] and i.i.d. N(0, I) noise; "ties" puts both on a coarse integer grid (equal costs)."""
    g = torch.Generator().manual_seed(seed)
    if kind == "random":
        y = torch.rand((n, *shape), generator=g) * 2 - 1
        eps = torch.randn((n, *shape), generator=g)
    else:  # tie-heavy: integer coordinates in {-1, 0, 1}, 4 dimensions -> few distinct distances
        y = torch.randint(-1, 2, (n, 1, 2, 2), generator=g).float()
        eps = torch.randint(-1, 2, (n, 1, 2, 2), generator=g).float()
    return y, eps


def exact_cost(y: torch.Tensor, eps: torch.Tensor, squared: bool = False) -> np.ndarray:
    """Reference cost in float64, computed directly (no norm trick)."""
    W = torch.cdist(
        y.flatten(1).double(), eps.flatten(1).double(), compute_mode="donot_use_mm_for_euclid_dist"
    )
    return (W**2 if squared else W).numpy()


def scipy_optimum(W: np.ndarray) -> float:
    rows, cols = scipy.optimize.linear_sum_assignment(W)
    return float(W[rows, cols].sum())


def assignment_cost(W: np.ndarray, perm: torch.Tensor) -> float:
    return float(W[np.arange(W.shape[0]), perm.numpy()].sum())


def is_permutation(perm: torch.Tensor, n: int) -> bool:
    return (
        perm.dtype == torch.int64 and perm.shape == (n,) and torch.equal(perm.sort().values, torch.arange(n))
    )


# ----------------------------------------------------------------------------
# Shapes, permutations, determinism.


def test_noise_shape():
    assert noise_shape("aot", (8, 3, 32, 32)) == (8, 3, 32, 32)
    assert noise_shape("none", (8, 3, 32, 32)) == (8, 3, 32, 32)
    assert noise_shape("knn", (8, 3, 32, 32), knn_k=4) == (4, 8, 3, 32, 32)
    assert noise_shape("knn", (8, 3, 32, 32)) == (8, 8, 3, 32, 32)


@pytest.mark.parametrize("per_class", [False, True])
@pytest.mark.parametrize("method", PERMUTATION_METHODS)
def test_permutation_methods_return_permutation(method, per_class):
    y, eps = make_pool(50, seed=1)
    labels = torch.arange(50) % 3
    p = pair_noise(y, eps, labels, method=method, per_class=per_class, micro_batch=16)
    assert isinstance(p, Pairing)
    assert is_permutation(p.perm, 50)
    assert torch.equal(p.noise, eps[p.perm])
    assert p.noise.shape == eps.shape and p.noise.dtype == eps.dtype
    assert p.cost_seconds >= 0 and p.solve_seconds >= 0


@pytest.mark.parametrize("method", METHODS)
def test_deterministic(method):
    y, eps = make_pool(40, seed=2)
    if method == "knn":
        eps = torch.randn(noise_shape("knn", y.shape, 3), generator=torch.Generator().manual_seed(3))
    labels = torch.arange(40) % 4
    a, b = (pair_noise(y, eps, labels, method=method, per_class=True, micro_batch=8) for _ in range(2))
    assert torch.equal(a.noise, b.noise)
    assert a.mean_dist_paired == b.mean_dist_paired and a.mean_dist_independent == b.mean_dist_independent


def test_none_is_identity():
    y, eps = make_pool(10, seed=0)
    p = pair_noise(y, eps, method="none")
    assert torch.equal(p.perm, torch.arange(10)) and torch.equal(p.noise, eps)
    assert p.mean_dist_paired == pytest.approx(exact_cost(y, eps).diagonal().mean(), rel=1e-5)
    assert p.mean_dist_paired == p.mean_dist_independent


def test_cost_matrix_matches_direct_distances():
    y, eps = make_pool(20, seed=4)
    W = cost_matrix(y, eps)
    assert W.dtype == torch.float32 and W.shape == (20, 20)
    np.testing.assert_allclose(W.numpy(), exact_cost(y, eps), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(cost_matrix(y, eps, squared=True).numpy(), exact_cost(y, eps, True), rtol=1e-5)
    assert (cost_matrix(y, y).diagonal() >= 0).all()  # clamped before the sqrt: no NaN from cancellation


# ----------------------------------------------------------------------------
# Exactness: total cost equals the scipy optimum.


@pytest.mark.parametrize("solver", list(SOLVERS))
@pytest.mark.parametrize("kind", ["random", "ties"])
@pytest.mark.parametrize("n", [1, 2, 7, 64])
@pytest.mark.parametrize("seed", range(8))
def test_aot_cost_equals_scipy_optimum(seed, n, kind, solver):
    y, eps = make_pool(n, seed, kind)
    W = exact_cost(y, eps)
    p = pair_noise(y, eps, method="aot", solver=solver)
    assert is_permutation(p.perm, n)
    assert assignment_cost(W, p.perm) == pytest.approx(scipy_optimum(W), rel=1e-6, abs=1e-5)
    assert p.mean_dist_paired == pytest.approx(scipy_optimum(W) / n, rel=1e-5)


@pytest.mark.parametrize("solver", list(SOLVERS))
@pytest.mark.parametrize("kind", ["random", "ties"])
@pytest.mark.parametrize("seed", range(4))
def test_aot_sq_cost_equals_scipy_optimum_of_squared_cost(seed, kind, solver):
    y, eps = make_pool(64, seed, kind)
    W2 = exact_cost(y, eps, squared=True)
    p = pair_noise(y, eps, method="aot-sq", solver=solver)
    assert assignment_cost(W2, p.perm) == pytest.approx(scipy_optimum(W2), rel=1e-6, abs=1e-5)


@pytest.mark.parametrize("kind", ["random", "ties"])
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("name", list(SOLVERS))
def test_fast_solvers_match_scipy_up_to_float32_rounding(name, seed, kind):
    y, eps = make_pool(300, seed, kind, shape=(3, 8, 8))
    W = cost_matrix(y, eps).numpy()  # the float32 matrix every solver sees
    col = SOLVERS[name](W)
    assert np.array_equal(np.sort(col), np.arange(300))
    W64 = W.astype(np.float64)
    assert W64[np.arange(300), col].sum() == pytest.approx(scipy_optimum(W64), rel=1e-6)


def test_solvers_handle_empty_and_singleton():
    for solve in SOLVERS.values():
        assert solve(np.zeros((0, 0), np.float32)).shape == (0,)
        assert solve(np.ones((1, 1), np.float32)).tolist() == [0]


def test_aot_matches_pot_emd2():
    ot = pytest.importorskip("ot")
    y, eps = make_pool(64, seed=11)
    W = exact_cost(y, eps)
    p = pair_noise(y, eps, method="aot")
    u = np.full(64, 1 / 64)
    ot_cost = ot.emd2(u, u, W, numItermax=10**7)  # mean cost of the optimal plan (a permutation here)
    assert p.mean_dist_paired == pytest.approx(ot_cost, rel=1e-6)
    assert assignment_cost(W, p.perm) / 64 == pytest.approx(ot_cost, rel=1e-9)


def test_auto_prefers_lapjv_when_installed():
    expected = assignment.solve_lapjv if "lapjv" in SOLVERS else assignment.solve_scipy
    assert assignment.resolve_solver("auto") is expected


# ----------------------------------------------------------------------------
# Per-class and micro-batch structure.


@pytest.mark.parametrize("solver", list(SOLVERS))
@pytest.mark.parametrize("seed", range(4))
def test_per_class_stays_within_class_and_is_optimal_per_class(seed, solver):
    y, eps = make_pool(90, seed)
    g = torch.Generator().manual_seed(100 + seed)
    labels = torch.tensor([0, 2, 5])[torch.randint(0, 3, (90,), generator=g)]  # classes 1, 3, 4 are absent
    p = pair_noise(y, eps, labels, method="aot", per_class=True, solver=solver)
    assert is_permutation(p.perm, 90)
    assert torch.equal(labels[p.perm], labels)  # every image gets a noise from a position of its own class
    W = exact_cost(y, eps)
    optimum = sum(
        scipy_optimum(W[np.ix_(idx, idx)]) for idx in (np.flatnonzero(labels == c) for c in (0, 2, 5))
    )
    assert assignment_cost(W, p.perm) == pytest.approx(optimum, rel=1e-6)


def test_per_class_single_image_classes_and_unsorted_labels():
    y, eps = make_pool(7, seed=3)
    labels = torch.tensor([6, 1, 6, 9, 1, 6, 0])
    p = pair_noise(y, eps, labels, method="aot", per_class=True)
    assert torch.equal(labels[p.perm], labels)
    assert p.perm[3] == 3 and p.perm[6] == 6  # a class of one keeps its own noise


@pytest.mark.parametrize("threads", [1, 2, 3, 16])
@pytest.mark.parametrize(
    "kwargs",
    [
        dict(method="aot", per_class=True),
        dict(method="aot-sq", per_class=True),
        dict(method="immiscible", micro_batch=7),
        dict(method="immiscible", micro_batch=16, per_class=True),
    ],
)
def test_solve_threads_do_not_change_the_result(kwargs, threads):
    y, eps = make_pool(100, seed=13)
    g = torch.Generator().manual_seed(13)
    labels = torch.tensor([0, 1, 3, 4, 7])[torch.randint(0, 5, (100,), generator=g)]
    labels[[5, 50]] = torch.tensor([9, 8])  # two classes of one image each
    want = pair_noise(y, eps, labels, threads=1, **kwargs)
    got = pair_noise(y, eps, labels, threads=threads, **kwargs)
    assert torch.equal(got.perm, want.perm) and torch.equal(got.noise, want.noise)
    assert got.mean_dist_paired == want.mean_dist_paired
    assert got.mean_dist_independent == want.mean_dist_independent


@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("split", ["classes", "micro-batches", "classes-in-micro-batches", "pool"])
def test_block_costs_match_per_group_cost_matrices(squared, split):
    y, eps = make_pool(60, seed=14, shape=(3, 8, 8))
    labels = torch.arange(60) % 4
    labels[7] = 9  # a group of one
    labels = labels if "classes" in split else None
    micro_batch = 16 if "micro" in split else None  # 16, 16, 16, 12: consecutive ranges, used in place
    groups = pairing.assignment_groups(60, labels, micro_batch)
    sizes = [len(idx) for idx in groups]
    W_flat = assignment.block_costs(y, eps, groups, sizes, squared)
    assert W_flat.dtype == torch.float32 and W_flat.shape == (sum(k * k for k in sizes),)
    blocks = torch.split(W_flat, [k * k for k in sizes])
    for idx, k, block in zip(groups, sizes, blocks, strict=True):
        want = exact_cost(y[idx], eps[idx], squared)
        np.testing.assert_allclose(block.view(k, k).numpy(), want, rtol=1e-5, atol=1e-4)


def test_default_solve_threads_is_half_of_torch_threads_capped():
    before = torch.get_num_threads()
    try:
        for torch_threads, want in [(1, 1), (2, 1), (4, 2), (8, 4), (32, 4)]:
            torch.set_num_threads(torch_threads)
            assert pairing.default_solve_threads() == want
    finally:
        torch.set_num_threads(before)


def test_per_class_in_threads_is_optimal_per_class():
    y, eps = make_pool(300, seed=15, shape=(3, 8, 8))
    labels = torch.randint(0, 10, (300,), generator=torch.Generator().manual_seed(15))
    p = pair_noise(y, eps, labels, method="aot", per_class=True, threads=4)
    assert torch.equal(labels[p.perm], labels)
    W = exact_cost(y, eps)
    optimum = sum(
        scipy_optimum(W[np.ix_(idx, idx)]) for idx in (np.flatnonzero(labels == c) for c in range(10))
    )
    assert assignment_cost(W, p.perm) == pytest.approx(optimum, rel=1e-6)


def test_global_aot_can_cross_classes():
    y, eps = make_pool(64, seed=5)
    labels = torch.arange(64) % 2
    assert not torch.equal(labels[pair_noise(y, eps, labels, method="aot").perm], labels)


@pytest.mark.parametrize("micro_batch", [1, 10, 16, 64, 100])
def test_immiscible_solves_within_micro_batches(micro_batch):
    y, eps = make_pool(64, seed=6)
    p = pair_noise(y, eps, method="immiscible", micro_batch=micro_batch)
    assert is_permutation(p.perm, 64)
    chunk = torch.arange(64) // micro_batch
    assert torch.equal(chunk[p.perm], chunk)  # noise never leaves its micro-batch
    W = exact_cost(y, eps)
    optimum = sum(
        scipy_optimum(W[s : s + micro_batch, s : s + micro_batch]) for s in range(0, 64, micro_batch)
    )
    assert assignment_cost(W, p.perm) == pytest.approx(optimum, rel=1e-6)


def test_immiscible_per_class_stays_within_chunk_and_class():
    y, eps = make_pool(64, seed=7)
    labels = torch.arange(64) % 3
    p = pair_noise(y, eps, labels, method="immiscible", micro_batch=16, per_class=True)
    key = (torch.arange(64) // 16) * 3 + labels
    assert torch.equal(key[p.perm], key)


# ----------------------------------------------------------------------------
# Distances: the AOT pairing is never worse than the independent one.


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize(
    "kwargs",
    [dict(method="aot"), dict(method="aot", per_class=True), dict(method="immiscible", micro_batch=8)],
)
def test_paired_distance_not_above_independent(kwargs, seed):
    y, eps = make_pool(48, seed)
    labels = torch.arange(48) % 5
    p = pair_noise(y, eps, labels, **kwargs)
    assert p.mean_dist_paired <= p.mean_dist_independent
    W = exact_cost(y, eps)
    assert p.mean_dist_independent == pytest.approx(W.diagonal().mean(), rel=1e-5)
    assert p.mean_dist_paired == pytest.approx(assignment_cost(W, p.perm) / 48, rel=1e-5)


def test_aot_sq_reports_unsquared_distances():
    y, eps = make_pool(32, seed=8)
    p = pair_noise(y, eps, method="aot-sq")
    W = exact_cost(y, eps)
    assert p.mean_dist_paired == pytest.approx(assignment_cost(W, p.perm) / 32, rel=1e-5)
    assert p.mean_dist_paired <= p.mean_dist_independent + 1e-6  # optimal for squared: close, not guaranteed


# ----------------------------------------------------------------------------
# knn: nearest private candidate, not a permutation.


def test_knn_picks_nearest_candidate():
    y, _ = make_pool(20, seed=9)
    eps_k = torch.randn(noise_shape("knn", y.shape, 5), generator=torch.Generator().manual_seed(9))
    p = pair_noise(y, eps_k, method="knn")
    assert p.perm is None and p.noise.shape == y.shape
    d = torch.stack([(e - y).flatten(1).norm(dim=1) for e in eps_k])  # (k, N)
    j = d.argmin(0)
    assert torch.equal(p.noise, eps_k[j, torch.arange(20)])
    assert p.mean_dist_paired == pytest.approx(d.min(0).values.mean().item(), rel=1e-6)
    assert p.mean_dist_independent == pytest.approx(d[0].mean().item(), rel=1e-6)
    assert p.mean_dist_paired <= p.mean_dist_independent


def test_knn_with_one_candidate_is_identity():
    y, eps = make_pool(12, seed=10)
    p = pair_noise(y, eps[None], method="knn")
    assert torch.equal(p.noise, eps)


# ----------------------------------------------------------------------------
# The marginal claim: a permutation keeps N(0, I) at every position; knn does not.


def paired_noise_at_position_0(
    method: str, per_class: bool = False, pools: int = 400, n: int = 16, k: int = 8
):
    """Coordinates of the noise paired with image 0 over many independent pools of off-centre images."""
    g = torch.Generator().manual_seed(1234)
    samples, images = [], []
    for _ in range(pools):
        y = 0.5 + 0.5 * torch.rand(
            (n, 1, 4, 4), generator=g
        )  # far from the noise mean: a biased pairing shows
        labels = torch.randint(0, 3, (n,), generator=g)
        eps = torch.randn(noise_shape(method, y.shape, k), generator=g)
        p = pair_noise(y, eps, labels, method=method, per_class=per_class)
        samples.append(p.noise[0].flatten())
        images.append(y[0].flatten())
    return torch.cat(samples).double().numpy(), torch.cat(images).double().numpy()


@pytest.mark.parametrize(
    "method, per_class", [("aot", False), ("aot", True), ("aot-sq", False), ("none", False)]
)
def test_permutation_keeps_gaussian_marginal_at_fixed_position(method, per_class):
    z, _ = paired_noise_at_position_0(method, per_class)
    se = 1 / np.sqrt(z.size)
    assert abs(z.mean()) < 4 * se
    assert abs(z.var() - 1) < 4 * np.sqrt(2) * se
    assert scipy.stats.kstest(z, "norm").pvalue > 1e-3


def test_knn_noise_is_biased_toward_its_image():
    z, y = paired_noise_at_position_0("knn")
    se = 1 / np.sqrt(z.size)
    assert z.mean() > 8 * se  # pulled toward the positive images: the marginal is no longer N(0, I)
    assert scipy.stats.kstest(z, "norm").pvalue < 1e-3  # the same test that passes for the permutations
    # Closer to its image than an independent N(0, I) draw would be: E||y - eps||^2 = ||y||^2 + D per vector.
    d2_paired = ((z - y) ** 2).sum() / 400
    d2_independent = (y**2).sum() / 400 + 16
    assert d2_paired < d2_independent - 1


# ----------------------------------------------------------------------------
# Background worker.


@pytest.mark.parametrize("threads", [None, 2])
def test_background_pairer_matches_direct_calls_in_order(threads):
    kwargs = dict(method="aot", per_class=True, threads=threads)
    pools = [(*make_pool(n, seed), torch.arange(n) % 3) for seed, n in enumerate([200, 5, 120, 1, 64])]
    with BackgroundPairer(**kwargs) as pairer:
        futures = [pairer.submit(y, eps, labels) for y, eps, labels in pools]
        results = [f.result() for f in futures]
    for (y, eps, labels), got in zip(pools, results, strict=True):
        want = pair_noise(y, eps, labels, **kwargs)
        assert torch.equal(got.noise, want.noise) and torch.equal(got.perm, want.perm)
        assert got.mean_dist_paired == want.mean_dist_paired


@pytest.mark.parametrize("name", list(SOLVERS))
def test_background_solver_releases_the_gil(name, monkeypatch):
    progress = {"main": 0}
    during_solve = []

    def probe(W):  # counts main-thread torch matmuls completed while the real solver runs
        before = progress["main"]
        col = SOLVERS[name](W)
        during_solve.append(progress["main"] - before)
        return col

    monkeypatch.setitem(assignment.SOLVERS, "probe", probe)
    n = 1024 if name == "lapjv" else 320  # a solve of tens of milliseconds on 2 cores
    y, eps = make_pool(n, seed=0, shape=(3, 8, 8))
    a = torch.randn(64, 64)
    with BackgroundPairer(method="aot", solver="probe") as pairer:
        future = pairer.submit(y, eps)
        deadline = time.monotonic() + 60
        while not future.done() and time.monotonic() < deadline:
            a = torch.tanh(a @ a)
            progress["main"] += 1
        assert is_permutation(future.result().perm, n)
    assert during_solve[0] > 0  # the main thread made progress while the worker was inside the solver


def test_background_pairer_propagates_errors_and_checks_kwargs():
    with pytest.raises(ValueError, match="method"):
        BackgroundPairer(method="sinkhorn")
    with pytest.raises(ValueError, match="micro_batch"):
        BackgroundPairer(method="immiscible")
    with pytest.raises(ValueError, match="solver"):
        BackgroundPairer(solver="hungarian")
    with pytest.raises(ValueError, match="threads"):
        BackgroundPairer(threads=0)
    y, eps = make_pool(8, seed=0)
    with BackgroundPairer(per_class=True) as pairer:
        with pytest.raises(ValueError, match="labels"):
            pairer.submit(y, eps).result()


# ----------------------------------------------------------------------------
# Bad input.


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(method="sinkhorn"), "method"),
        (dict(method="immiscible"), "micro_batch"),
        (dict(method="immiscible", micro_batch=0), "micro_batch"),
        (dict(per_class=True), "per_class"),
        (dict(solver="hungarian"), "solver"),
        (dict(threads=0), "threads"),
        (dict(threads=1.5), "threads"),
        (dict(threads=True), "threads"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match):
    y, eps = make_pool(8, seed=0)
    with pytest.raises(ValueError, match=match):
        pair_noise(y, eps, **kwargs)


def test_bad_shapes_raise_value_error():
    y, eps = make_pool(8, seed=0)
    with pytest.raises(ValueError, match="noise"):
        pair_noise(y, eps[:7])
    with pytest.raises(ValueError, match="noise"):
        pair_noise(y, eps, method="knn")  # knn needs (k, N, C, H, W)
    with pytest.raises(ValueError, match="noise"):
        pair_noise(y, eps[None], method="aot")
    with pytest.raises(ValueError, match="labels"):
        pair_noise(y, eps, torch.zeros(7, dtype=torch.int64), per_class=True)
    with pytest.raises(ValueError, match="labels"):
        pair_noise(y, eps, torch.zeros(8), per_class=True)  # float labels
    with pytest.raises(ValueError, match="images"):
        pair_noise(y[:0], eps[:0])
    with pytest.raises(ValueError, match="method"):
        noise_shape("sinkhorn", (8, 3, 4, 4))
    with pytest.raises(ValueError, match="non-finite"):
        pair_noise(torch.full_like(y, float("nan")), eps)
    eps_inf = eps.clone()
    eps_inf[5, 0, 1, 2] = float("inf")  # one entry, in one class's block only
    with pytest.raises(ValueError, match="non-finite"):
        pair_noise(y, eps_inf, torch.arange(8) % 3, per_class=True)


# ----------------------------------------------------------------------------
# Device: the cost matrix is built where the images live (runs only where CUDA exists).


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("per_class", [False, True])
def test_cuda_matches_cpu(per_class):
    y, eps = make_pool(256, seed=12, shape=(3, 8, 8))
    labels = torch.arange(256) % 10
    cpu = pair_noise(y, eps, labels, per_class=per_class)
    gpu = pair_noise(y.cuda(), eps.cuda(), labels.cuda(), per_class=per_class)
    assert gpu.noise.device.type == "cuda" and gpu.perm.device.type == "cuda"
    assert torch.equal(gpu.perm.cpu(), cpu.perm)
    assert gpu.mean_dist_paired == pytest.approx(cpu.mean_dist_paired, rel=1e-5)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_background_pairer_matches_direct_calls():
    pools = [
        (*(t.cuda() for t in make_pool(n, seed, shape=(3, 8, 8))), torch.arange(n, device="cuda") % 10)
        for seed, n in enumerate([512, 64, 300])
    ]
    a = torch.randn(1024, 1024, device="cuda")
    with BackgroundPairer(per_class=True) as pairer:
        futures = [pairer.submit(*pool) for pool in pools]
        for _ in range(50):  # keep the default stream busy while the worker queues its kernels
            a = torch.tanh(a @ a)
        results = [f.result() for f in futures]
    for pool, got in zip(pools, results, strict=True):
        want = pair_noise(*pool, per_class=True)
        assert torch.equal(got.perm, want.perm) and torch.equal(got.noise, want.noise)


def test_aot_block_is_assignment_within_consecutive_groups():
    """block=N (the coupling-strength axis): one exact assignment per group of N consecutive pool images, the same
    groups as Immiscible Diffusion's micro-batches; block = the pool is plain AOT; other methods refuse it."""
    g = torch.Generator().manual_seed(0)
    images, noise = torch.randn(64, 1, 4, 4, generator=g), torch.randn(64, 1, 4, 4, generator=g)
    labels = torch.randint(0, 3, (64,), generator=g)
    for per_class in (False, True):
        lab = labels if per_class else None
        blocked = pair_noise(images, noise, lab, method="aot", per_class=per_class, block=16)
        immiscible = pair_noise(images, noise, lab, method="immiscible", per_class=per_class, micro_batch=16)
        assert torch.equal(blocked.perm, immiscible.perm)
        for start in range(0, 64, 16):  # each group's noises stay in the group, each group solved exactly
            idx = torch.arange(start, start + 16)
            assert set(blocked.perm[idx].tolist()) == set(idx.tolist())
        whole = pair_noise(images, noise, lab, method="aot", per_class=per_class)
        assert torch.equal(pair_noise(images, noise, lab, method="aot", per_class=per_class, block=64).perm,
                           whole.perm)
        assert blocked.mean_dist_independent == pytest.approx(whole.mean_dist_independent, rel=1e-6)
        assert whole.mean_dist_paired <= blocked.mean_dist_paired  # more candidates pull closer
    blocked = pair_noise(images, noise, method="aot", block=16)
    cost = torch.cdist(images.flatten(1)[:16], noise.flatten(1)[:16]).numpy()
    rows, cols = scipy.optimize.linear_sum_assignment(cost)  # the first group (unconditional), solved by scipy
    assert np.isclose(cost[np.arange(16), blocked.perm[:16].numpy()].sum(), cost[rows, cols].sum(), rtol=1e-5)
    for method, kw in (("none", {}), ("knn", {}), ("immiscible", {"micro_batch": 16})):
        with pytest.raises(ValueError, match="block is for method 'aot' or 'aot-sq'"):
            pair_noise(images, noise if method != "knn" else noise[None].expand(2, -1, -1, -1, -1), method=method,
                       block=16, **kw)
    with pytest.raises(ValueError, match="block must be a positive int"):
        pair_noise(images, noise, method="aot", block=0)
