"""EDM training loss (Karras et al. 2022, Eq. 2 and Sec. 5). The noise comes from the caller, so the
AOT pairing (aot.training.pairing) sits outside the loss and the loss is EDM's, unchanged (docs/method.md §1.1, §2.2)."""

from __future__ import annotations

import torch


def sample_sigma(n: int, *, P_mean: float, P_std: float, generator: torch.Generator, device=None) -> torch.Tensor:
    """ln(sigma) ~ N(P_mean, P_std^2), one sigma per sample, shape (n,)."""
    device = device if device is not None else generator.device
    return (torch.randn(n, generator=generator, device=device) * P_std + P_mean).exp()


def loss_weight(sigma: torch.Tensor, sigma_data: float = 0.5) -> torch.Tensor:
    """lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def edm_loss(
    denoiser,
    y: torch.Tensor,
    noise: torch.Tensor,
    sigma: torch.Tensor,
    labels: torch.Tensor | None = None,
    augment_labels: torch.Tensor | None = None,
    sigma_data: float = 0.5,
) -> torch.Tensor:
    """Per-sample loss lambda(sigma) ||D(y + sigma n; sigma) - y||^2 summed over pixels, shape (B,).

    y : Tensor, shape (B, C, H, W), clean images in [-1, 1]; noise : same shape, unit-variance noise (paired or
    independent); sigma : Tensor, shape (B,).
    """
    s = sigma.reshape(-1, 1, 1, 1)
    D_yn = denoiser(y + s * noise, sigma, labels, augment_labels)
    return loss_weight(sigma, sigma_data) * ((D_yn - y) ** 2).flatten(1).sum(1)
