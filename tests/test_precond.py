"""EDM preconditioning and loss against their closed forms (Karras et al. 2022, Table 1)."""

import math

import pytest
import torch

from aot.models.precond import EDMPrecond, edm_coefficients
from aot.training.loss import edm_loss, loss_weight, sample_sigma


@pytest.mark.parametrize("sigma_data", [0.5, 1.0])
@pytest.mark.parametrize("sigma", [0.002, 0.1, 0.5, 1.0, 80.0])
def test_coefficients_closed_form(sigma, sigma_data):
    c = edm_coefficients(torch.tensor(sigma, dtype=torch.float64), sigma_data)
    s2 = sigma**2 + sigma_data**2
    assert c.c_skip.item() == pytest.approx(sigma_data**2 / s2, rel=1e-12)
    assert c.c_out.item() == pytest.approx(sigma * sigma_data / math.sqrt(s2), rel=1e-12)
    assert c.c_in.item() == pytest.approx(1 / math.sqrt(s2), rel=1e-12)
    assert c.c_noise.item() == pytest.approx(math.log(sigma) / 4, rel=1e-12, abs=1e-15)
    # EDM's design: unit-variance network input and effective training target, and lambda * c_out^2 = 1.
    assert (c.c_in**2 * s2).item() == pytest.approx(1.0, rel=1e-12)
    assert (loss_weight(torch.tensor(sigma, dtype=torch.float64), sigma_data) * c.c_out**2).item() == \
        pytest.approx(1.0, rel=1e-12)


def test_sigma_data_point():
    c = edm_coefficients(torch.tensor(0.5, dtype=torch.float64), 0.5)
    assert c.c_skip.item() == pytest.approx(0.5)
    assert c.c_out.item() == pytest.approx(0.5 / math.sqrt(2))
    assert c.c_in.item() == pytest.approx(1 / (0.5 * math.sqrt(2)))


class Recorder(torch.nn.Module):
    """Backbone that returns a fixed multiple of its input and records what it was called with."""

    def forward(self, x, noise_labels, class_labels=None, augment_labels=None):
        self.seen = (x, noise_labels, class_labels)
        return 3 * x


def test_denoiser_matches_formula_and_passes_labels():
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.01, 0.3, 2.0, 50.0])
    net = EDMPrecond(Recorder(), label_dim=10, sigma_data=0.5)
    out = net(x, sigma, torch.tensor([0, 3, 9, 3]))
    c = edm_coefficients(sigma.reshape(-1, 1, 1, 1), 0.5)
    torch.testing.assert_close(out, c.c_skip * x + c.c_out * 3 * (c.c_in * x))
    xin, noise_labels, labels = net.model.seen
    torch.testing.assert_close(noise_labels, sigma.log() / 4)
    assert labels.shape == (4, 10) and labels.sum(1).eq(1).all() and labels[1, 3] == 1


def test_denoiser_is_identity_as_sigma_to_zero():
    x = torch.randn(2, 3, 4, 4)
    net = EDMPrecond(Recorder(), label_dim=0)
    torch.testing.assert_close(net(x, 1e-6), x, atol=1e-4, rtol=0)


def test_conditional_denoiser_requires_labels():
    with pytest.raises(ValueError, match="class labels"):
        EDMPrecond(Recorder(), label_dim=10)(torch.zeros(1, 1, 2, 2), 1.0)


def test_loss_zero_for_perfect_denoiser_and_weighted():
    y = torch.randn(3, 1, 4, 4)
    noise = torch.randn(3, 1, 4, 4)
    sigma = torch.tensor([0.1, 1.0, 10.0])
    oracle = lambda x, s, labels=None, aug=None: y  # noqa: E731
    assert edm_loss(oracle, y, noise, sigma).abs().max() == 0
    zero = lambda x, s, labels=None, aug=None: torch.zeros_like(x)  # noqa: E731
    expect = loss_weight(sigma) * (y**2).flatten(1).sum(1)
    torch.testing.assert_close(edm_loss(zero, y, noise, sigma), expect)


def test_sigma_distribution_is_lognormal():
    s = sample_sigma(200_000, P_mean=-1.2, P_std=1.2, generator=torch.Generator().manual_seed(0))
    assert s.log().mean().item() == pytest.approx(-1.2, abs=0.01)
    assert s.log().std().item() == pytest.approx(1.2, abs=0.01)


class _DtypeProbe(torch.nn.Module):
    """A backbone that records the dtype it is called with and returns its input."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x, noise_labels, class_labels=None, augment_labels=None):
        self.seen.append((x.dtype, noise_labels.dtype))
        return x


def test_fp16_only_on_cuda():
    """EDM --fp16: float16 backbone input on CUDA only; on a CPU the same float32 call as without it."""
    probe = _DtypeProbe()
    x = torch.randn(2, 1, 4, 4)
    sigma = torch.tensor([0.3, 3.0])
    out16 = EDMPrecond(probe, use_fp16=True)(x, sigma)
    out32 = EDMPrecond(probe)(x, sigma)
    assert probe.seen == [(torch.float32, torch.float32)] * 2
    assert out16.dtype == torch.float32 and torch.equal(out16, out32)
    if torch.cuda.is_available():
        out = EDMPrecond(probe, use_fp16=True)(x.cuda(), sigma.cuda())
        assert probe.seen[-1] == (torch.float16, torch.float32) and out.dtype == torch.float32
