"""Non-finite numbers: the error a diverged run raises and the fused finiteness check the loops read once per tick."""

from __future__ import annotations

import torch
from torch import nn


class DivergenceError(ValueError):
    """A run produced non-finite numbers (loss, weights or images); ``python -m aot`` reports it as one line."""


def finite_flags(losses: list[torch.Tensor], *modules: nn.Module) -> torch.Tensor:
    """Bool tensor on the device: [all ``losses`` finite, then per module all its parameters and floating buffers
    finite]. Fused, with no device sync and no random draw: the caller reads it once (``.tolist()``)."""
    device = next(modules[0].parameters()).device if modules else torch.device("cpu")

    def all_finite(ts: list[torch.Tensor]) -> torch.Tensor:
        flags = [t.isfinite().all() for t in ts]
        return torch.stack(flags).all() if flags else torch.ones((), dtype=torch.bool, device=device)

    weights = [[*m.parameters(), *(b for b in m.buffers() if b.is_floating_point())] for m in modules]
    return torch.stack([all_finite(losses), *map(all_finite, weights)])
