"""Backbone U-Nets: DDPM++ and NCSN++ (Song et al., 2021) and ADM (Dhariwal & Nichol, 2021) as EDM trains them.

Written from scratch, but module and parameter names, shapes, initialisation and forward pass follow
NVlabs/edm ``training/networks.py`` (``SongUNet`` and ``DhariwalUNet``, commit 008a4e5), so the ``model.*`` part
of an EDM ``EDMPrecond`` state_dict loads into :class:`SongUNet` / :class:`DhariwalUNet` with ``strict=True``.
There is no diffusion math here: the preconditioner computes ``c_in * x`` and ``noise_labels = c_noise(sigma)``
and calls this network.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.functional import silu

from aot.models.presets import (  # EDM presets as plain data (the config resolver reads them)
    ARCH_BACKBONES,
    ARCH_PRESETS,
)

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
    _check_choice("init_mode", mode, INIT_MODES)
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


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; valid choices: {', '.join(choices)}")


class SongUNet(torch.nn.Module):
    """DDPM++ / NCSN++ U-Net of Song et al. (2021) as configured in EDM (Karras et al., 2022)."""

    def __init__(self, img_resolution: int, in_channels: int, out_channels: int, label_dim: int = 0,
                 augment_dim: int = 0, model_channels: int = 128, channel_mult: Sequence[int] = (1, 2, 2, 2),
                 channel_mult_emb: int = 4, num_blocks: int = 4, attn_resolutions: Sequence[int] = (16,),
                 dropout: float = 0.10, label_dropout: float = 0.0, embedding_type: str = "positional",
                 channel_mult_noise: int = 1, encoder_type: str = "standard", decoder_type: str = "standard",
                 resample_filter: Sequence[int] = (1, 1)):
        super().__init__()
        _check_choice("embedding_type", embedding_type, tuple(NOISE_EMBEDDINGS))
        _check_choice("encoder_type", encoder_type, ENCODER_TYPES)
        _check_choice("decoder_type", decoder_type, DECODER_TYPES)
        levels = len(channel_mult)
        if levels < 1 or img_resolution % 2 ** (levels - 1):
            raise ValueError(f"img_resolution {img_resolution} is not divisible by 2^{levels - 1} "
                             f"for channel_mult {tuple(channel_mult)}")
        self.img_resolution = img_resolution
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.label_dim = label_dim
        self.augment_dim = augment_dim
        self.label_dropout = label_dropout
        emb_channels = model_channels * channel_mult_emb
        noise_channels = model_channels * channel_mult_noise

        def block(cin: int, cout: int, **kw) -> UNetBlock:
            return UNetBlock(cin, cout, emb_channels, dropout=dropout, resample_filter=resample_filter, **kw)

        # Mapping network: [c_noise, label, augment] -> embedding fed to every block.
        self.map_noise = NOISE_EMBEDDINGS[embedding_type](noise_channels)
        self.map_label = Linear(label_dim, noise_channels) if label_dim else None
        self.map_augment = Linear(augment_dim, noise_channels, bias=False) if augment_dim else None
        self.map_layer0 = Linear(noise_channels, emb_channels)
        self.map_layer1 = Linear(emb_channels, emb_channels)

        # Encoder. The plans list (role, key) in execution order, so forward never parses module names.
        self.enc = torch.nn.ModuleDict()
        self.dec = torch.nn.ModuleDict()
        self._enc_plan: list[tuple[str, str]] = []
        self._dec_plan: list[tuple[str, str]] = []

        def add(plan: list, modules: torch.nn.ModuleDict, role: str, key: str, module: torch.nn.Module):
            modules[key] = module
            plan.append((role, key))

        cout = caux = in_channels
        skip_channels = []
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            r = f"{res}x{res}"
            if level == 0:
                add(self._enc_plan, self.enc, "conv", f"{r}_conv", Conv2d(cout, model_channels, 3))
                cout = model_channels
            else:
                add(self._enc_plan, self.enc, "block", f"{r}_down", block(cout, cout, down=True))
                if encoder_type == "skip":  # progressive input: downsampled image added after a 1x1 conv
                    add(self._enc_plan, self.enc, "aux_down", f"{r}_aux_down",
                        Conv2d(caux, caux, 0, down=True, resample_filter=resample_filter))
                    add(self._enc_plan, self.enc, "aux_skip", f"{r}_aux_skip", Conv2d(caux, cout, 1))
                if encoder_type == "residual":  # progressive input through a strided 3x3 conv branch
                    add(self._enc_plan, self.enc, "aux_residual", f"{r}_aux_residual",
                        Conv2d(caux, cout, 3, down=True, resample_filter=resample_filter, fused_down=True))
                    caux = cout
            skip_channels.append(cout)
            for idx in range(num_blocks):
                cin, cout = cout, model_channels * mult
                add(self._enc_plan, self.enc, "block", f"{r}_block{idx}",
                    block(cin, cout, attention=res in attn_resolutions))
                skip_channels.append(cout)

        # Decoder: every "cat_block" consumes one encoder activation, deepest first.
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = img_resolution >> level
            r = f"{res}x{res}"
            if level == levels - 1:
                add(self._dec_plan, self.dec, "block", f"{r}_in0", block(cout, cout, attention=True))
                add(self._dec_plan, self.dec, "block", f"{r}_in1", block(cout, cout))
            else:
                add(self._dec_plan, self.dec, "block", f"{r}_up", block(cout, cout, up=True))
            for idx in range(num_blocks + 1):
                cin, cout = cout + skip_channels.pop(), model_channels * mult
                add(self._dec_plan, self.dec, "cat_block", f"{r}_block{idx}",
                    block(cin, cout, attention=idx == num_blocks and res in attn_resolutions))
            if decoder_type == "skip" or level == 0:  # output head (at every level for the skip decoder)
                if decoder_type == "skip" and level < levels - 1:
                    add(self._dec_plan, self.dec, "aux_up", f"{r}_aux_up",
                        Conv2d(out_channels, out_channels, 0, up=True, resample_filter=resample_filter))
                add(self._dec_plan, self.dec, "aux_norm", f"{r}_aux_norm", GroupNorm(cout))
                add(self._dec_plan, self.dec, "aux_conv", f"{r}_aux_conv",
                    Conv2d(cout, out_channels, 3, init_weight=1e-5))

    def forward(self, x: Tensor, noise_labels: Tensor, class_labels: Tensor | None = None,
                augment_labels: Tensor | None = None) -> Tensor:
        """Evaluate F(x; c_noise, labels).

        Parameters
        ----------
        x : Tensor, shape (B, in_channels, R, R)
        noise_labels : Tensor, shape (B,)
            c_noise(sigma) from the preconditioner.
        class_labels : Tensor, shape (B, label_dim) or (1, label_dim), or None
            One-hot labels; required when label_dim > 0, ignored otherwise. In training mode with
            label_dropout > 0, whole label vectors are zeroed with a mask drawn by ``torch.rand`` on
            x's device (the one use of the global RNG here, as in EDM).
        augment_labels : Tensor, shape (B, augment_dim), or None
            Augmentation labels; None is the same as all zeros (the layer has no bias).

        Returns
        -------
        Tensor, shape (B, out_channels, R, R)
        """
        # Mapping.
        emb = self.map_noise(noise_labels)
        if self.map_label is not None:
            if class_labels is None:
                raise ValueError(f"class_labels is required: the network has label_dim={self.label_dim}")
            y = class_labels
            if self.training and self.label_dropout:
                keep = torch.rand([x.shape[0], 1], device=x.device) >= self.label_dropout
                y = y * keep.to(y.dtype)
            emb = emb + self.map_label(y * math.sqrt(self.label_dim))
        if self.map_augment is not None and augment_labels is not None:
            emb = emb + self.map_augment(augment_labels)
        emb = silu(self.map_layer1(silu(self.map_layer0(emb))))  # (B, emb_channels)

        # Encoder: keep each main-path activation for a skip connection.
        skips = []
        aux = x
        for role, key in self._enc_plan:
            m = self.enc[key]
            if role == "conv":
                x = m(x)
                skips.append(x)
            elif role == "block":
                x = m(x, emb)
                skips.append(x)
            elif role == "aux_down":
                aux = m(aux)
            elif role == "aux_skip":
                x = skips[-1] = x + m(aux)
            else:  # aux_residual
                x = skips[-1] = aux = (x + m(aux)) / math.sqrt(2)

        # Decoder: the output is the sum of the aux heads (one head unless decoder_type == "skip").
        out = h = None
        for role, key in self._dec_plan:
            m = self.dec[key]
            if role == "block":
                x = m(x, emb)
            elif role == "cat_block":
                x = m(torch.cat([x, skips.pop()], dim=1), emb)
            elif role == "aux_up":
                out = m(out)
            elif role == "aux_norm":
                h = m(x)
            else:  # aux_conv
                h = m(silu(h))
                out = h if out is None else out + h
        return out


# ADM initialisation (EDM ``DhariwalUNet``): kaiming_uniform x sqrt(1/3) is U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for
# weights and biases (PyTorch's default layers, as guided-diffusion has them); output layers start at zero.
_ADM_INIT = dict(init_mode="kaiming_uniform", init_weight=math.sqrt(1 / 3), init_bias=math.sqrt(1 / 3))
_ADM_ZERO = dict(init_mode="kaiming_uniform", init_weight=0.0, init_bias=0.0)
ADM_CHANNELS_PER_HEAD = 64  # EDM's DhariwalUNet: attention heads = channels // 64 (none below 64 channels)


class ADMBlock(torch.nn.Module):
    """ADM residual block: scale-and-shift embedding, optional resampling and multi-head self-attention
    (EDM ``UNetBlock`` with adaptive_scale=True, resample_proj=False, skip_scale=1, eps=1e-5, channels_per_head=64
    and kaiming-uniform init, as ``DhariwalUNet`` builds it)."""

    def __init__(self, in_channels: int, out_channels: int, emb_channels: int, up: bool = False,
                 down: bool = False, attention: bool = False, dropout: float = 0.0):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_heads = out_channels // ADM_CHANNELS_PER_HEAD if attention else 0
        self.dropout = dropout
        self.norm0 = GroupNorm(in_channels, eps=1e-5)
        self.conv0 = Conv2d(in_channels, out_channels, 3, up=up, down=down, **_ADM_INIT)
        self.affine = Linear(emb_channels, out_channels * 2, **_ADM_INIT)  # (scale, shift)
        self.norm1 = GroupNorm(out_channels, eps=1e-5)
        self.conv1 = Conv2d(out_channels, out_channels, 3, **_ADM_ZERO)  # block starts as the identity
        self.skip = None
        if in_channels != out_channels or up or down:  # a parameter-free resampler when the width is kept
            kernel = 1 if in_channels != out_channels else 0
            self.skip = Conv2d(in_channels, out_channels, kernel, up=up, down=down, **_ADM_INIT)
        if self.num_heads:
            self.norm2 = GroupNorm(out_channels, eps=1e-5)
            self.qkv = Conv2d(out_channels, out_channels * 3, 1, **_ADM_INIT)
            self.proj = Conv2d(out_channels, out_channels, 1, **_ADM_ZERO)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv0(silu(self.norm0(x)))
        scale, shift = self.affine(emb)[:, :, None, None].to(h.dtype).chunk(2, dim=1)
        h = silu(torch.addcmul(shift, self.norm1(h), scale + 1))  # GroupNorm(h) (1 + scale) + shift
        h = self.conv1(F.dropout(h, p=self.dropout, training=self.training))
        x = h + (x if self.skip is None else self.skip(x))
        if self.num_heads:
            B, C, H, W = x.shape
            # EDM's layout: heads are consecutive channel groups, and within a head channel 3*c + j is (q, k, v)[j].
            q, k, v = self.qkv(self.norm2(x)).reshape(B * self.num_heads, C // self.num_heads, 3, H * W).unbind(2)
            a = F.scaled_dot_product_attention(q.mT, k.mT, v.mT)  # per head softmax(q k^T / sqrt(C / heads)) v
            x = self.proj(a.mT.reshape(B, C, H, W)) + x
        return x


class DhariwalUNet(torch.nn.Module):
    """ADM U-Net of Dhariwal & Nichol (2021) as reimplemented in EDM (Karras et al., 2022), ``--arch=adm``."""

    def __init__(self, img_resolution: int, in_channels: int, out_channels: int, label_dim: int = 0,
                 augment_dim: int = 0, model_channels: int = 192, channel_mult: Sequence[int] = (1, 2, 3, 4),
                 channel_mult_emb: int = 4, num_blocks: int = 3, attn_resolutions: Sequence[int] = (32, 16, 8),
                 dropout: float = 0.10, label_dropout: float = 0.0):
        super().__init__()
        levels = len(channel_mult)
        if levels < 1 or img_resolution % 2 ** (levels - 1):
            raise ValueError(f"img_resolution {img_resolution} is not divisible by 2^{levels - 1} "
                             f"for channel_mult {tuple(channel_mult)}")
        self.img_resolution = img_resolution
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.label_dim = label_dim
        self.augment_dim = augment_dim
        self.label_dropout = label_dropout
        emb_channels = model_channels * channel_mult_emb

        def block(cin: int, cout: int, **kw) -> ADMBlock:
            return ADMBlock(cin, cout, emb_channels, dropout=dropout, **kw)

        # Mapping network: [c_noise (+ augment)] -> 2 layers, + label -> embedding fed to every block.
        self.map_noise = PositionalEmbedding(model_channels, endpoint=False, sin_first=False)
        self.map_augment = Linear(augment_dim, model_channels, bias=False, **_ADM_ZERO) if augment_dim else None
        self.map_layer0 = Linear(model_channels, emb_channels, **_ADM_INIT)
        self.map_layer1 = Linear(emb_channels, emb_channels, **_ADM_INIT)
        # N(0, 1) weights: a one-hot label adds one unit-variance column (guided-diffusion's nn.Embedding).
        self.map_label = (Linear(label_dim, emb_channels, bias=False, init_mode="kaiming_normal",
                                 init_weight=math.sqrt(label_dim)) if label_dim else None)

        # Encoder: every module's output is kept for a skip connection.
        self.enc = torch.nn.ModuleDict()
        cout = in_channels
        skip_channels = []
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            r = f"{res}x{res}"
            if level == 0:
                self.enc[f"{r}_conv"] = Conv2d(cout, model_channels * mult, 3, **_ADM_INIT)
                cout = model_channels * mult
            else:
                self.enc[f"{r}_down"] = block(cout, cout, down=True)
            skip_channels.append(cout)
            for idx in range(num_blocks):
                cin, cout = cout, model_channels * mult
                self.enc[f"{r}_block{idx}"] = block(cin, cout, attention=res in attn_resolutions)
                skip_channels.append(cout)

        # Decoder: the plan marks the blocks that take one encoder activation (deepest first).
        self.dec = torch.nn.ModuleDict()
        self._dec_concat: list[bool] = []
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = img_resolution >> level
            r = f"{res}x{res}"
            if level == levels - 1:
                self.dec[f"{r}_in0"] = block(cout, cout, attention=True)
                self.dec[f"{r}_in1"] = block(cout, cout)
                self._dec_concat += [False, False]
            else:
                self.dec[f"{r}_up"] = block(cout, cout, up=True)
                self._dec_concat.append(False)
            for idx in range(num_blocks + 1):
                cin, cout = cout + skip_channels.pop(), model_channels * mult
                self.dec[f"{r}_block{idx}"] = block(cin, cout, attention=res in attn_resolutions)
                self._dec_concat.append(True)
        self.out_norm = GroupNorm(cout, eps=1e-5)
        self.out_conv = Conv2d(cout, out_channels, 3, **_ADM_ZERO)

    def forward(self, x: Tensor, noise_labels: Tensor, class_labels: Tensor | None = None,
                augment_labels: Tensor | None = None) -> Tensor:
        """Evaluate F(x; c_noise, labels); arguments and shapes as :meth:`SongUNet.forward`."""
        # Mapping.
        emb = self.map_noise(noise_labels)
        if self.map_augment is not None and augment_labels is not None:
            emb = emb + self.map_augment(augment_labels)
        emb = self.map_layer1(silu(self.map_layer0(emb)))
        if self.map_label is not None:
            if class_labels is None:
                raise ValueError(f"class_labels is required: the network has label_dim={self.label_dim}")
            y = class_labels
            if self.training and self.label_dropout:
                keep = torch.rand([x.shape[0], 1], device=x.device) >= self.label_dropout
                y = y * keep.to(y.dtype)
            emb = emb + self.map_label(y)
        emb = silu(emb)  # (B, emb_channels)

        # Encoder.
        skips = []
        for m in self.enc.values():
            x = m(x, emb) if isinstance(m, ADMBlock) else m(x)
            skips.append(x)

        # Decoder.
        for m, concat in zip(self.dec.values(), self._dec_concat, strict=True):
            x = m(torch.cat([x, skips.pop()], dim=1) if concat else x, emb)
        return self.out_conv(silu(self.out_norm(x)))


BACKBONES: dict[str, type[torch.nn.Module]] = {"SongUNet": SongUNet, "DhariwalUNet": DhariwalUNet}
"""Backbone classes by EDM's ``model_type`` name; :data:`aot.models.presets.ARCH_BACKBONES` maps each arch to one."""

