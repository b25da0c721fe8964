"""Trajectory metrics (docs/method.md §6) pinned against the exact probability-flow ODE of Gaussian data.

For y ~ N(mu, diag(s_k^2)) the ideal denoiser is D(x; sigma)_k = mu + s_k^2 / (s_k^2 + sigma^2) (x_k - mu) and
the PF-ODE dx/dsigma = (x - D) / sigma has the exact flow x_k(sigma) - mu = a_k sqrt(s_k^2 + sigma^2) with
a_k = (x_k(sigma_T) - mu) / sqrt(s_k^2 + sigma_T^2), hence v_k(sigma) = a_k sigma / sqrt(s_k^2 + sigma^2):
* s = 0 (point mass): x = mu + sigma z, straight lines at constant speed, Heun exact: every metric is 0;
* isotropic s > 0: x - mu stays parallel to z (curvature 0) but the speed varies (straightness > 0);
* anisotropic s_k: the direction turns too (curvature > 0).
"""

import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad

from aot.eval.trajectory import (
    TrajectoryMetrics,
    curvature,
    denoiser_grid,
    load_metrics_json,
    metrics_nfe,
    plot_metrics,
    save_metrics_json,
    trajectory_metrics,
    trapezoid_weights,
)
from aot.sampling.samplers import heun_sample, heun_solve, karras_sigmas

SIGMA_MIN, SIGMA_MAX = 0.002, 80.0
MU = 0.3
F64 = torch.float64


def gaussian_denoiser(mu, s):
    """Exact D(x; sigma) = E[y | y + sigma n = x] for y ~ N(mu, s^2 I); s a float or a tensor (broadcast)."""

    def D(x, sigma, labels=None):
        s2 = torch.as_tensor(s, dtype=x.dtype) ** 2
        return mu + s2 / (s2 + torch.as_tensor(sigma, dtype=x.dtype) ** 2) * (x - mu)

    return D


def exact_flow(x, sigma_from, sigma_to, mu, s):
    """Exact PF-ODE map: x(sigma_to) - mu = (x - mu) sqrt(s^2 + sigma_to^2) / sqrt(s^2 + sigma_from^2)."""
    s2 = torch.as_tensor(s, dtype=F64) ** 2
    return mu + (x - mu) * torch.sqrt(s2 + sigma_to**2) / torch.sqrt(s2 + sigma_from**2)


