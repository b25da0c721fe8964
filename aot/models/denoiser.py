"""Denoisers from checkpoints: EDM's preconditioned backbone rebuilt from the plain-data constructor arguments a
checkpoint carries (``ctor``), loaded with ``weights_only=True``."""

from __future__ import annotations

from pathlib import Path

from aot.core.checkpoint import load_checkpoint
from aot.models.networks import SongUNet
from aot.models.precond import EDMPrecond


def denoiser_from_ctor(ctor: dict) -> EDMPrecond:
    return EDMPrecond(SongUNet(**ctor["network"]), label_dim=ctor["label_dim"], sigma_data=ctor["sigma_data"])


def load_denoiser(path: str | Path, device="cpu") -> tuple[EDMPrecond, dict]:
    """Rebuild a trained denoiser from its checkpoint (EMA weights), in eval mode."""
    ckpt = load_checkpoint(path, kind="denoiser")
    net = denoiser_from_ctor(ckpt["ctor"])
    net.load_state_dict(ckpt["state_dict"])
    return net.eval().requires_grad_(False).to(device), ckpt
