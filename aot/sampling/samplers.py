"""Noise schedule and the Heun sampler of EDM (Karras et al. 2022, Eq. 5, Algorithm 1, and Algorithm 2's churn).

A denoiser is any callable ``D(x, sigma, labels) -> x0_hat``. NFE of Heun with ``steps`` noise levels is
2 * steps - 1 (the last step to sigma = 0 is a plain Euler step).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from aot.core.defaults import SIGMA_MAX, SIGMA_MIN

Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def karras_sigmas(steps: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX,
                  rho: float = 7.0) -> torch.Tensor:
    """EDM Eq. 5: sigma_i = (sigma_max^(1/rho) + i/(steps-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho,
    i = 0..steps-1, then sigma_steps = 0. Float64, shape (steps + 1,)."""
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    i = torch.arange(steps, dtype=torch.float64)
    inv = 1.0 / rho
    sigmas = (sigma_max**inv + i / (steps - 1) * (sigma_min**inv - sigma_max**inv)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def nfe(steps: int) -> int:
    """Denoiser evaluations of Heun with ``steps`` noise levels (EDM: 2 * steps - 1)."""
    return 2 * steps - 1


def slope(denoise: Denoiser, x: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor | None = None,
          denoise_dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """ODE slope d = dx/dsigma = (x - D(x; sigma)) / sigma (EDM Eq. 3 / Algorithm 1 line 4), and D(x; sigma).

    x : float64 state (B, C, H, W); sigma : float64, 0-d or per sample (B,). The denoiser is called in
    ``denoise_dtype`` (float32, as EDM's generate.py) and its output carried in float64.
    """
    denoised = denoise(x.to(denoise_dtype), sigma.to(denoise_dtype), labels).to(torch.float64)
    sigma_b = sigma.view((-1,) + (1,) * (x.ndim - 1)) if sigma.ndim else sigma
    return (x - denoised) / sigma_b, denoised


def heun_step(denoise: Denoiser, x_hat: torch.Tensor, t_hat: torch.Tensor, t_next: torch.Tensor,
              labels: torch.Tensor | None = None, denoise_2nd: Denoiser | None = None,
              denoise_dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step of EDM Algorithm 1 from ``t_hat`` (0-d, or (B,) after per-sample churn) to ``t_next`` (0-d).

    The only Heun step of the package: ``heun_sample``, ``heun_solve`` and the trajectory metrics all chain it.
    The 2nd order correction uses ``denoise_2nd`` (default ``denoise``) and is skipped on a step to sigma = 0
    (a plain Euler step). Returns (x_next, d_cur, denoised): the new float64 state, the Euler slope at ``t_hat``
    and the denoiser's output there.
    """
    t_hat_b = t_hat.view((-1,) + (1,) * (x_hat.ndim - 1)) if t_hat.ndim else t_hat
    # Euler step.
    d_cur, denoised = slope(denoise, x_hat, t_hat, labels, denoise_dtype)
    x_next = x_hat + (t_next - t_hat_b) * d_cur
    # Second order correction (skipped on the final step to sigma = 0).
    if t_next > 0:
        d_prime, _ = slope(denoise if denoise_2nd is None else denoise_2nd, x_next, t_next, labels, denoise_dtype)
        x_next = x_hat + (t_next - t_hat_b) * (0.5 * d_cur + 0.5 * d_prime)
    return x_next, d_cur, denoised


@torch.no_grad()
def heun_sample(
    denoise: Denoiser,
    z: torch.Tensor,
    sigmas: torch.Tensor,
    labels: torch.Tensor | None = None,
    callback: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None,
    denoise_2nd: Denoiser | None = None,
    churn: Callable[[int], torch.Tensor] | None = None,
    randn: Callable[[], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Heun 2nd order solve of dx/dsigma = (x - D(x; sigma)) / sigma (EDM Algorithm 1; with ``churn``, Algorithm 2).

    z : Tensor, shape (B, C, H, W), unit Gaussian latents; sigmas : (steps + 1,) ending in 0.
    ``callback(i, x_i, denoised_i, sigma_i)`` sees every step's start and its Euler evaluation (for trajectory
    metrics). ``denoise_2nd`` (default: ``denoise``) is used for the 2nd order correction; Discriminator Guidance
    guides only the Euler evaluation by default (``aot.sampling.guidance``).
    ``churn(i)`` (optional) returns each sample's gamma (B,) before step i, as EDM's stochastic sampler but per
    sample: x is re-noised from sigma_i to sigma_hat = sigma_i (1 + gamma) with fresh noise ``randn()`` (N(0, I)
    shaped like z, drawn on every step so that each sample's stream stays aligned) and the step starts from
    sigma_hat; the denoiser then sees a (B,) sigma. DG's boosting is built on it (``guidance.boosted_heun_sample``).
    The state is carried in float64 as EDM's generate.py does; the denoiser is called in float32.
    """
    if churn is not None and randn is None:
        raise ValueError("churn needs randn, the source of the re-noising draws")
    sigmas = sigmas.to(device=z.device, dtype=torch.float64)
    view = (-1,) + (1,) * (z.ndim - 1)
    x_next = z.to(torch.float64) * sigmas[0]
    for i, (t_cur, t_next) in enumerate(zip(sigmas[:-1], sigmas[1:], strict=True)):
        x_cur = x_next
        if churn is None:
            x_hat, t_hat = x_cur, t_cur
        else:  # per-sample re-noising to t_hat >= t_cur
            t_hat = t_cur * (1 + churn(i).to(device=z.device, dtype=torch.float64))  # (B,)
            xi = randn().to(device=z.device, dtype=torch.float64)
            x_hat = x_cur + (t_hat.view(view) ** 2 - t_cur**2).sqrt() * xi
        x_next, _, denoised = heun_step(denoise, x_hat, t_hat, t_next, labels, denoise_2nd)
        if callback is not None:
            callback(i, x_hat, denoised, t_hat)
    return x_next


@torch.no_grad()
def heun_solve(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, labels: torch.Tensor | None = None,
               denoise_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Heun steps through ``sigmas`` (decreasing, shape (n,)) starting from the state ``x`` at sigmas[0].

    Unlike ``heun_sample`` the input is the state itself (not unit noise), so any sub-interval can be solved.
    """
    sigmas = sigmas.to(device=x.device, dtype=torch.float64)
    x = x.to(torch.float64)
    for t_cur, t_next in zip(sigmas[:-1], sigmas[1:], strict=True):
        x, _, _ = heun_step(denoise, x, t_cur, t_next, labels, denoise_dtype=denoise_dtype)
    return x


def edm_churn_gammas(sigmas: torch.Tensor, S_churn: float, S_min: float = 0.0,
                     S_max: float = float("inf")) -> list[float]:
    """EDM Algorithm 2's gamma_i = min(S_churn / N, sqrt(2) - 1) where S_min <= sigma_i <= S_max, else 0, for the N
    steps of ``sigmas`` (shape (N + 1,), ending in 0)."""
    steps = len(sigmas) - 1
    gamma = min(S_churn / steps, 2**0.5 - 1)
    return [gamma if S_min <= float(t) <= S_max else 0.0 for t in sigmas[:-1]]


def seed_generators(seeds: list[int] | torch.Tensor, device=None) -> list[torch.Generator]:
    """One torch.Generator per seed (EDM's StackedRandomGenerator): image i's randomness depends only on seed i."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]


def seeded_latents(
    seeds: list[int] | torch.Tensor,
    shape: tuple[int, ...],
    num_classes: int = 0,
    device=None,
    generators: list[torch.Generator] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Latents (B, *shape) and, if ``num_classes`` > 0, class labels (B,) drawn from one generator per seed (labels
    after the latents), so image i depends only on seed i whatever the batch. Pass ``generators`` (from
    ``seed_generators``) to keep drawing from the same streams afterwards, as EDM's samplers do for churn noise."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    gens = seed_generators(seeds, device) if generators is None else generators
    zs = [torch.randn(shape, generator=g, device=device) for g in gens]
    ys = [torch.randint(num_classes, (1,), generator=g, device=device) for g in gens] if num_classes > 0 else []
    z = torch.stack(zs)
    return z, (torch.cat(ys) if num_classes > 0 else None)
