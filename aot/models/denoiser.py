"""Denoisers from checkpoints: EDM's preconditioned backbone rebuilt from the plain-data constructor arguments a
checkpoint carries (``ctor``), loaded with ``weights_only=True``."""

from __future__ import annotations

from pathlib import Path

from aot.core.checkpoint import load_checkpoint
from aot.models.networks import BACKBONES
from aot.models.precond import EDMPrecond


def denoiser_from_ctor(ctor: dict) -> EDMPrecond:
    """EDMPrecond(backbone) from a checkpoint's ``ctor``: ``network`` (the backbone's kwargs), ``label_dim``,
    ``sigma_data``, and optionally ``model_type`` (EDM's class name; default SongUNet) and ``use_fp16``."""
    model_type = ctor.get("model_type", "SongUNet")
    if model_type not in BACKBONES:
        raise ValueError(f"unknown backbone model_type {model_type!r}; valid choices: {', '.join(BACKBONES)}")
    return EDMPrecond(BACKBONES[model_type](**ctor["network"]), label_dim=ctor["label_dim"],
                      sigma_data=ctor["sigma_data"], use_fp16=bool(ctor.get("use_fp16", False)))


def load_denoiser(path: str | Path, device="cpu") -> tuple[EDMPrecond, dict]:
    """Rebuild a trained denoiser from its checkpoint (EMA weights), in eval mode."""
    ckpt = load_checkpoint(path, kind="denoiser")
    net = denoiser_from_ctor(ckpt["ctor"])
    net.load_state_dict(ckpt["state_dict"])
    return net.eval().requires_grad_(False).to(device), ckpt
