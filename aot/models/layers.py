"""The layers EDM's U-Nets are built of (NVlabs/edm ``training/networks.py``, commit 008a4e5): EDM's weight
initialisation, Linear / Conv2d with its fused up/down-sampling, GroupNorm, the U-Net block with optional attention, and
the positional / Fourier noise embeddings. Parameter names and shapes are EDM's."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.functional import silu

SKIP_SCALE = math.sqrt(0.5)  # EDM skip_scale: keeps the variance of residual sums at ~1


def _xavier_uniform(shape: Sequence[int], fan_in: int, fan_out: int, gain: float) -> Tensor:
    """U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out)); EDM ``weight_init('xavier_uniform')``."""
    a = gain * math.sqrt(6 / (fan_in + fan_out))
    return torch.empty(*shape).uniform_(-a, a)


INIT_MODES = ("xavier_uniform", "kaiming_uniform", "kaiming_normal")


def _init(shape: Sequence[int], mode: str, fan_in: int, fan_out: int, gain: float) -> Tensor:
    """EDM ``weight_init(shape, mode, fan_in, fan_out) * gain``. DDPM++/NCSN++ use xavier_uniform; ADM uses
    kaiming_uniform, U(-a, a) with a = gain * sqrt(3 / fan_in), and kaiming_normal, N(0, gain^2 / fan_in).
    A zero gain gives zeros without a random draw."""
    check_choice("init_mode", mode, INIT_MODES)
    if gain == 0:
        return torch.zeros(*shape)
    if mode == "xavier_uniform":
        return _xavier_uniform(shape, fan_in, fan_out, gain)
    if mode == "kaiming_uniform":
        a = gain * math.sqrt(3 / fan_in)
        return torch.empty(*shape).uniform_(-a, a)
    return torch.randn(*shape) * (gain / math.sqrt(fan_in))


def group_norm_groups(num_channels: int, max_groups: int = 32, min_channels_per_group: int = 4) -> int:
    """Groups for C channels: EDM's min(32, C // 4), or the largest divisor of C below it if that fails."""
    groups = max(1, min(max_groups, num_channels // min_channels_per_group))
    while num_channels % groups:  # only reached where EDM's own GroupNorm would fail
        groups -= 1
    return groups


class Linear(torch.nn.Module):
    """Fully connected layer (EDM ``Linear``): xavier-uniform weights and zero bias unless ``init_mode`` and
    ``init_bias`` say otherwise (ADM draws both from kaiming_uniform)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, init_weight: float = 1.0,
                 init_mode: str = "xavier_uniform", init_bias: float = 0.0):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        fans = dict(mode=init_mode, fan_in=in_features, fan_out=out_features)
        self.weight = torch.nn.Parameter(_init((out_features, in_features), gain=init_weight, **fans))
        self.bias = torch.nn.Parameter(_init((out_features,), gain=init_bias, **fans)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        b = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.weight.to(x.dtype), b)


class Conv2d(torch.nn.Module):
    """Square 2-D convolution with optional FIR up/down-sampling by 2 (EDM ``Conv2d``).

    ``kernel=0`` gives a parameter-free resampler. ``fused_down`` convolves first and then filters and
    decimates (NCSN++'s progressive-input branch); otherwise resampling comes before the convolution.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, bias: bool = True, up: bool = False,
                 down: bool = False, resample_filter: Sequence[int] = (1, 1), fused_down: bool = False,
                 init_weight: float = 1.0, init_mode: str = "xavier_uniform", init_bias: float = 0.0):
        super().__init__()
        if up and down:
            raise ValueError("Conv2d: up and down are mutually exclusive")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.up = up
        self.down = down
        self.fused_down = fused_down and down and kernel > 0
        fans = dict(mode=init_mode, fan_in=in_channels * kernel * kernel, fan_out=out_channels * kernel * kernel)
        shape = (out_channels, in_channels, kernel, kernel)
        w = _init(shape, gain=init_weight, **fans) if kernel else None
        self.weight = None if w is None else torch.nn.Parameter(w)
        self.bias = torch.nn.Parameter(_init((out_channels,), gain=init_bias, **fans)) if kernel and bias else None
        if up or down:
            f = torch.as_tensor(resample_filter, dtype=torch.float32)
            # Separable 2-D filter with unit DC gain, shape (1, 1, k, k).
            self.register_buffer("resample_filter", torch.outer(f, f)[None, None] / f.sum().square())
        else:
            self.resample_filter = None

    def forward(self, x: Tensor) -> Tensor:
        w = None if self.weight is None else self.weight.to(x.dtype)
        w_pad = 0 if w is None else w.shape[-1] // 2
        if self.resample_filter is not None:
            f = self.resample_filter.to(x.dtype)
            f_pad = (f.shape[-1] - 1) // 2
        if self.fused_down:
            x = F.conv2d(x, w, padding=w_pad + f_pad)
            x = F.conv2d(x, f.tile(self.out_channels, 1, 1, 1), groups=self.out_channels, stride=2)
        else:
            c = self.in_channels
            if self.up:  # zero-stuffing transposed conv; x4 restores the DC gain lost to the inserted zeros
                x = F.conv_transpose2d(x, (f * 4).tile(c, 1, 1, 1), groups=c, stride=2, padding=f_pad)
            if self.down:
                x = F.conv2d(x, f.tile(c, 1, 1, 1), groups=c, stride=2, padding=f_pad)
            if w is not None:
                x = F.conv2d(x, w, padding=w_pad)
        if self.bias is not None:
            x = x + self.bias.to(x.dtype).reshape(1, -1, 1, 1)
        return x


class GroupNorm(torch.nn.Module):
    """Group normalisation with at least 4 channels per group, at most 32 groups (EDM ``GroupNorm``)."""

    def __init__(self, num_channels: int, eps: float = 1e-6):
        super().__init__()
        self.num_groups = group_norm_groups(num_channels)
        self.eps = eps
        self.weight = torch.nn.Parameter(torch.ones(num_channels))
        self.bias = torch.nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: Tensor) -> Tensor:
        return F.group_norm(x, self.num_groups, self.weight.to(x.dtype), self.bias.to(x.dtype), self.eps)


class UNetBlock(torch.nn.Module):
    """DDPM++/NCSN++ residual block: additive embedding, optional resampling and 1-head self-attention
    (EDM ``UNetBlock`` with adaptive_scale=False, resample_proj=True, skip_scale=sqrt(1/2), eps=1e-6)."""

    def __init__(self, in_channels: int, out_channels: int, emb_channels: int, up: bool = False,
                 down: bool = False, attention: bool = False, dropout: float = 0.0,
                 resample_filter: Sequence[int] = (1, 1)):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.attention = attention
        self.dropout = dropout
        resample = dict(up=up, down=down, resample_filter=resample_filter)
        self.norm0 = GroupNorm(in_channels)
        self.conv0 = Conv2d(in_channels, out_channels, 3, **resample)
        self.affine = Linear(emb_channels, out_channels)
        self.norm1 = GroupNorm(out_channels)
        self.conv1 = Conv2d(out_channels, out_channels, 3, init_weight=1e-5)  # block starts near identity
        needs_proj = in_channels != out_channels or up or down
        self.skip = Conv2d(in_channels, out_channels, 1, **resample) if needs_proj else None
        if attention:
            self.norm2 = GroupNorm(out_channels)
            self.qkv = Conv2d(out_channels, out_channels * 3, 1, init_weight=math.sqrt(0.2))
            self.proj = Conv2d(out_channels, out_channels, 1, init_weight=1e-5)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv0(silu(self.norm0(x)))
        h = silu(self.norm1(h + self.affine(emb)[:, :, None, None].to(h.dtype)))
        h = self.conv1(F.dropout(h, p=self.dropout, training=self.training))
        x = (h + (x if self.skip is None else self.skip(x))) * SKIP_SCALE
        if self.attention:
            B, C, H, W = x.shape
            # EDM's qkv layout interleaves per channel: output channel 3*c + j is (q, k, v)[j] of channel c.
            q, k, v = self.qkv(self.norm2(x)).reshape(B, C, 3, H * W).unbind(2)  # each (B, C, HW)
            a = F.scaled_dot_product_attention(q.mT, k.mT, v.mT)  # (B, HW, C), softmax(q k^T / sqrt(C)) v
            x = (self.proj(a.mT.reshape(B, C, H, W)) + x) * SKIP_SCALE
        return x


class PositionalEmbedding(torch.nn.Module):
    """Sinusoidal embedding of c_noise (EDM ``PositionalEmbedding``): frequencies 10000^(-i/(n/2 - 1)) and
    [sin, cos] for DDPM++ (``endpoint=True``, SongUNet's sin/cos swap), 10000^(-i/(n/2)) and [cos, sin] for
    ADM (``endpoint=False, sin_first=False``)."""

    def __init__(self, num_channels: int, max_positions: int = 10000, endpoint: bool = True,
                 sin_first: bool = True):
        super().__init__()
        self.num_channels = num_channels
        self.max_positions = max_positions
        self.endpoint = endpoint
        self.sin_first = sin_first

    def forward(self, c_noise: Tensor) -> Tensor:
        half = self.num_channels // 2
        freqs = torch.arange(half, dtype=torch.float32, device=c_noise.device)
        freqs = (1 / self.max_positions) ** (freqs / max(half - (1 if self.endpoint else 0), 1))
        x = torch.outer(c_noise, freqs.to(c_noise.dtype))
        return torch.cat([x.sin(), x.cos()] if self.sin_first else [x.cos(), x.sin()], dim=1)


class FourierEmbedding(torch.nn.Module):
    """Random Fourier features of c_noise, freqs ~ N(0, 16^2) (NCSN++; EDM ``FourierEmbedding``).

    The frequencies are a fixed buffer drawn from a local generator seeded with ``seed``, so building a
    network neither depends on nor advances the global RNG here; loading a state_dict replaces them.
    """

    def __init__(self, num_channels: int, scale: float = 16.0, seed: int = 0):
        super().__init__()
        g = torch.Generator(device="cpu").manual_seed(seed)
        self.register_buffer("freqs", torch.randn(num_channels // 2, generator=g, device="cpu") * scale)

    def forward(self, c_noise: Tensor) -> Tensor:
        x = torch.outer(c_noise, (2 * math.pi * self.freqs).to(c_noise.dtype))
        return torch.cat([x.sin(), x.cos()], dim=1)


NOISE_EMBEDDINGS = {"positional": PositionalEmbedding, "fourier": FourierEmbedding}


ENCODER_TYPES = ("standard", "skip", "residual")


DECODER_TYPES = ("standard", "skip")


def check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; valid choices: {', '.join(choices)}")


def check_levels(img_resolution: int, channel_mult: Sequence[int]) -> None:
    """A U-Net with len(channel_mult) levels halves the image len - 1 times: the resolution must allow it."""
    levels = len(channel_mult)
    if levels < 1 or img_resolution % 2 ** (levels - 1):
        raise ValueError(f"img_resolution {img_resolution} is not divisible by 2^{levels - 1} "
                         f"for channel_mult {tuple(channel_mult)}")
