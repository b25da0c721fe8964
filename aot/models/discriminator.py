"""The Discriminator Guidance network (docs/method.md §3.2-3.3): logits = head(features(x_vp, tau), tau[, class]).

At paper scale the features are the frozen ADM 32x32 classifier's middle-block output (512 x 8 x 8) and the head is
DG's small ADM encoder; at 64x64, guided-diffusion's ADM 64x64 classifier gives features of the same shape, read at
the cosine schedule's time (``time="cosine"``, as DG's sampler does for 64x64); without a pretrained extractor the head
sees the VP-diffused image itself. Checkpoints hold
the head's state_dict and plain constructor arguments; a pretrained extractor is referenced by path and sha256 and
reloaded from that file (:func:`discriminator_from_ctor`). Training lives in :mod:`aot.training.discriminator`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from aot.core.checkpoint import load_checkpoint
from aot.core.download import sha256_file
from aot.models.adm import EncoderUNet, load_weights
from aot.models.vp import cosine_time

TIMES = ("vp", "cosine")  # the time the extractor and head are fed: DG's VP time tau, or its cosine-schedule time


class Discriminator(nn.Module):
    """d(x_vp, tau, labels) -> logits (B,); sigmoid(logits) is the probability that x_vp is real data.

    Parameters
    ----------
    head : dict
        ``EncoderUNet`` constructor arguments of the trainable head (``out_channels`` must be 1).
    extractor : dict or None
        ``EncoderUNet`` constructor arguments of the frozen feature extractor, whose ``features`` (the output after
        its middle block) feed the head; ``None`` feeds the image itself.
    time : str
        ``"vp"``: the extractor and the head are fed the VP time tau; ``"cosine"``: the cosine schedule's time of the
        same signal level, :func:`aot.models.vp.cosine_time` (an extractor trained with that schedule, e.g.
        guided-diffusion's 64x64 classifier; DG's ``get_grad_log_ratio`` at ``img_resolution == 64``).
    """

    def __init__(self, head: dict, extractor: dict | None = None, time: str = "vp") -> None:
        super().__init__()
        if head.get("out_channels") != 1:
            raise ValueError(f"the discriminator head needs out_channels=1, got {head.get('out_channels')}")
        if time not in TIMES:
            raise ValueError(f"time={time!r} is unknown; valid choices: {', '.join(TIMES)}")
        self.time = time
        self.extractor = None if extractor is None else EncoderUNet(**extractor).eval().requires_grad_(False)
        self.head = EncoderUNet(**head)
        self.cond = head.get("num_classes") is not None  # an unconditional head ignores labels

    def forward(self, x_vp: torch.Tensor, tau: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        tau = torch.as_tensor(tau, dtype=torch.float32, device=x_vp.device).expand(x_vp.shape[0])
        if self.time == "cosine":
            tau = cosine_time(tau)
        h = x_vp if self.extractor is None else self.extractor.features(x_vp, tau)
        return self.head(h, tau, labels if self.cond else None).view(-1)

    def train(self, mode: bool = True) -> Discriminator:
        super().train(mode)
        if self.extractor is not None:  # frozen: always in eval mode
            self.extractor.eval()
        return self


def discriminator_from_ctor(ctor: dict[str, Any]) -> Discriminator:
    """Build the network and load the frozen extractor's weights (checked against the recorded sha256)."""
    disc = Discriminator(ctor["head"], ctor["extractor"], ctor.get("time", "vp"))  # "time": absent before adm64
    if disc.extractor is not None:
        path = Path(ctor["extractor_weights"])
        if not path.is_file():
            raise FileNotFoundError(f"feature extractor weights not found: {path}")
        if sha256_file(path) != ctor["extractor_sha256"]:
            raise ValueError(f"{path}: sha256 differs from the one this discriminator was trained with")
        load_weights(disc.extractor, path)
    return disc


def load_discriminator(path: str | Path, device="cpu") -> tuple[Discriminator, dict]:
    """A trained discriminator in eval mode with frozen parameters (input gradients still flow)."""
    ckpt = load_checkpoint(path, kind="discriminator")
    disc = discriminator_from_ctor(ckpt["ctor"])
    disc.head.load_state_dict(ckpt["state_dict"])
    return disc.eval().requires_grad_(False).to(device), ckpt
