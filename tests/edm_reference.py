"""What EDM's DhariwalUNet and ours are compared on: weights and inputs drawn from seeds, never stored.

Shared by tests/test_networks.py and tools/edm_fixtures.py (which ran EDM's own class on them and stored only its
outputs and init statistics in tests/fixtures/edm_small_adm.pt), so the fixture stays a few kB however large the
network is.
"""

from __future__ import annotations

import math

import torch

# Small DhariwalUNet: 8x8 down to 2x2 with 32, 64 and 128 channels, i.e. 0, 1 and 2 attention heads (EDM: one head
# per 64 channels, none below), one-hot labels and augmentation labels, GroupNorm with 8, 16 and 32 groups.
ADM_SMALL = dict(img_resolution=8, in_channels=3, out_channels=3, label_dim=10, augment_dim=9, model_channels=16,
                 channel_mult=[2, 4, 8], channel_mult_emb=4, num_blocks=1, attn_resolutions=[8, 4, 2], dropout=0.0)


def redraw_parameters(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter redrawn at O(1) scale, in sorted-name order from one generator, so two networks with the same
    parameter names and shapes get the same weights (EDM's zero-init output layers would make outputs vanish).
    Buffers (the resampling filters) are kept."""
    g = torch.Generator().manual_seed(seed)
    params = dict(net.named_parameters())
    with torch.no_grad():
        for name in sorted(params):
            p = params[name]
            fan = p[0].numel() if p.ndim > 1 else 5
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan))
    return net


def reference_inputs(batch: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    """x, noise_labels, one-hot class_labels and augment_labels for :data:`ADM_SMALL`."""
    g = torch.Generator().manual_seed(seed)
    c = ADM_SMALL
    x = torch.randn(batch, c["in_channels"], c["img_resolution"], c["img_resolution"], generator=g)
    noise_labels = torch.randn(batch, generator=g)
    class_labels = torch.nn.functional.one_hot(torch.arange(batch) % c["label_dim"], c["label_dim"]).float()
    augment_labels = torch.randn(batch, c["augment_dim"], generator=g)
    return dict(x=x, noise_labels=noise_labels, class_labels=class_labels, augment_labels=augment_labels)


def init_statistics(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Per parameter [mean, std, numel] of the network as constructed."""
    return {k: torch.tensor([p.mean().item(), p.std().item() if p.numel() > 1 else 0.0, p.numel()],
                            dtype=torch.float64) for k, p in net.named_parameters()}