def latents(b=6, shape=(1, 4, 4), seed=0):
    return torch.randn(b, *shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


S_ANISO = torch.linspace(0.05, 1.5, 16, dtype=F64).reshape(1, 4, 4)  # per-pixel data std


# ----------------------------------------------------------------------------------------------------------
# Point mass: straight lines, every metric vanishes.


@pytest.mark.parametrize("rho", [7.0, 90.0])
def test_point_mass_is_straight_and_exact(rho):
    D = gaussian_denoiser(MU, 0.0)  # D = mu: the default float32 denoiser path
    m = trajectory_metrics(D, latents(), steps=6, rho=rho, fine_steps=32, ref_substeps=4, ref_steps=16)
    assert isinstance(m, TrajectoryMetrics)
    np.testing.assert_allclose(m.sigmas, karras_sigmas(6, SIGMA_MIN, SIGMA_MAX, rho)[:-1].numpy(), rtol=0)
    assert abs(m.straightness) < 1e-10 and abs(m.straightness_normalized) < 1e-10
    assert m.curvature.shape == (6,) and np.abs(m.curvature).max() < 1e-10
    assert m.local_error.shape == (6,) and m.local_error.max() < 1e-10
    assert m.global_error < 1e-10


# ----------------------------------------------------------------------------------------------------------
# Straightness against its closed form.


def straightness_closed_form(z, mu, s):
    """S and S / E||vbar||^2 for the Gaussian flow started at x(sigma_max) = sigma_max z.

    With L = sigma_max - sigma_min and c(s) = (sqrt(s^2 + sigma_max^2) - sqrt(s^2 + sigma_min^2)) / L (so that
    vbar_k = a_k c(s_k)): (1/L) int (sigma / sqrt(s^2 + sigma^2) - c)^2 dsigma
    = 1 - s (atan(sigma_max / s) - atan(sigma_min / s)) / L - c^2 =: g(s), and S = E sum_k a_k^2 g(s_k).
    """
    s = torch.as_tensor(s, dtype=F64)
    L = SIGMA_MAX - SIGMA_MIN
    a = (SIGMA_MAX * z - mu) / torch.sqrt(s**2 + SIGMA_MAX**2)
    c = (torch.sqrt(s**2 + SIGMA_MAX**2) - torch.sqrt(s**2 + SIGMA_MIN**2)) / L
    g = 1 - s * (torch.atan(SIGMA_MAX / s) - torch.atan(SIGMA_MIN / s)) / L - c**2
    S = (a**2 * g).flatten(1).sum(1).mean().item()
    return S, S / (a**2 * c**2).flatten(1).sum(1).mean().item()


@pytest.mark.parametrize("s", [0.05, 0.5, 2.0])
def test_closed_form_integral_matches_quad(s):
    # Independent check of g(s) in straightness_closed_form by adaptive quadrature.
    L = SIGMA_MAX - SIGMA_MIN
    c = (math.sqrt(s**2 + SIGMA_MAX**2) - math.sqrt(s**2 + SIGMA_MIN**2)) / L
    g_quad = quad(lambda t: (t / math.sqrt(s**2 + t**2) - c) ** 2, SIGMA_MIN, SIGMA_MAX,
                  points=[s], epsabs=0, epsrel=1e-12, limit=200)[0] / L
    z = torch.ones(1, 1, 1, 1, dtype=F64)  # a = (80 - 0) / sqrt(s^2 + 80^2)
    S, _ = straightness_closed_form(z, 0.0, s)
    assert S == pytest.approx(g_quad * SIGMA_MAX**2 / (s**2 + SIGMA_MAX**2), rel=1e-10)


@pytest.mark.parametrize("s", [0.5, S_ANISO])
def test_straightness_matches_closed_form_and_converges(s):
    z, D = latents(), gaussian_denoiser(MU, s)
    S, S_norm = straightness_closed_form(z, MU, s)
    assert S > 0
    rel = {}
    for fine_steps in (128, 256, 512):
        m = trajectory_metrics(D, z, steps=2, rho=7.0, fine_steps=fine_steps, ref_substeps=1, ref_steps=2,
                               denoise_dtype=F64)
        rel[fine_steps] = abs(m.straightness / S - 1)
        assert m.straightness_normalized == pytest.approx(S_norm, rel=4 * rel[fine_steps] + 1e-9)
    assert rel[256] < 2e-4
    assert 3.0 < rel[128] / rel[256] < 5.0 and 3.0 < rel[256] / rel[512] < 5.0  # trapezoid + Heun: O(h^2)


def test_trapezoid_weights():
    sig = karras_sigmas(9, 0.1, 5.0, 7.0)[:-1]
    w = trapezoid_weights(sig)
    assert w.sum().item() == pytest.approx(5.0 - 0.1, rel=1e-14)
    assert (w @ sig).item() == pytest.approx((5.0**2 - 0.1**2) / 2, rel=1e-14)  # exact for linear f


# ----------------------------------------------------------------------------------------------------------
# Curvature.


def test_isotropic_gaussian_has_zero_curvature_but_positive_straightness():
    # x - mu stays parallel to x_T - mu: a straight segment traversed at varying speed.
    m = trajectory_metrics(gaussian_denoiser(MU, 0.5), latents(), steps=8, rho=7.0, fine_steps=64,
                           ref_substeps=4, ref_steps=16, denoise_dtype=F64)
    assert np.abs(m.curvature).max() < 1e-12
    assert m.straightness_normalized > 1e-4


def test_curvature_matches_heun_sample_callback():
    # Default float32 denoiser path: the same slopes and endpoint as aot.sampling.samplers.heun_sample.
    z, D, steps = latents(), gaussian_denoiser(MU, S_ANISO), 10
    sigmas = karras_sigmas(steps, SIGMA_MIN, SIGMA_MAX, 7.0)
    d = []
    x_end = heun_sample(D, z, sigmas, callback=lambda i, x, den, t: d.append((x - den) / t))
    x_start = z * SIGMA_MAX
    chord = (x_start - x_end).flatten(1)
    cos = torch.stack([torch.nn.functional.cosine_similarity(di.flatten(1), chord, dim=1) for di in d])
    m = trajectory_metrics(D, z, steps=steps, rho=7.0, fine_steps=8, ref_substeps=2, ref_steps=4)
    np.testing.assert_allclose(m.curvature, (1 - cos).mean(1).numpy(), rtol=1e-9, atol=1e-14)
    torch.testing.assert_close(heun_solve(D, x_start, sigmas), x_end, rtol=0, atol=0)  # bit for bit


def test_curvature_matches_closed_form():
    # On the exact flow kappa(sigma) = 1 - cos(a sigma / sqrt(s^2 + sigma^2), a (sqrt(s^2 + sigma_T^2) - s)).
    z, s, steps = latents(), S_ANISO, 128
    m = trajectory_metrics(gaussian_denoiser(MU, s), z, steps=steps, rho=7.0, fine_steps=4, ref_substeps=1,
                           ref_steps=2, denoise_dtype=F64)
    a = (SIGMA_MAX * z - MU) / torch.sqrt(s**2 + SIGMA_MAX**2)  # (B, 1, 4, 4)
    sig = torch.as_tensor(m.sigmas).reshape(-1, 1, 1, 1, 1)
    d = a * sig / torch.sqrt(s**2 + sig**2)  # (steps, B, 1, 4, 4)
    kappa = curvature(d, a * torch.sqrt(s**2 + SIGMA_MAX**2), a * s).mean(1).numpy()
    assert kappa.max() > 0.1  # the anisotropic flow really turns
    np.testing.assert_allclose(m.curvature, kappa, atol=2e-4)


def test_curvature_function_closed_forms():
    x_start = torch.tensor([[2.0, 0.0]], dtype=F64)
    x_end = torch.zeros(1, 2, dtype=F64)
    d = torch.tensor([[[1.0, 0.0]], [[0.0, 3.0]], [[-1.0, 0.0]], [[1.0, 1.0]]], dtype=F64)  # (4, 1, 2)
    np.testing.assert_allclose(curvature(d, x_start, x_end)[:, 0].numpy(), [0, 1, 2, 1 - 1 / math.sqrt(2)],
                               atol=1e-15)


# ----------------------------------------------------------------------------------------------------------
# Truncation errors.


def test_local_error_matches_exact_flow_map():
    z, s, steps = latents(), S_ANISO, 18
    D = gaussian_denoiser(MU, s)
    m = trajectory_metrics(D, z, steps=steps, rho=7.0, fine_steps=4, denoise_dtype=F64)
    sig = karras_sigmas(steps, SIGMA_MIN, SIGMA_MAX, 7.0)
    x, exact_err = z * SIGMA_MAX, []
    for i in range(steps):
        x_heun = heun_solve(D, x, sig[i : i + 2], denoise_dtype=F64)
        x_exact = exact_flow(x, sig[i], sig[i + 1], MU, s)
        exact_err.append(((x_heun - x_exact).flatten(1).norm(dim=1) / 4).mean().item())  # sqrt(d) = 4
        x = x_heun
    np.testing.assert_allclose(m.local_error, exact_err, rtol=2e-3)


def test_local_error_is_third_order():
    # Doubling the intervals of the rho-schedule halves the first step h from the same x_0: e_0 ~ h^3.
    z, D = latents(), gaussian_denoiser(MU, S_ANISO)
    kw = dict(rho=7.0, sigma_max=2.0, sigma_min=0.01, fine_steps=2, ref_steps=2, denoise_dtype=F64)
    e0 = [trajectory_metrics(D, z, steps=n, **kw).local_error[0] for n in (5, 9, 17, 33)]
    ratios = [e0[k] / e0[k + 1] for k in range(3)]
    assert all(6.0 < r < 10.0 for r in ratios), ratios


def test_global_error_is_second_order_and_matches_exact_endpoint():
    z, s = latents(), S_ANISO
    D = gaussian_denoiser(MU, s)
    kw = dict(rho=7.0, sigma_max=2.0, sigma_min=0.01, fine_steps=2, ref_substeps=1, ref_steps=1024,
              denoise_dtype=F64)
    # Both solves end with the same Euler step sigma_min -> 0, applied here to the exact x(sigma_min).
    x_min = exact_flow(z * 2.0, 2.0, 0.01, MU, s)
    x_exact = heun_solve(D, x_min, torch.tensor([0.01, 0.0], dtype=F64), denoise_dtype=F64)
    errs = {}
    for n in (9, 17, 33):
        m = trajectory_metrics(D, z, steps=n, **kw)
        x_n = heun_solve(D, z * 2.0, karras_sigmas(n, 0.01, 2.0, 7.0), denoise_dtype=F64)
        true_err = ((x_n - x_exact).flatten(1).norm(dim=1) / 4).mean().item()
        assert m.global_error == pytest.approx(true_err, rel=1e-2)
        errs[n] = m.global_error
    assert 3.0 < errs[9] / errs[17] < 5.0 and 3.0 < errs[17] / errs[33] < 5.0


# ----------------------------------------------------------------------------------------------------------
# Plumbing: labels, NFE, determinism, grid, I/O.


def test_labels_pass_through_and_nfe():
    labels = torch.tensor([3, 1, 4, 1, 5, 9])
    seen = []

    def D(x, sigma, lab):
        seen.append(lab)
        return torch.zeros_like(x)

    kw = dict(steps=5, fine_steps=7, ref_substeps=3, ref_steps=6)
    trajectory_metrics(D, latents(), rho=7.0, labels=labels, **kw)
    assert len(seen) == metrics_nfe(**kw) and all(lab is labels for lab in seen)
    assert metrics_nfe(18) == 3872
    seen.clear()
    denoiser_grid(D, latents(), steps=5, rho=7.0, columns=3, labels=labels)
    assert len(seen) == 9 and all(lab is labels for lab in seen)


def test_deterministic():
    kw = dict(steps=6, rho=72.0, fine_steps=16, ref_substeps=4, ref_steps=16)
    D = gaussian_denoiser(MU, S_ANISO)
    m1, m2 = trajectory_metrics(D, latents(), **kw), trajectory_metrics(D, latents(), **kw)
    for k in ("sigmas", "curvature", "local_error"):
        np.testing.assert_array_equal(getattr(m1, k), getattr(m2, k))
    assert (m1.straightness, m1.global_error) == (m2.straightness, m2.global_error)


def test_denoiser_grid():
    z, steps = latents(4, (3, 2, 2)), 18
    D = gaussian_denoiser(MU, 0.5)
    g = denoiser_grid(D, z, steps=steps, rho=7.0, columns=11)
    assert g.shape == (4, 11, 3, 2, 2) and g.dtype == torch.float32
    assert g.min() >= -1 and g.max() <= 1
    # First column: D(sigma_max z; sigma_max) = mu + s^2 / (s^2 + sigma_max^2) (sigma_max z - mu).
    first = MU + 0.25 / (0.25 + SIGMA_MAX**2) * (SIGMA_MAX * z - MU)
    torch.testing.assert_close(g[:, 0], first.float().clamp(-1, 1))
    # columns == steps gives every step's denoised output, in order.
    every = []
    heun_sample(D, z, karras_sigmas(steps, rho=7.0), callback=lambda i, x, den, t: every.append(den))
    torch.testing.assert_close(denoiser_grid(D, z, steps=steps, rho=7.0, columns=steps),
                               torch.stack(every, 1).float().clamp(-1, 1))
    # Point mass: every column is mu; out-of-range values are clipped to [-1, 1].
    torch.testing.assert_close(denoiser_grid(gaussian_denoiser(MU, 0.0), z, steps=8, rho=7.0, columns=4),
                               torch.full((4, 4, 3, 2, 2), MU))
    assert (denoiser_grid(gaussian_denoiser(2.0, 0.0), z, steps=8, rho=7.0, columns=4) == 1).all()
    with pytest.raises(ValueError):
        denoiser_grid(D, z, steps=8, rho=7.0, columns=9)


def test_json_round_trip_and_plot(tmp_path):
    D = gaussian_denoiser(MU, S_ANISO)
    kw = dict(steps=6, fine_steps=16, ref_substeps=4, ref_steps=16)
    runs = {name: trajectory_metrics(D, latents(), rho=rho, **kw)
            for name, rho in (("rho7", 7.0), ("rho90", 90.0))}
    save_metrics_json(tmp_path / "m.json", runs["rho7"], model="gauss", rho=7.0, seeds=[0, 1])
    m, meta = load_metrics_json(tmp_path / "m.json")
    assert meta == {"model": "gauss", "rho": 7.0, "seeds": [0, 1]}
    for k in ("sigmas", "curvature", "local_error"):
        np.testing.assert_array_equal(getattr(m, k), getattr(runs["rho7"], k))
    assert m.global_error == runs["rho7"].global_error and m.straightness == runs["rho7"].straightness
    plot_metrics(tmp_path / "sub" / "m.png", runs)
    assert (tmp_path / "sub" / "m.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
