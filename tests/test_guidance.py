"""Discriminator Guidance: VP-SDE closed forms, importance-sampled times, the guided denoiser, and an exact
Gaussian case where guidance with the true density ratio turns the model's distribution into the data's."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.integrate
import scipy.stats
import torch

from aot.models.vp import BETA_0, BETA_1, perturb, sample_vp_time, vp_alpha, vp_std, vp_time_of_sigma
from aot.sampling import guidance
from aot.sampling.guidance import grad_log_ratio, with_discriminator
from aot.sampling.samplers import heun_sample, karras_sigmas


def beta(t):
    return BETA_0 + t * (BETA_1 - BETA_0)


def test_vp_alpha_and_std_closed_forms():
    t = torch.linspace(0.0, 1.0, 11, dtype=torch.float64)
    for ti, a, s in zip(t, vp_alpha(t), vp_std(t), strict=True):
        integral = scipy.integrate.quad(beta, 0.0, float(ti))[0]  # int_0^t beta
        assert float(a) == pytest.approx(math.exp(-0.5 * integral), rel=1e-12)
        assert float(s) == pytest.approx(math.sqrt(1 - math.exp(-integral)), rel=1e-12, abs=1e-15)


def test_vp_time_of_sigma_inverts_the_ve_sigma_and_matches_the_spec_values():
    tau = torch.linspace(1e-4, 1.0, 50, dtype=torch.float64)
    sigma = vp_std(tau) / vp_alpha(tau)  # the VE sigma of VP time tau
    torch.testing.assert_close(vp_time_of_sigma(sigma), tau, rtol=1e-10, atol=1e-12)
    got = vp_time_of_sigma(torch.tensor([80.0, 1.0, 0.1], dtype=torch.float64))
    np.testing.assert_allclose(got.numpy(), [0.9335, 0.259, 0.027], atol=6e-4)  # docs/method.md §3.5


def test_cosine_time_has_the_vp_signal_level():
    """alpha_bar_cos(cosine_time(t)) = alpha(t)^2 with improved DDPM's schedule f(u) = cos^2((u + s)/(1 + s) pi/2),
    alpha_bar_cos = f / f(0); t = 0 maps to 0, and the map is increasing."""
    from aot.models.vp import COSINE_S, cosine_time

    t = torch.linspace(0.0, 1.0, 101, dtype=torch.float64)
    tc = cosine_time(t)

    def f(u):
        return torch.cos((u + COSINE_S) / (1 + COSINE_S) * math.pi / 2) ** 2

    torch.testing.assert_close(f(tc) / f(torch.zeros((), dtype=torch.float64)), vp_alpha(t) ** 2, rtol=1e-12,
                               atol=1e-15)
    assert abs(tc[0].item()) < 1e-14 and bool((tc.diff() > 0).all()) and 0.99 < tc[-1].item() < 1.0
    assert COSINE_S == 0.008  # DG's vpsde.s, improved DDPM's offset


def test_importance_sampled_times_follow_beta_over_s_squared():
    """KS test against the CDF of the density beta(t) / s(t)^2 on [t_min, 1], integrated numerically."""
    t_min = 1e-5
    t = sample_vp_time(20000, torch.Generator().manual_seed(0), t_min).double().numpy()
    assert t.min() >= t_min and t.max() <= 1.0

    def density(u):
        return beta(u) / -math.expm1(-(0.5 * u * u * (BETA_1 - BETA_0) + u * BETA_0))

    grid = np.geomspace(t_min, 1.0, 400)
    pieces = [scipy.integrate.quad(density, a, b)[0] for a, b in zip(np.r_[t_min, grid[:-1]], grid, strict=True)]
    cdf_grid = np.cumsum(pieces) / np.sum(pieces)
    res = scipy.stats.kstest(t, lambda x: np.interp(x, grid, cdf_grid, left=0.0, right=1.0))
    assert res.pvalue > 1e-3, res


def test_sample_vp_time_is_reproducible_from_the_generator():
    a = sample_vp_time(8, torch.Generator().manual_seed(3))
    b = sample_vp_time(8, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.dtype == torch.float32


def test_perturb_is_alpha_x_plus_s_z():
    x, z = torch.randn(4, 1, 2, 2), torch.randn(4, 1, 2, 2)
    t = torch.tensor([0.1, 0.3, 0.7, 1.0])
    want = vp_alpha(t)[:, None, None, None] * x + vp_std(t)[:, None, None, None] * z
    torch.testing.assert_close(perturb(x, t, z), want)


# ----------------------------------------------------------------------------
# The guided denoiser.


class LinearDisc(torch.nn.Module):
    """logits = <c, x_vp>: log r = logits (inside the clip), grad_{x_vp} log r = c."""

    def __init__(self, c):
        super().__init__()
        self.c = c

    def forward(self, x_vp, tau, labels=None):
        return (x_vp * self.c).flatten(1).sum(1)


def test_weight_zero_returns_the_denoiser_itself():
    def denoise(x, sigma, labels):
        return x

    assert with_discriminator(denoise, LinearDisc(torch.ones(1)), 0.0) is denoise


def test_guided_denoiser_adds_w_sigma2_alpha_c():
    c = 0.01 * torch.randn(1, 2, 3, 3, generator=torch.Generator().manual_seed(1))

    def denoise(x, sigma, labels):
        return 0.5 * x

    x = 0.1 * torch.randn(5, 2, 3, 3)
    for sigma in (0.5, 2.0, 20.0):
        s = torch.tensor(sigma)
        got = with_discriminator(denoise, LinearDisc(c), 1.5)(x, s, None)
        alpha = vp_alpha(vp_time_of_sigma(s))
        torch.testing.assert_close(got, 0.5 * x + 1.5 * sigma**2 * alpha * c.expand_as(x), rtol=1e-5, atol=1e-6)


def test_guidance_is_off_outside_the_time_window():
    c = torch.ones(1, 1, 2, 2)
    x = torch.zeros(3, 1, 2, 2)
    sigma = torch.tensor(0.02)  # tau(0.02) ~ 0.0036 < time_min 0.01
    grad, lr = grad_log_ratio(LinearDisc(c), x, sigma, time_min=0.01)
    assert torch.equal(grad, torch.zeros_like(x)) and torch.isinf(lr).all()
    grad, _ = grad_log_ratio(LinearDisc(c), x, torch.tensor(80.0), time_max=0.5)  # tau(80) ~ 0.93 > 0.5
    assert torch.equal(grad, torch.zeros_like(x))


def test_log_ratio_clips_d_as_dg():
    big = LinearDisc(torch.full((1, 1, 1, 1), 1e3))
    lr = guidance.log_ratio(big, torch.ones(2, 1, 1, 1), torch.ones(2), None)
    assert torch.allclose(lr, torch.full((2,), math.log((1 - 1e-5) / 1e-5)), rtol=1e-3)


class GaussianRatioDisc(torch.nn.Module):
    """The exact log density ratio of two diffused centred Gaussians (data std s_d, model std s_m), in VP terms:
    x_vp ~ N(0, alpha^2 s^2 + s_t^2) at VP time tau."""

    def __init__(self, s_d, s_m):
        super().__init__()
        self.s_d, self.s_m = s_d, s_m

    def forward(self, x_vp, tau, labels=None):
        a, st = vp_alpha(tau)[:, None, None, None], vp_std(tau)[:, None, None, None]
        v_d, v_m = a**2 * self.s_d**2 + st**2, a**2 * self.s_m**2 + st**2
        log_r = -0.5 * x_vp**2 * (1 / v_d - 1 / v_m) - 0.5 * torch.log(v_d / v_m)
        return log_r.flatten(1).sum(1)


def test_guidance_with_the_true_ratio_samples_the_data_distribution():
    """Model N(0, 0.8^2), data N(0, 0.5^2): the exact model denoiser guided with w = 1 by the exact ratio is the
    data's denoiser, so Heun (guided at both evaluations) lands on std 0.5; unguided it lands on 0.8."""
    s_d, s_m = 0.5, 0.8

    def model_denoiser(x, sigma, labels):  # E[x0 | x] for x0 ~ N(0, s_m^2)
        return x * s_m**2 / (s_m**2 + sigma**2)

    guided = with_discriminator(model_denoiser, GaussianRatioDisc(s_d, s_m), 1.0, time_min=0.0, time_max=1.0)
    z = torch.randn(20000, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    sigmas = karras_sigmas(64, rho=7.0)
    x_guided = heun_sample(guided, z, sigmas, denoise_2nd=guided)
    x_plain = heun_sample(model_denoiser, z, sigmas)
    assert float(x_plain.std()) == pytest.approx(s_m, rel=0.02)
    assert float(x_guided.std()) == pytest.approx(s_d, rel=0.02)


def test_heun_uses_denoise_2nd_only_for_the_correction():
    calls = []

    def first(x, sigma, labels):
        calls.append("first")
        return x * 0

    def second(x, sigma, labels):
        calls.append("second")
        return x * 0

    heun_sample(first, torch.zeros(1, 1, 1, 1), karras_sigmas(3), denoise_2nd=second)
    assert calls == ["first", "second", "first", "second", "first"]


# ----------------------------------------------------------------------------
# DG's boosting sampler.


class OffsetDisc(torch.nn.Module):
    """logits = <c, x_vp> + b: b >> 0 accepts every sample (log r > 0), b << 0 rejects every sample."""

    def __init__(self, c, b):
        super().__init__()
        self.c, self.b = c, b

    def forward(self, x_vp, tau, labels=None):
        return (x_vp * self.c).flatten(1).sum(1) + self.b


def _toy_denoiser(x, sigma, labels):
    sigma = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1, 1, 1)
    return x * 0.25 / (0.25 + sigma**2)


