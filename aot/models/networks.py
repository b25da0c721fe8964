"""Backbone U-Nets: DDPM++ and NCSN++ (Song et al., 2021) and, in :mod:`aot.models.dhariwal`, ADM (Dhariwal &
Nichol, 2021) as EDM trains them; the registry of backbones and their constructor arguments.

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
from torch import Tensor
from torch.nn.functional import silu

from aot.models.dhariwal import DhariwalUNet
from aot.models.layers import (
    DECODER_TYPES,
    ENCODER_TYPES,
    NOISE_EMBEDDINGS,
    Conv2d,
    GroupNorm,
    Linear,
    UNetBlock,
    check_choice,
    check_levels,
)
from aot.models.presets import (  # EDM presets as plain data (the config resolver reads them)
    ARCH_BACKBONES,
    ARCH_PRESETS,
)


class SongUNet(torch.nn.Module):
    """DDPM++ / NCSN++ U-Net of Song et al. (2021) as configured in EDM (Karras et al., 2022)."""

    def __init__(self, img_resolution: int, in_channels: int, out_channels: int, label_dim: int = 0,
                 augment_dim: int = 0, model_channels: int = 128, channel_mult: Sequence[int] = (1, 2, 2, 2),
                 channel_mult_emb: int = 4, num_blocks: int = 4, attn_resolutions: Sequence[int] = (16,),
                 dropout: float = 0.10, label_dropout: float = 0.0, embedding_type: str = "positional",
                 channel_mult_noise: int = 1, encoder_type: str = "standard", decoder_type: str = "standard",
                 resample_filter: Sequence[int] = (1, 1)):
        super().__init__()
        check_choice("embedding_type", embedding_type, tuple(NOISE_EMBEDDINGS))
        check_choice("encoder_type", encoder_type, ENCODER_TYPES)
        check_choice("decoder_type", decoder_type, DECODER_TYPES)
        check_levels(img_resolution, channel_mult)
        levels = len(channel_mult)
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
