"""ADM (Dhariwal & Nichol, 2021) as EDM trains it for ImageNet-64: ``DhariwalUNet`` and its block, written from
scratch with NVlabs/edm's module and parameter names, shapes, initialisation and forward pass (commit 008a4e5)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.functional import silu

from aot.models.layers import Conv2d, GroupNorm, Linear, PositionalEmbedding, check_levels

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
        check_levels(img_resolution, channel_mult)
        levels = len(channel_mult)
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
