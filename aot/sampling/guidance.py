"""Discriminator Guidance (DG; Kim et al., ICML 2023) as a wrapper from denoiser to denoiser.

A discriminator d(x_t, t) in (0, 1) is trained to tell real (1) from generated (0) data diffused by a VP-SDE
(beta_0 = 0.1, beta_1 = 20, docs/method.md §3.4). Its log density ratio log r = log d / (1 - d) estimates
log p_data / p_model, so adding w * grad log r to the model's score moves samples toward the data. In EDM's
sigma-ODE dx/dsigma = (x - D(x; sigma)) / sigma = -sigma * score, that is (docs/method.md §3.1, §3.5)

    d_i -> d_i - w sigma grad_x log r(x, sigma)    <=>    D(x; sigma) -> D(x; sigma) + w sigma^2 grad_x log r,

with the discriminator read at VP time tau(sigma) on the VP-scaled input x_vp = alpha(tau) x, so
grad_x log r = alpha(tau) grad_{x_vp} log r. ``with_discriminator`` returns that guided denoiser; samplers run it
unchanged (``samplers.heun_sample(..., denoise_2nd=...)`` lets DG's default guide only the Euler evaluation).

Also here: ``boosted_heun_sample``, DG's EDM-G++ sampler with "boosting" (extra churn and a doubled guidance weight for the
samples the discriminator currently rejects; DG's README uses it for conditional CIFAR-10).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from aot.models.vp import vp_alpha, vp_time_of_sigma
from aot.sampling.samplers import Denoiser, heun_sample

P_CLIP = 1e-5  # d is clipped to [P_CLIP, 1 - P_CLIP] before the log ratio (DG)

# A discriminator: (x_vp (B, C, H, W), tau (B,), labels (B,) int or None) -> logits (B,).
Discriminator = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]

# ----------------------------------------------------------------------------
# Guidance.


def log_ratio(disc: Discriminator, x_vp: torch.Tensor, tau: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """log d / (1 - d) with d = sigmoid(logits) clipped to [1e-5, 1 - 1e-5] as DG does, shape (B,)."""
    d = torch.sigmoid(disc(x_vp, tau, labels)).clamp(P_CLIP, 1.0 - P_CLIP)
    return torch.log(d / (1.0 - d))


def grad_log_ratio(
    disc: Discriminator,
    x: torch.Tensor,
    sigma: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    time_min: float = 0.01,
    time_max: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """grad_x log r(x, sigma) in EDM's (VE) scale, and log r itself.

    x : (B, C, H, W) at noise level sigma (a 0-d or (B,) tensor). Outside time_min <= tau(sigma) <= time_max
    the gradient is zero and log r is reported as +inf (DG: guidance off there).
    """
    sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).expand(x.shape[0])
    tau = vp_time_of_sigma(sigma)
    if tau.min() < time_min or tau.max() > time_max:
        return torch.zeros_like(x), torch.full((x.shape[0],), math.inf, device=x.device)
    alpha = vp_alpha(tau).view(-1, *([1] * (x.ndim - 1)))
    with torch.enable_grad():
        x_vp = (alpha * x.float()).detach().requires_grad_(True)
        lr = log_ratio(disc, x_vp, tau, labels)
        (grad_vp,) = torch.autograd.grad(lr.sum(), x_vp)
    return (alpha * grad_vp).to(x.dtype), lr.detach()


def with_discriminator(
    denoise: Denoiser, disc: Discriminator, weight: float, *, time_min: float = 0.01, time_max: float = 1.0
) -> Denoiser:
    """The guided denoiser D_w(x; sigma) = D(x; sigma) + weight * sigma^2 * grad_x log r(x, sigma).

    weight = 0 returns ``denoise`` itself. In Heun's Euler step this is DG's d_i += w1 * g / sigma with
    g = -sigma^2 alpha grad_{x_vp} log r (docs/method.md §3.5).
    """
    if weight == 0:
        return denoise

    def guided(x: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        denoised = denoise(x, sigma, labels)
        grad, _ = grad_log_ratio(disc, x, sigma, labels, time_min=time_min, time_max=time_max)
        sigma = torch.as_tensor(sigma, dtype=denoised.dtype, device=x.device).reshape(-1, *([1] * (x.ndim - 1)))
        return denoised + weight * sigma**2 * grad.to(denoised.dtype)

    return guided


@torch.no_grad()
def boosted_heun_sample(
    denoise: Denoiser,
    disc: Discriminator,
    z: torch.Tensor,
    sigmas: torch.Tensor,
    labels: torch.Tensor | None,
    randn: Callable[[], torch.Tensor],
    *,
    weight: float,
    weight_2nd: float = 0.0,
    time_min: float = 0.01,
    time_max: float = 1.0,
    churn: float = 4.0,
    period: int = 5,
    period_weight: int = 2,
) -> torch.Tensor:
    """DG's EDM-G++ sampler with boosting (DG generate.py ``edm_sampler`` with ``--boosting 1``; docs/method.md §3.5).

    ``samplers.heun_sample`` with the guided Euler evaluation, plus, per sample, with log r the discriminator's log
    ratio at that sample's last guided evaluation (+inf before the first):
    every ``period``-th step (i % period == 0) a sample with log r < 0 is re-noised first,
    sigma_hat = sigma (1 + gamma), gamma = min(churn / steps, sqrt(2) - 1), x_hat = x + sqrt(sigma_hat^2 - sigma^2) xi;
    and on every ``period_weight``-th step its guidance term is doubled where the current log r < 0.
    ``randn()`` returns fresh N(0, I) noise shaped like z (one generator per seed: ``samplers.seed_generators``);
    it is called on every step, as DG does, so a sample's noise does not depend on the others'.
    """
    boost = _Boosting(denoise, disc, z.shape[0], len(sigmas) - 1, z.device, weight=weight, time_min=time_min,
                      time_max=time_max, churn=churn, period=period, period_weight=period_weight)
    denoise_2nd = with_discriminator(denoise, disc, weight_2nd, time_min=time_min, time_max=time_max)
    return heun_sample(boost.euler, z, sigmas, labels, denoise_2nd=denoise_2nd, churn=boost.churn, randn=randn)


class _Boosting:
    """DG's boosting state through one sampling run: each sample's log r at its last guided Euler evaluation.

    ``heun_sample`` calls ``churn(i)`` at the top of step i, then ``euler`` once (the guided Euler evaluation),
    in that order; ``churn`` records the step so that ``euler`` knows when to double the weight.
    """

    def __init__(self, denoise: Denoiser, disc: Discriminator, batch: int, steps: int, device: torch.device, *,
                 weight: float, time_min: float, time_max: float, churn: float, period: int, period_weight: int):
        self.denoise, self.disc, self.weight = denoise, disc, weight
        self.window = dict(time_min=time_min, time_max=time_max)
        self.period, self.period_weight = period, period_weight
        self.gamma_boost = min(churn / steps, math.sqrt(2) - 1)
        self.log_r = torch.full((batch,), math.inf, device=device)
        self.step = 0

    def churn(self, i: int) -> torch.Tensor:
        self.step = i
        gamma = torch.zeros(self.log_r.shape, dtype=torch.float64, device=self.log_r.device)
        if i % self.period == 0:
            gamma[self.log_r < 0] = self.gamma_boost
        return gamma

    def euler(self, x: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        denoised = self.denoise(x, sigma, labels)
        grad, self.log_r = grad_log_ratio(self.disc, x, sigma, labels, **self.window)
        w = torch.full_like(self.log_r, self.weight)
        if self.step % self.period_weight == 0:
            w[self.log_r < 0] *= 2
        view = (-1,) + (1,) * (x.ndim - 1)
        sigma = torch.as_tensor(sigma, dtype=denoised.dtype, device=x.device).expand(x.shape[0])
        return denoised + (w.to(denoised.dtype) * sigma**2).view(view) * grad.to(denoised.dtype)
