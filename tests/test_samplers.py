"""Schedule endpoints and Heun against the exact probability-flow ODE of a Gaussian (closed form)."""

import math

import pytest
import torch

from aot.samplers import heun_sample, karras_sigmas, nfe, seeded_latents


@pytest.mark.parametrize("rho", [1, 7, 72, 90])
@pytest.mark.parametrize("steps", [2, 8, 18])
def test_schedule_endpoints_and_monotone(rho, steps):
    s = karras_sigmas(steps, 0.002, 80.0, rho)
    assert s.dtype == torch.float64 and s.shape == (steps + 1,)
    assert s[0].item() == pytest.approx(80.0, rel=1e-12)
    assert s[-2].item() == pytest.approx(0.002, rel=1e-9)
    assert s[-1].item() == 0
    assert (s[1:] < s[:-1]).all()


def test_schedule_rho_one_is_linear():
    torch.testing.assert_close(karras_sigmas(5, 1.0, 5.0, 1.0), torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0, 0.0],
                                                                             dtype=torch.float64))


def test_schedule_midpoint_closed_form():
    # i = (steps-1)/2 is the midpoint in sigma^(1/rho) space.
    s = karras_sigmas(3, 0.002, 80.0, 7.0)
    assert s[1].item() == pytest.approx(((80.0 ** (1 / 7) + 0.002 ** (1 / 7)) / 2) ** 7, rel=1e-12)


def test_nfe():
    assert [nfe(s) for s in (18, 14, 15, 8)] == [35, 27, 29, 15]


def gaussian_denoiser(mu, s):
    """Exact D(x; sigma) = E[y | y + sigma n = x] for y ~ N(mu, s^2 I)."""

    def D(x, sigma, labels=None):
        sigma = torch.as_tensor(sigma, dtype=x.dtype)
        return mu + s**2 / (s**2 + sigma**2) * (x - mu)

    return D


def exact_endpoint(x_T, sigma_T, mu, s):
    """dx/dsigma = (x - mu) sigma / (s^2 + sigma^2)  =>  x(0) - mu = (x_T - mu) s / sqrt(s^2 + sigma_T^2)."""
    return mu + (x_T - mu) * s / math.sqrt(s**2 + sigma_T**2)


def test_heun_matches_exact_ode_and_is_second_order():
    mu, s = 0.3, 0.5
    z = torch.randn(16, 1, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    errors = {}
    for steps in (16, 32, 64, 512):
        sigmas = karras_sigmas(steps, 0.002, 80.0, 7.0)
        out = heun_sample(gaussian_denoiser(mu, s), z, sigmas)
        # The solver stops at sigma_min before the final Euler step to 0; compare with the exact flow to 0.
        exact = exact_endpoint(z * 80.0, 80.0, mu, s)
        errors[steps] = (out - exact).abs().max().item()
    assert errors[512] < 1e-4
    assert errors[16] / errors[32] > 3.0 and errors[32] / errors[64] > 3.0  # ~4x per halving: 2nd order


def test_heun_nfe_count():
    calls = []

    def D(x, sigma, labels=None):
        calls.append(float(sigma))
        return torch.zeros_like(x)

    heun_sample(D, torch.zeros(1, 1, 2, 2), karras_sigmas(18))
    assert len(calls) == nfe(18)


def test_seeded_latents_depend_only_on_seed():
    z1, y1 = seeded_latents([0, 1, 2, 3], (1, 4, 4), num_classes=10)
    z2, y2 = seeded_latents([2], (1, 4, 4), num_classes=10)
    torch.testing.assert_close(z1[2], z2[0])
    assert y1[2] == y2[0]
    assert not torch.equal(z1[0], z1[1])
    _, none = seeded_latents([0], (1, 2, 2))
    assert none is None
