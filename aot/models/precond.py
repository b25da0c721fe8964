"""EDM preconditioning (Karras et al. 2022, Table 1 / Sec. 5): backbone F -> denoiser D(x; sigma).

D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x; c_noise(sigma)), with

    c_skip = sigma_data^2 / (sigma^2 + sigma_data^2)      c_out = sigma sigma_data / sqrt(sigma^2 + sigma_data^2)
    c_in   = 1 / sqrt(sigma^2 + sigma_data^2)              c_noise = ln(sigma) / 4

The backbone is held as ``self.model`` so that the state-dict keys (``model.*``) line up with EDM's EDMPrecond.
With ``use_fp16`` (EDM's ``--fp16``, ImageNet-64) the backbone runs in float16 on CUDA: its input is cast to
float16 and every layer casts its float32 weights to it, while the noise embedding, the coefficients and D(x) stay
float32. On other devices it runs in float32, as in EDM.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


class EDMCoefficients(NamedTuple):
    c_skip: torch.Tensor
    c_out: torch.Tensor
    c_in: torch.Tensor
    c_noise: torch.Tensor


def edm_coefficients(sigma: torch.Tensor, sigma_data: float = 0.5) -> EDMCoefficients:
    """Preconditioning coefficients of EDM Table 1 (any shape of ``sigma``)."""
    s2 = sigma**2 + sigma_data**2
    return EDMCoefficients(
        c_skip=sigma_data**2 / s2,
        c_out=sigma * sigma_data / s2.sqrt(),
        c_in=1 / s2.sqrt(),
        c_noise=sigma.log() / 4,
    )


def one_hot(labels: torch.Tensor | None, label_dim: int, batch: int, device, dtype) -> torch.Tensor | None:
    """Class indices (B,) -> one-hot (B, label_dim); float one-hot input passes through; None if unconditional."""
    if label_dim == 0:
        return None
    if labels is None:
        raise ValueError("this denoiser is class-conditional: pass class labels")
    if labels.dtype in (torch.int32, torch.int64):
        return nn.functional.one_hot(labels.to(device), label_dim).to(dtype)
    return labels.to(device=device, dtype=dtype).reshape(batch, label_dim)


class EDMPrecond(nn.Module):
    """Wrap a backbone ``model(x, noise_labels, class_labels, augment_labels)`` into the denoiser D(x; sigma)."""

    def __init__(self, model: nn.Module, label_dim: int = 0, sigma_data: float = 0.5, use_fp16: bool = False):
        super().__init__()
        self.model = model
        self.label_dim = label_dim  # 0 = unconditional
        self.sigma_data = sigma_data  # expected std of the data (EDM: 0.5 for images in [-1, 1])
        self.use_fp16 = use_fp16  # run the backbone in float16 on CUDA (EDM --fp16)

    def forward(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor | float,
        class_labels: torch.Tensor | None = None,
        augment_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x : Tensor, shape (B, C, H, W); sigma : scalar or (B,); labels : (B,) int or (B, K) one-hot."""
        x = x.to(torch.float32)
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1, 1, 1, 1)
        sigma = sigma.expand(x.shape[0], 1, 1, 1)
        c = edm_coefficients(sigma, self.sigma_data)
        labels = one_hot(class_labels, self.label_dim, x.shape[0], x.device, torch.float32)
        dtype = torch.float16 if self.use_fp16 and x.device.type == "cuda" else torch.float32
        F_x = self.model((c.c_in * x).to(dtype), c.c_noise.flatten(), class_labels=labels,
                         augment_labels=augment_labels)
        return c.c_skip * x + c.c_out * F_x.to(torch.float32)
