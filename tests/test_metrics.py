"""aot.eval.metrics: Frechet distance, KID and statistics files against closed forms and clean-fid."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from aot.eval.metrics import (
    frechet_distance,
    frechet_distance_difference,
    frechet_distance_jackknife,
    gaussian_stats,
    kernel_inception_distance,
    load_stats,
    polynomial_mmd2,
    save_stats,
)

cleanfid_fid = pytest.importorskip("cleanfid.fid")


def random_spd(D: int, rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
    A = rng.standard_normal((D, 2 * D))
    return scale * A @ A.T / (2 * D) + 1e-3 * np.eye(D)


def cleanfid_frechet(mu1, sigma1, mu2, sigma2) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # clean-fid passes sqrtm(disp=False), deprecated in SciPy >= 1.16
        return float(cleanfid_fid.frechet_distance(mu1, sigma1, mu2, sigma2))


# ----------------------------------------------------------------------------
# gaussian_stats


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gaussian_stats_matches_numpy(dtype):
    F = np.random.default_rng(0).standard_normal((50, 7)).astype(dtype) * 3 + 1
    mu, sigma = gaussian_stats(F)
    assert mu.dtype == sigma.dtype == np.float64
    assert mu.shape == (7,) and sigma.shape == (7, 7)
    np.testing.assert_allclose(mu, np.mean(F.astype(np.float64), axis=0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(F.astype(np.float64), rowvar=False), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(1, 4), (5,), (2, 3, 4)])
def test_gaussian_stats_rejects_bad_shapes(shape):
    with pytest.raises(ValueError):
        gaussian_stats(np.zeros(shape))


# ----------------------------------------------------------------------------
# frechet_distance


@pytest.mark.parametrize("D", [1, 4, 16, 64])
def test_fd_of_identical_stats_is_zero(D):
    rng = np.random.default_rng(D)
    mu, sigma = rng.standard_normal(D), random_spd(D, rng)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-8


def test_fd_diagonal_closed_form():
    rng = np.random.default_rng(1)
    D = 10
    mu1, mu2 = rng.standard_normal(D), rng.standard_normal(D)
    a, b = rng.uniform(0.1, 3.0, D), rng.uniform(0.1, 3.0, D)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)


def test_fd_commuting_full_covariances_closed_form():
    # Sigma_1 = Q diag(a) Q^T and Sigma_2 = Q diag(b) Q^T commute; sqrtm(S1 S2) = Q diag(sqrt(a b)) Q^T.
    rng = np.random.default_rng(2)
    D = 12
    Q, _ = np.linalg.qr(rng.standard_normal((D, D)))
    a, b = rng.uniform(0.1, 3.0, D), rng.uniform(0.1, 3.0, D)
    sigma1, sigma2 = Q @ np.diag(a) @ Q.T, Q @ np.diag(b) @ Q.T
    mu1, mu2 = rng.standard_normal(D), rng.standard_normal(D)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(expected, rel=1e-8)


def test_fd_is_symmetric_and_positive():
    rng = np.random.default_rng(3)
    D = 20
    s1 = (rng.standard_normal(D), random_spd(D, rng))
    s2 = (rng.standard_normal(D) + 0.5, random_spd(D, rng, scale=2.0))
    d12, d21 = frechet_distance(*s1, *s2), frechet_distance(*s2, *s1)
    assert d12 > 0
    assert d12 == pytest.approx(d21, rel=1e-9)


@pytest.mark.parametrize("D", [2, 32, 128])
def test_fd_matches_cleanfid(D):
    rng = np.random.default_rng(100 + D)
    mu1, mu2 = rng.standard_normal(D), rng.standard_normal(D)
    sigma1, sigma2 = random_spd(D, rng), random_spd(D, rng, scale=3.0)
    ours = frechet_distance(mu1, sigma1, mu2, sigma2)
    assert ours == pytest.approx(cleanfid_frechet(mu1, sigma1, mu2, sigma2), rel=1e-6)


def test_fd_rank_deficient_covariances_are_finite_and_match_cleanfid():
    # N <= D: both covariances are singular, as for a small sample in a large feature space.
    rng = np.random.default_rng(4)
    s1 = gaussian_stats(rng.standard_normal((10, 32)))
    s2 = gaussian_stats(rng.standard_normal((10, 32)) + 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = frechet_distance(*s1, *s2)
    assert np.isfinite(ours) and ours > 0
    assert ours == pytest.approx(cleanfid_frechet(*s1, *s2), rel=1e-6)


def test_fd_stats_from_features():
    # Far-apart Gaussians: FD ~ ||dmu||^2 = D * 4 (equal unit covariances up to sampling noise).
    rng = np.random.default_rng(5)
    D = 8
    s1 = gaussian_stats(rng.standard_normal((20000, D)))
    s2 = gaussian_stats(rng.standard_normal((20000, D)) + 2.0)
    assert frechet_distance(*s1, *s2) == pytest.approx(4.0 * D, rel=0.02)


@pytest.mark.parametrize(
    "shapes",
    [
        ((3,), (3, 3), (4,), (4, 4)),
        ((3,), (3, 3), (3,), (4, 4)),
        ((3,), (3, 4), (3,), (3, 3)),
        ((3, 1), (3, 3), (3, 1), (3, 3)),
    ],
)
def test_fd_shape_mismatch_raises(shapes):
    args = [np.eye(s[0], s[1]) if len(s) == 2 else np.zeros(s) for s in shapes]
    with pytest.raises(ValueError):
        frechet_distance(*args)


# ----------------------------------------------------------------------------
# frechet_distance_jackknife


def test_fd_jackknife_values_are_frechet_distances_without_each_group():
    """theta_k, computed with the eigvalsh shortcut, is what frechet_distance gives on the rows outside group k;
    the std is the jackknife formula applied to them."""
    rng = np.random.default_rng(0)
    D, n, K = 12, 300, 7
    feats = rng.standard_normal((n, D)) @ rng.standard_normal((D, D)) + 0.2
    mu_ref, sigma_ref = np.zeros(D), random_spd(D, rng)
    std, theta = frechet_distance_jackknife(feats, mu_ref, sigma_ref, groups=K, seed=7)
    parts = np.array_split(np.random.default_rng(7).permutation(n), K)
    want = [frechet_distance(*gaussian_stats(np.delete(feats, g, axis=0)), mu_ref, sigma_ref) for g in parts]
    np.testing.assert_allclose(theta, want, rtol=1e-9, atol=1e-9)
    assert std == pytest.approx(np.sqrt((K - 1) / K * np.sum((theta - np.mean(theta)) ** 2)), rel=1e-12)
    assert frechet_distance_jackknife(feats, mu_ref, sigma_ref, groups=K, seed=7)[0] == std  # seeded
    with pytest.raises(ValueError, match="groups"):
        frechet_distance_jackknife(feats, mu_ref, sigma_ref, groups=1)
    with pytest.raises(ValueError, match="reference"):
        frechet_distance_jackknife(feats, mu_ref[:3], sigma_ref)


def test_fd_jackknife_std_matches_the_spread_over_independent_sample_sets():
    """Independent reference: the std of FD over 300 fresh sample sets of a known Gaussian generator (D = 64,
    N = 600; at D = 128, N = 1000 a with-replacement bootstrap overstated it 2-3x). The jackknife
    estimate from a single set must match it (measured ratios 0.96-1.37 over eight sets, mean 1.14: Efron-Stein
    makes it err on the large side)."""
    D, n = 64, 600
    rng = np.random.default_rng(0)
    sigma_ref, mu_ref = random_spd(D, rng), np.zeros(D)
    chol, mu_gen = np.linalg.cholesky(1.3 * sigma_ref), 0.05 * np.ones(D)

    def draw(r):
        return mu_gen + r.standard_normal((n, D)) @ chol.T

    r = np.random.default_rng(1)
    true_std = np.std([frechet_distance(*gaussian_stats(draw(r)), mu_ref, sigma_ref) for _ in range(300)], ddof=1)
    ratios = [
        frechet_distance_jackknife(draw(np.random.default_rng(100 + k)), mu_ref, sigma_ref, groups=50, seed=k)[0]
        / true_std
        for k in range(8)
    ]
    assert all(0.75 < q < 1.6 for q in ratios), ratios
    assert 0.9 < np.mean(ratios) < 1.3, ratios


def test_fd_difference_is_paired_and_its_std_matches_independent_seed_sets():
    """Two models sharing each seed's latent (correlation 0.9): the paired jackknife std of FD(a) - FD(b) must match
    the spread of the difference over 300 independent seed sets (measured ratios 0.97-1.32 over eight sets), while
    the unpaired sqrt(std_a^2 + std_b^2) overstates it about 2x."""
    D, n, c = 64, 600, 0.9
    rng = np.random.default_rng(0)
    sigma_ref, mu_ref = random_spd(D, rng), np.zeros(D)
    la, lb = np.linalg.cholesky(1.3 * sigma_ref), np.linalg.cholesky(1.2 * sigma_ref)

    def draw(r):
        z, u = r.standard_normal((n, D)), r.standard_normal((n, D))
        return 0.05 + z @ la.T, 0.03 + (c * z + np.sqrt(1 - c * c) * u) @ lb.T

    def fd(x):
        return frechet_distance(*gaussian_stats(x), mu_ref, sigma_ref)

    r = np.random.default_rng(1)
    true_std = np.std([fd(a) - fd(b) for a, b in (draw(r) for _ in range(300))], ddof=1)
    ratios, unpaired = [], []
    for k in range(8):
        a, b = draw(np.random.default_rng(100 + k))
        diff, std = frechet_distance_difference(a, b, mu_ref, sigma_ref, seed=k)
        assert diff == pytest.approx(fd(a) - fd(b), rel=1e-9)
        ratios.append(std / true_std)
        std_a = frechet_distance_jackknife(a, mu_ref, sigma_ref, seed=k)[0]
        std_b = frechet_distance_jackknife(b, mu_ref, sigma_ref, seed=k)[0]
        unpaired.append(np.hypot(std_a, std_b) / true_std)
    assert all(0.75 < q < 1.6 for q in ratios), ratios
    assert 0.9 < np.mean(ratios) < 1.3 and np.mean(unpaired) > 1.7, (ratios, unpaired)
    with pytest.raises(ValueError, match="paired"):
        frechet_distance_difference(a, b[:-1], mu_ref, sigma_ref)


# ----------------------------------------------------------------------------
# KID


def test_polynomial_mmd2_matches_naive_sums():
    rng = np.random.default_rng(6)
    m, d = 6, 3
    x, y = rng.standard_normal((m, d)), rng.standard_normal((m, d))

    def k(a, b):
        return (a @ b / d + 1) ** 3

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    assert polynomial_mmd2(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-12)


def test_kid_matches_cleanfid_with_full_subsets():
    # Subset size = N: every subset is a permutation of the whole set, so the draws do not matter.
    rng = np.random.default_rng(7)
    f1, f2 = rng.standard_normal((200, 16)), rng.standard_normal((200, 16)) + 0.3
    ours, std = kernel_inception_distance(f1, f2, num_subsets=3, max_subset_size=1000)
    ref = cleanfid_fid.kernel_distance(f1, f2, num_subsets=3, max_subset_size=1000)
    assert ours == pytest.approx(ref, rel=1e-9)
    assert std == pytest.approx(0.0, abs=1e-9 * abs(ours))


def test_kid_matches_cleanfid_with_replicated_draws(monkeypatch):
    # Feed clean-fid the same index draws (same generator, same order: feats2 first, then feats1).
    rng = np.random.default_rng(8)
    f1, f2 = rng.standard_normal((300, 16)), rng.standard_normal((250, 16)) + 0.2
    ours, _ = kernel_inception_distance(f1, f2, num_subsets=20, max_subset_size=100, seed=11)
    monkeypatch.setattr(cleanfid_fid.np.random, "choice", np.random.default_rng(11).choice)
    ref = cleanfid_fid.kernel_distance(f1, f2, num_subsets=20, max_subset_size=100)
    assert ours == pytest.approx(ref, rel=1e-9)


def test_kid_near_zero_for_same_distribution_and_positive_for_shifted():
    rng = np.random.default_rng(9)
    a, b = rng.standard_normal((600, 32)), rng.standard_normal((600, 32))
    same, same_std = kernel_inception_distance(a, b, num_subsets=10, max_subset_size=300)
    shifted, _ = kernel_inception_distance(a, b + 0.5, num_subsets=10, max_subset_size=300)
    assert shifted > 0
    assert abs(same) < 0.02 * shifted
    assert same_std > 0


def test_kid_is_seeded_and_leaves_global_rng_alone():
    rng = np.random.default_rng(10)
    f1, f2 = rng.standard_normal((100, 8)), rng.standard_normal((120, 8))
    state = np.random.get_state()[1].copy()
    r1 = kernel_inception_distance(f1, f2, num_subsets=5, max_subset_size=50, seed=3)
    r2 = kernel_inception_distance(f1, f2, num_subsets=5, max_subset_size=50, seed=3)
    r3 = kernel_inception_distance(f1, f2, num_subsets=5, max_subset_size=50, seed=4)
    assert r1 == r2 and r1 != r3
    np.testing.assert_array_equal(np.random.get_state()[1], state)


def test_kid_rejects_mismatched_dims():
    with pytest.raises(ValueError):
        kernel_inception_distance(np.zeros((10, 3)), np.zeros((10, 4)))


# ----------------------------------------------------------------------------
# Statistics files


def test_stats_roundtrip(tmp_path):
    rng = np.random.default_rng(12)
    mu, sigma = gaussian_stats(rng.standard_normal((30, 5)))
    path = tmp_path / "sub" / "stats.npz"
    save_stats(path, mu, sigma, featnet="featnet-v1", num_images=30, seeds=[0, 29])
    mu2, sigma2, meta = load_stats(path)
    np.testing.assert_array_equal(mu2, mu)
    np.testing.assert_array_equal(sigma2, sigma)
    assert meta == {"featnet": "featnet-v1", "num_images": 30, "seeds": [0, 29]}
    assert sorted(p.name for p in path.parent.iterdir()) == ["stats.npz"]  # no temp file left behind


def test_stats_overwrite_and_bad_meta(tmp_path):
    path = tmp_path / "stats.npz"
    save_stats(path, np.zeros(2), np.eye(2))
    save_stats(path, np.ones(2), np.eye(2) * 2)
    mu, sigma, meta = load_stats(path)
    np.testing.assert_array_equal(mu, np.ones(2))
    assert meta == {}
    with pytest.raises(TypeError):
        save_stats(path, np.zeros(2), np.eye(2), bad=object())
    np.testing.assert_array_equal(load_stats(path)[0], np.ones(2))  # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stats.npz"]
    with pytest.raises(ValueError):
        save_stats(path, np.zeros(3), np.eye(2))


def test_load_stats_reads_edm_reference_format(tmp_path):
    # EDM's fid.py writes np.savez(f, mu=mu, sigma=sigma) with no meta key.
    path = tmp_path / "ref.npz"
    np.savez(path, mu=np.arange(3.0), sigma=np.eye(3))
    mu, sigma, meta = load_stats(path)
    np.testing.assert_array_equal(mu, np.arange(3.0))
    assert sigma.shape == (3, 3) and meta == {}