def _setup(seeds, b):
    from aot.sampling.guidance import boosted_heun_sample
    from aot.sampling.samplers import seed_generators, seeded_latents

    gens = seed_generators(seeds)
    z, _ = seeded_latents(seeds, (1, 2, 2), generators=gens)
    c = 0.05 * torch.ones(1, 1, 2, 2)

    def randn():
        return torch.stack([torch.randn((1, 2, 2), generator=g) for g in gens])

    def run(**kw):
        return boosted_heun_sample(_toy_denoiser, OffsetDisc(c, b), z, karras_sigmas(12), None, randn, **kw)

    return z, c, run


def test_boosting_is_plain_guided_heun_when_the_discriminator_accepts_everything():
    z, c, run = _setup(range(6), b=8.0)
    guided = with_discriminator(_toy_denoiser, OffsetDisc(c, 8.0), 2.0)
    want = heun_sample(guided, z, karras_sigmas(12), denoise_2nd=_toy_denoiser)
    torch.testing.assert_close(run(weight=2.0), want, rtol=0, atol=0)  # the same arithmetic


def test_boosting_doubles_the_weight_of_rejected_samples():
    """All samples rejected, no churn, doubling on every step: exactly guided Heun with weight 2w."""
    z, c, run = _setup(range(6), b=-8.0)
    guided = with_discriminator(_toy_denoiser, OffsetDisc(c, -8.0), 3.0)
    want = heun_sample(guided, z, karras_sigmas(12), denoise_2nd=_toy_denoiser)
    torch.testing.assert_close(run(weight=1.5, churn=0.0, period_weight=1), want, rtol=0, atol=0)


def test_boosting_churn_renoises_rejected_samples_per_seed():
    no_churn = _setup([0, 1, 2], b=-8.0)[2](weight=1.0, churn=0.0)
    boosted = _setup([0, 1, 2], b=-8.0)[2](weight=1.0)  # fresh generators: each run draws its own churn noise
    assert not torch.allclose(boosted, no_churn)  # the churn noise changed the rejected samples
    _, _, run_one = _setup([2], b=-8.0)
    torch.testing.assert_close(run_one(weight=1.0), boosted[2:], rtol=1e-6, atol=1e-6)  # image i: seed i only
