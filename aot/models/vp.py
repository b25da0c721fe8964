"""DG's VP-SDE (Song et al. 2021): the diffusion a guidance discriminator is trained and read on.

beta(t) = beta_0 + t (beta_1 - beta_0) on t in [0, 1] with beta_0 = 0.1, beta_1 = 20 (docs/method.md §3.4);
x_t = alpha(t) x_0 + s(t) z; the VP time of an EDM sigma; the cosine schedule's time of the same signal level; DG's
importance-sampled training times (closed forms, tested in tests/test_guidance.py).
"""

from __future__ import annotations

import math

import torch

BETA_0 = 0.1  # VP-SDE beta(t) = beta_0 + t (beta_1 - beta_0), t in [0, 1] (Song et al. 2021; DG)


BETA_1 = 20.0


T_MIN = 1e-5  # smallest training time of the discriminator (DG)


COSINE_S = 0.008  # offset s of the cosine schedule (Nichol & Dhariwal 2021; DG's vpsde.s)


def integral_beta(t: torch.Tensor) -> torch.Tensor:
    """B(t) = int_0^t beta(s) ds = t^2 (beta_1 - beta_0) / 2 + t beta_0."""
    return 0.5 * t**2 * (BETA_1 - BETA_0) + t * BETA_0


def vp_alpha(t: torch.Tensor) -> torch.Tensor:
    """Mean coefficient alpha(t) = exp(-B(t) / 2) of x_t = alpha(t) x_0 + s(t) z."""
    return torch.exp(-0.5 * integral_beta(t))


def vp_std(t: torch.Tensor) -> torch.Tensor:
    """s(t) = sqrt(1 - alpha(t)^2)."""
    return torch.sqrt(-torch.expm1(-integral_beta(t)))


def vp_time_of_sigma(sigma: torch.Tensor) -> torch.Tensor:
    """tau with sigma_VE = s(tau) / alpha(tau), i.e. B(tau) = ln(1 + sigma^2), solved for tau >= 0."""
    b = BETA_1 - BETA_0
    return (-BETA_0 + torch.sqrt(BETA_0**2 + 2.0 * b * torch.log1p(sigma**2))) / b


def cosine_time(t: torch.Tensor) -> torch.Tensor:
    """The cosine schedule's time of the same signal level as VP time ``t``: alpha_bar_cos(t_cos) = alpha(t)^2.

    alpha_bar_cos(u) = f(u) / f(0), f(u) = cos^2((u + s) / (1 + s) pi / 2) (improved DDPM's schedule, with which
    guided-diffusion's 64x64 models were trained), so t_cos = (1 + s) (2 / pi) arccos(sqrt(f(0)) alpha(t)) - s.
    DG converts tau this way before its 64x64 classifier (classifier_lib ``compute_t_cos_from_t_lin``).
    """
    f0 = math.cos(COSINE_S / (1.0 + COSINE_S) * math.pi / 2.0)  # sqrt(f(0))
    return (1.0 + COSINE_S) * 2.0 / math.pi * torch.arccos(f0 * vp_alpha(t)) - COSINE_S


def _antiderivative(t: torch.Tensor) -> torch.Tensor:
    """A(t) = ln(1 - e^{-B(t)}) + B(t) = ln(e^{B(t)} - 1): A'(t) = beta(t) / (1 - e^{-B(t)}) = beta(t) / s(t)^2."""
    bt = integral_beta(t)
    return torch.log(-torch.expm1(-bt)) + bt


def sample_vp_time(
    n: int, generator: torch.Generator | None = None, t_min: float = T_MIN, device=None
) -> torch.Tensor:
    """Training times t in [t_min, 1] with density proportional to beta(t) / s(t)^2 (DG's importance sampling).

    Inverse CDF: A(t) = A(t_min) + u (A(1) - A(t_min)), u ~ U(0, 1), and A^{-1}(a) = B^{-1}(ln(1 + e^a)).
    Float32, shape (n,).
    """
    a_min, a_max = (_antiderivative(torch.tensor(v, dtype=torch.float64)) for v in (t_min, 1.0))
    u = torch.rand(n, generator=generator, dtype=torch.float64, device=generator.device if generator else None)
    a = a_min + u * (a_max - a_min)
    b = BETA_1 - BETA_0
    t = (-BETA_0 + torch.sqrt(BETA_0**2 + 2.0 * b * torch.nn.functional.softplus(a))) / b
    return t.to(device=device, dtype=torch.float32)


def perturb(x: torch.Tensor, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """x_t = alpha(t) x + s(t) z, t of shape (B,)."""
    shape = (-1,) + (1,) * (x.ndim - 1)
    return vp_alpha(t).view(shape) * x + vp_std(t).view(shape) * z