INTERFACE_ARGS = ("img_resolution", "in_channels", "out_channels", "label_dim", "augment_dim")


def tunable_args(model_type: str = "SongUNet") -> tuple[str, ...]:
    """Constructor arguments of backbone ``model_type`` that a config may override (all but the interface)."""
    return tuple(p for p in inspect.signature(BACKBONES[model_type].__init__).parameters
                 if p not in ("self", *INTERFACE_ARGS))


TUNABLE_ARGS = tunable_args("SongUNet")


def network_ctor(arch: str, *, img_resolution: int, in_channels: int, out_channels: int, label_dim: int = 0,
                 augment_dim: int = 0, **overrides) -> dict:
    """Resolve preset ``arch`` + ``overrides`` into the full kwargs of its backbone (plain data, JSON-safe)."""
    if arch not in ARCH_PRESETS:
        raise ValueError(f"unknown arch {arch!r}; valid choices: {', '.join(ARCH_PRESETS)}")
    model_type = ARCH_BACKBONES[arch]
    tunable = tunable_args(model_type)
    unknown = sorted(set(overrides) - set(tunable))
    if unknown:
        raise ValueError(f"unknown network override(s) {', '.join(map(repr, unknown))} for arch {arch} "
                         f"({model_type}); valid choices: {', '.join(tunable)}")
    defaults = {k: p.default for k, p in inspect.signature(BACKBONES[model_type].__init__).parameters.items()
                if k in tunable}
    ctor = dict(img_resolution=img_resolution, in_channels=in_channels, out_channels=out_channels,
                label_dim=label_dim, augment_dim=augment_dim, **defaults)
    ctor.update(ARCH_PRESETS[arch])
    ctor.update(overrides)
    # Lists, not tuples, so the dict survives a JSON round trip unchanged.
    return {k: list(v) if isinstance(v, tuple | list) else v for k, v in ctor.items()}


def make_network(arch: str, *, img_resolution: int, in_channels: int, out_channels: int, label_dim: int = 0,
                 augment_dim: int = 0, **overrides) -> SongUNet | DhariwalUNet:
    """Build the backbone of preset ``arch`` ("ddpmpp" | "ncsnpp": SongUNet, "adm": DhariwalUNet) with keyword
    ``overrides``."""
    ctor = network_ctor(arch, img_resolution=img_resolution, in_channels=in_channels, out_channels=out_channels,
                        label_dim=label_dim, augment_dim=augment_dim, **overrides)
    return BACKBONES[ARCH_BACKBONES[arch]](**ctor)


def count_parameters(module: torch.nn.Module) -> int:
    """Number of parameters (buffers excluded), as EDM reports network size."""
    return sum(p.numel() for p in module.parameters())
