"""Schedule endpoints and Heun against the exact probability-flow ODE of a Gaussian (closed form)."""

import math

import numpy as np
import pytest
import torch

from aot.sampling.samplers import edm_churn_gammas, heun_sample, karras_sigmas, nfe, seeded_latents


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
        sigma = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))  # 0-d or per sample (B,)
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


def _churn_run(mu, s, steps, gamma, every):
    """Heun with per-sample churn gamma on every ``every``-th step; returns (output, x_hat per step, draws, exact)
    where ``exact`` composes, for the same draws, the exact re-noising x_hat = x + sqrt(t_hat^2 - t^2) xi and the
    exact flow of Gaussian data x -> mu + (x - mu) sqrt(s^2 + t'^2) / sqrt(s^2 + t_hat^2); exact[i] is step i's x_hat
    and exact[-1] the endpoint."""
    z = torch.randn(len(gamma), 1, 2, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    sigmas = karras_sigmas(steps, 0.002, 80.0, 7.0)

    def churn(i):
        return gamma if i % every == 0 else torch.zeros_like(gamma)

    g, draws, x_hats = torch.Generator().manual_seed(4), [], []

    def randn():
        draws.append(torch.randn(z.shape, generator=g, dtype=torch.float64))
        return draws[-1]

    out = heun_sample(gaussian_denoiser(mu, s), z, sigmas, churn=churn, randn=randn,
                      callback=lambda i, x_hat, den, t_hat: x_hats.append(x_hat))
    x, exact = z * sigmas[0], []
    for i, (t, t_next) in enumerate(zip(sigmas[:-1], sigmas[1:], strict=True)):
        t_hat = (t * (1 + churn(i))).view(-1, 1, 1, 1)
        x = x + (t_hat**2 - t**2).sqrt() * draws[i]
        exact.append(x)
        x = mu + (x - mu) * torch.sqrt(s**2 + t_next**2) / torch.sqrt(s**2 + t_hat**2)
    return z, sigmas, out, x_hats, draws, [*exact, x]


def test_heun_churn_is_exact_where_heun_is():
    """Point-mass data (s = 0): the flow is linear in sigma, so every Heun step, from any per-sample sigma_hat, is
    exact, and each step's re-noised state must equal the exact composition to float32 rounding (EDM Algorithm 2's
    re-noising, per sample). A step started from sigma instead of sigma_hat, or from x instead of x_hat, fails."""
    gamma = torch.tensor([0.2, 0.0, 0.4, 0.0, 0.1, 0.0, 0.3, 0.0], dtype=torch.float64)
    _, _, _, x_hats, draws, exact = _churn_run(0.3, 0.0, 18, gamma, every=2)
    assert len(draws) == 18 and len(x_hats) == 18  # one draw per step, churned or not
    for i in range(18):
        torch.testing.assert_close(x_hats[i], exact[i], rtol=1e-7, atol=1e-6)  # the denoiser runs in float32
    assert (x_hats[2][0] - x_hats[2][1]).abs().max() > 1  # the churned sample really was re-noised


def test_heun_churn_on_gaussian_data_follows_the_exact_flow():
    """Gaussian data: Heun's own error grows like gamma^3 per churned step; for small gamma it stays small, and
    samples with gamma = 0 are exactly the deterministic sampler's."""
    mu, s = 0.3, 0.5
    gamma = torch.tensor([0.02, 0.0, 0.04, 0.0, 0.01, 0.0, 0.03, 0.0], dtype=torch.float64)
    z, sigmas, out, _, _, exact = _churn_run(mu, s, 256, gamma, every=3)
    torch.testing.assert_close(out, exact[-1], rtol=0, atol=2e-3)  # measured 5e-4
    plain = heun_sample(gaussian_denoiser(mu, s), z, sigmas)
    churned = gamma > 0
    assert (out[churned] - plain[churned]).abs().min() > 1e-2
    torch.testing.assert_close(out[~churned], plain[~churned], rtol=0, atol=0)
    with pytest.raises(ValueError, match="randn"):
        heun_sample(gaussian_denoiser(mu, s), z, sigmas, churn=lambda i: gamma)


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


def test_edm_churn_gammas_closed_form():
    """EDM Algorithm 2: gamma_i = min(S_churn / N, sqrt(2) - 1) on the steps with S_min <= sigma_i <= S_max."""
    sigmas = karras_sigmas(256, rho=7)
    g = edm_churn_gammas(sigmas, S_churn=40, S_min=0.05, S_max=50)
    inside = [0.05 <= float(t) <= 50 for t in sigmas[:-1]]
    assert len(g) == 256 and 0 < sum(inside) < 256
    assert g == [40 / 256 if x else 0.0 for x in inside]
    assert edm_churn_gammas(karras_sigmas(18), S_churn=80) == [math.sqrt(2) - 1] * 18  # capped
    assert edm_churn_gammas(karras_sigmas(18), S_churn=1, S_min=100) == [0.0] * 18


def test_generate_with_edms_stochastic_sampler(tmp_path):
    """generate(churn=...): reproducible per seed whatever the batch, different from deterministic Heun, and the
    settings recorded in the samples' meta."""
    import json

    from aot.core.checkpoint import save_checkpoint
    from aot.sampling.generate import generate
    from aot.training.loop import build_denoiser
    from aot.training.spec import TrainSpec

    spec = TrainSpec(network=dict(model_channels=8, channel_mult=[1, 1], num_blocks=1, attn_resolutions=[],
                                  dropout=0.0))
    torch.manual_seed(0)
    net, ctor = build_denoiser(spec, {"num_classes": 10}, 8, 1)
    with torch.no_grad():  # O(1) weights, so that the network's output matters
        for p in net.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    ckpt = tmp_path / "net.pt"
    save_checkpoint(ckpt, kind="denoiser", state_dict=net.state_dict(), ctor=ctor, config={"pairing": "none",
                                                                                            "cond": False})
    churn = dict(S_churn=40.0, S_min=0.05, S_max=50.0, S_noise=1.003)
    kw = dict(rho=7, steps=8, progress=False)
    a = generate(ckpt, seeds=range(4), batch=4, churn=churn, **kw)
    b = generate(ckpt, seeds=range(4), batch=3, churn=churn, **kw)
    c = generate(ckpt, seeds=range(2, 4), batch=2, churn=churn, **kw)
    plain = generate(ckpt, seeds=range(4), batch=4, **kw)
    assert np.array_equal(a["images"], b["images"]) and np.array_equal(a["images"][2:], c["images"])
    assert np.abs(a["images"].astype(int) - plain["images"]).max() > 10
    assert json.loads(str(a["meta"]))["churn"] == churn and "churn" not in json.loads(str(plain["meta"]))
