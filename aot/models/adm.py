"""ADM "half-UNet" encoder (Dhariwal & Nichol, 2021) as Discriminator Guidance uses it (Kim et al., 2023).

Written from scratch. Module and parameter names, shapes, initialisation and forward pass follow
openai/guided-diffusion ``guided_diffusion/unet.py`` ``EncoderUNetModel`` (commit 22e0df8) in the variant
vendored by alsdudrla10/DG (commit 1a152b7), so that DG's released files load with ``strict=True``:

* ``32x32_classifier.pt``: the frozen ADM 32x32 classifier (:data:`ADM_CLASSIFIER_32`). DG uses only its
  feature map after the middle block, (B, 512, 8, 8), see :meth:`EncoderUNet.features`.
* ``64x64_classifier.pt`` (openai/guided-diffusion): the ADM 64x64 classifier (:data:`ADM_CLASSIFIER_64`), which
  DG's ``load_classifier`` builds for ``img_resolution=64``; its middle-block features are (B, 512, 8, 8) too.
* ``discriminator_*.pt``: DG's trainable head on those features (:data:`DG_HEAD`, conditional variant with
  ``num_classes=1000``).

Two DG changes to guided-diffusion are kept: the time input is a continuous VP time t in (0, 1] that the
network multiplies by 999 (``time_scale``) before the sinusoidal embedding, and a class-conditional
encoder adds ``label_emb(y)`` to the time embedding. DG's ``sigmoid=True`` is left to the caller:
:meth:`EncoderUNet.forward` returns logits, d = sigmoid(logits). Left out: fp16, gradient checkpointing,
1-D/3-D variants, and the "adaptive"/"spatial" pools (not used by DG). Paper-spec section 3.2-3.3.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#----------------------------------------------------------------------------
# Building blocks. Attribute names (and nn.Sequential indices) are guided-diffusion's: they are the
# state_dict keys of the released checkpoints.


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """[cos(t w_i), sin(t w_i)] with w_i = max_period^(-i / (dim // 2)), i < dim // 2 (guided-diffusion ``nn.py``).

    Parameters
    ----------
    t : Tensor, shape (B,)
        Possibly fractional time steps (already scaled, e.g. 999 * t_vp).
    dim : int
        Output width; an odd ``dim`` gets one trailing zero column.

    Returns
    -------
    Tensor, shape (B, dim), float32
    """
    half = dim // 2
    # Same operation order as guided-diffusion, so the float32 frequencies agree bit for bit.
    w = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    arg = t.float()[:, None] * w[None, :]  # (B, half)
    emb = torch.cat([arg.cos(), arg.sin()], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm that always computes in float32 and returns the input dtype (guided-diffusion ``GroupNorm32``)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.float()).to(x.dtype)


def normalization(channels: int) -> GroupNorm32:
    """ADM's normalisation layer: 32 groups, eps 1e-5, affine."""
    return GroupNorm32(32, channels)


def _zeroed(module: nn.Module) -> nn.Module:
    """Zero all parameters of ``module`` (ADM's ``zero_module``: residual branches start as identity)."""
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()
    return module


def _attend(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """softmax(q^T k / sqrt(c)) applied to v, per head, channels-first.

    q : (N, c, Tq), k and v : (N, c, T)  ->  (N, c, Tq), with N = batch * heads.
    """
    a = F.scaled_dot_product_attention(q.mT, k.mT, v.mT)  # (N, Tq, c)
    return a.mT


class Downsample(nn.Module):
    """Halve the resolution: strided 3x3 conv ``op`` (``use_conv``) or 2x2 average pooling (no parameters)."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        if use_conv:
            self.op = nn.Conv2d(channels, self.out_channels, 3, stride=2, padding=1)
        elif self.out_channels != channels:
            raise ValueError("Downsample: average pooling cannot change the channel count")
        else:
            self.op = nn.AvgPool2d(kernel_size=2, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class ResBlock(nn.Module):
    """ADM residual block with time embedding, optional FiLM ("scale-shift") norm and down-sampling.

    h = in_layers(x); h = GN(h) * (1 + scale) + shift (or h + emb_out then GN); out = skip(x) + conv(SiLU(h)).
    With ``down``, both branches are 2x2 average-pooled after the first norm+SiLU (``h_upd``/``x_upd``).
    """

    def __init__(self, channels: int, emb_channels: int, dropout: float, out_channels: int | None = None,
                 use_scale_shift_norm: bool = False, down: bool = False):
        super().__init__()
        self.channels = channels
        self.out_channels = cout = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.down = down
        self.in_layers = nn.Sequential(normalization(channels), nn.SiLU(), nn.Conv2d(channels, cout, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * cout if use_scale_shift_norm else cout))
        self.out_layers = nn.Sequential(normalization(cout), nn.SiLU(), nn.Dropout(p=dropout),
                                        _zeroed(nn.Conv2d(cout, cout, 3, padding=1)))
        self.skip_connection = nn.Identity() if cout == channels else nn.Conv2d(channels, cout, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """x : (B, channels, H, W), emb : (B, emb_channels)  ->  (B, out_channels, H', W')."""
        norm_in, act_in, conv_in = self.in_layers
        h = act_in(norm_in(x))
        if self.down:
            h, x = F.avg_pool2d(h, 2), F.avg_pool2d(x, 2)
        h = conv_in(h)
        e = self.emb_layers(emb).to(h.dtype)[:, :, None, None]  # (B, C or 2C, 1, 1)
        norm_out, act_out, drop, conv_out = self.out_layers
        if self.use_scale_shift_norm:
            scale, shift = e.chunk(2, dim=1)
            h = norm_out(h) * (1 + scale) + shift
        else:
            h = norm_out(h + e)
        h = conv_out(drop(act_out(h)))
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Self-attention over all positions, residual, output projection zero-initialised.

    The qkv channels are grouped per head ("legacy" order, ``use_new_attention_order=False`` in ADM):
    head j owns channels [3cj, 3c(j+1)) of ``qkv``, split into q, k, v of c channels each.
    """

    def __init__(self, channels: int, num_heads: int = 1, num_head_channels: int = -1):
        super().__init__()
        self.channels = channels
        if num_head_channels == -1:
            self.num_heads = num_heads
        elif channels % num_head_channels:
            raise ValueError(f"AttentionBlock: {channels} channels are not divisible by "
                             f"num_head_channels={num_head_channels}")
        else:
            self.num_heads = channels // num_head_channels
        self.norm = normalization(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = _zeroed(nn.Conv1d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        """x : (B, C, H, W)  ->  (B, C, H, W)."""
        B, C, H, W = x.shape
        x = x.reshape(B, C, H * W)
        c = C // self.num_heads
        qkv = self.qkv(self.norm(x)).reshape(B * self.num_heads, 3 * c, H * W)
        q, k, v = qkv.split(c, dim=1)  # each (B * heads, c, HW)
        a = _attend(q, k, v).reshape(B, C, H * W)
        return (x + self.proj_out(a)).reshape(B, C, H, W)


class AttentionPool2d(nn.Module):
    """CLIP-style attention pooling: the spatial mean token attends to [mean, positions] + a learned
    positional embedding; its output is projected to ``output_dim``.

    The qkv channels are grouped q | k | v first, then per head (ADM ``QKVAttention``, "new" order).
    """

    def __init__(self, spacial_dim: int, embed_dim: int, num_heads_channels: int, output_dim: int | None = None):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(embed_dim, spacial_dim**2 + 1) / embed_dim**0.5)
        self.qkv_proj = nn.Conv1d(embed_dim, 3 * embed_dim, 1)
        self.c_proj = nn.Conv1d(embed_dim, output_dim or embed_dim, 1)
        self.num_heads = embed_dim // num_heads_channels

    def forward(self, x: Tensor) -> Tensor:
        """x : (B, C, H, W) with H * W = spacial_dim^2  ->  (B, output_dim)."""
        B, C = x.shape[:2]
        x = x.reshape(B, C, -1)
        x = torch.cat([x.mean(dim=-1, keepdim=True), x], dim=-1)  # (B, C, 1 + HW), token 0 = mean
        x = x + self.positional_embedding[None].to(x.dtype)
        q, k, v = self.qkv_proj(x).chunk(3, dim=1)  # each (B, C, 1 + HW)
        n, c = B * self.num_heads, C // self.num_heads
        # Only token 0 is read out, so only its query is needed.
        a = _attend(q[:, :, :1].reshape(n, c, 1), k.reshape(n, c, -1), v.reshape(n, c, -1))  # (n, c, 1)
        return self.c_proj(a.reshape(B, C, 1))[:, :, 0]


class EmbedSequential(nn.Sequential):
    """nn.Sequential that passes the embedding to its ResBlocks (ADM ``TimestepEmbedSequential``)."""

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


#----------------------------------------------------------------------------
# The encoder.


class EncoderUNet(nn.Module):
    """ADM half-UNet: time(/label) embedding, down path, middle block, attention-pool head.

    Arguments have guided-diffusion's meaning. ``attention_resolutions`` holds *downsampling rates*
    (1 = input resolution, 2 = half, ...), not resolutions. ``time_scale`` multiplies ``t`` before the
    sinusoidal embedding: DG feeds VP time t in (0, 1] and scales by 999 inside its ``EncoderUNetModel``
    (``timesteps = timesteps * 999.``), for the ADM classifier and the discriminator head alike; use 1.0
    for stock guided-diffusion models that take integer steps. ``num_classes`` (DG: ``condition=True,
    num_class=1000``) adds ``label_emb`` to the time embedding.
    """

    def __init__(self, *, image_size: int, in_channels: int, model_channels: int, out_channels: int,
                 num_res_blocks: int, attention_resolutions: Sequence[int], dropout: float = 0.0,
                 channel_mult: Sequence[float] = (1, 2, 4), conv_resample: bool = True,
                 use_scale_shift_norm: bool = True, resblock_updown: bool = True, num_heads: int = 1,
                 num_head_channels: int = -1, pool: str = "attention", num_classes: int | None = None,
                 time_scale: float = 999.0):
        super().__init__()
        if pool != "attention":
            raise ValueError(f"unknown pool {pool!r}; valid choices: attention")
        if num_head_channels == -1:
            raise ValueError("pool='attention' needs num_head_channels (channels per attention-pool head)")
        if image_size % 2 ** (len(channel_mult) - 1):
            raise ValueError(f"image_size {image_size} is not divisible by 2^{len(channel_mult) - 1}")
        self.image_size = image_size
        self.in_channels = in_channels
        self.model_channels = model_channels
        self.out_channels = out_channels
        self.num_classes = num_classes
        self.time_scale = time_scale
        emb_channels = 4 * model_channels
        attn = dict(num_heads=num_heads, num_head_channels=num_head_channels)

        def res(cin: int, cout: int | None = None, down: bool = False) -> ResBlock:
            return ResBlock(cin, emb_channels, dropout, cout, use_scale_shift_norm=use_scale_shift_norm, down=down)

        # Embedding: sinusoid(time_scale * t) -> Linear-SiLU-Linear (+ label embedding).
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb_channels), nn.SiLU(),
                                        nn.Linear(emb_channels, emb_channels))
        if num_classes is not None:
            self.label_emb = nn.Embedding(num_classes, emb_channels)

        # Down path: stem conv, then per level num_res_blocks ResBlocks (+ attention), then a downsampler.
        ch = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList([EmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
        ds = 1  # current downsampling rate
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [res(ch, int(mult * model_channels))]
                ch = int(mult * model_channels)
                if ds in attention_resolutions:
                    layers.append(AttentionBlock(ch, **attn))
                self.input_blocks.append(EmbedSequential(*layers))
            if level < len(channel_mult) - 1:
                down = res(ch, ch, down=True) if resblock_updown else Downsample(ch, conv_resample)
                self.input_blocks.append(EmbedSequential(down))
                ds *= 2

        # Middle: ResBlock - attention - ResBlock. Its output is DG's feature map.
        self.middle_block = EmbedSequential(res(ch), AttentionBlock(ch, **attn), res(ch))
        self.feature_channels = ch
        self.feature_size = image_size // ds

        # Head: GN - SiLU - attention pooling to out_channels.
        self.out = nn.Sequential(normalization(ch), nn.SiLU(),
                                 AttentionPool2d(image_size // ds, ch, num_head_channels, out_channels))

    def embed(self, t: Tensor, labels: Tensor | None = None) -> Tensor:
        """Embedding of time t, shape (B,), and optional labels -> (B, 4 * model_channels)."""
        emb = self.time_embed(timestep_embedding(t * self.time_scale, self.model_channels))
        if self.num_classes is not None:
            if labels is None:
                raise ValueError(f"labels are required: the encoder is class-conditional "
                                 f"(num_classes={self.num_classes})")
            if labels.ndim == 2:  # one-hot / scores, as DG passes them: argmax picks the row
                labels = labels.argmax(dim=1)
            emb = emb + self.label_emb(labels.long())
        return emb

    def features(self, x: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        """Feature map after the middle block (DG's ``feature=True``).

        Parameters
        ----------
        x : Tensor, shape (B, in_channels, image_size, image_size)
        t : Tensor, shape (B,) or ()
            Time; multiplied by ``time_scale`` (DG: VP time in (0, 1], times 999).
        labels : Tensor, shape (B,) int or (B, num_classes) one-hot, or None
            Required when ``num_classes`` is set, ignored otherwise.

        Returns
        -------
        Tensor, shape (B, feature_channels, feature_size, feature_size); (B, 512, 8, 8) for ADM_CLASSIFIER_32.
        """
        t = torch.as_tensor(t, device=x.device).expand(x.shape[0])
        emb = self.embed(t, labels)
        h = x
        for block in self.input_blocks:
            h = block(h, emb)
        return self.middle_block(h, emb)

    def forward(self, x: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        """Logits of the attention-pool head; arguments as in :meth:`features`.

        Returns
        -------
        Tensor, shape (B, out_channels). DG's discriminator output is d = sigmoid(logits) (``sigmoid=True``).
        """
        return self.out(self.features(x, t, labels))


#----------------------------------------------------------------------------
# DG's configurations (alsdudrla10/DG classifier_lib.py + guided_diffusion/script_util.py create_classifier).

# load_classifier(img_resolution=32): width 128, depth 4, attention "32,16,8" -> rates 32//32, 32//16, 32//8,
# channel_mult (1, 2, 4) for image_size 32, num_head_channels 64 (hard-coded), in 3, out 1000, fp32.
ADM_CLASSIFIER_32: dict = dict(image_size=32, in_channels=3, model_channels=128, out_channels=1000, num_res_blocks=4,
                               attention_resolutions=[1, 2, 4], dropout=0.0, channel_mult=[1, 2, 4],
                               conv_resample=True, use_scale_shift_norm=True, resblock_updown=True, num_heads=1,
                               num_head_channels=64, pool="attention", num_classes=None, time_scale=999.0)

# load_classifier(img_resolution=64): the same with channel_mult (1, 2, 3, 4) and attention rates 64//32, 64//16,
# 64//8. The module openai/guided-diffusion's 64x64_classifier.pt (ImageNet 64x64, cosine schedule, 1000 steps) loads
# into; its features after the middle block are (B, 512, 8, 8) as at 32x32, so DG's head is the same.
ADM_CLASSIFIER_64: dict = {**ADM_CLASSIFIER_32, "image_size": 64, "attention_resolutions": [2, 4, 8],
                           "channel_mult": [1, 2, 3, 4]}
ADM_CLASSIFIERS: dict[str, dict] = {"adm32": ADM_CLASSIFIER_32, "adm64": ADM_CLASSIFIER_64}  # guidance.extractor

# load_discriminator: image_size 8, in 512 (the classifier features), width 128, depth 2, channel_mult (1,),
# out 1. Its attention string "32,16,8" gives rates (0, 0, 1) at image_size 8; only rate 1 exists, so every
# ResBlock is followed by attention (2 heads of 64). Conditional: condition=True, num_class=1000 (DG's CIFAR-10
# one-hot labels are argmax'ed, so only rows 0-9 of label_emb are trained).
DG_HEAD: dict = dict(image_size=8, in_channels=512, model_channels=128, out_channels=1, num_res_blocks=2,
                     attention_resolutions=[1], dropout=0.0, channel_mult=[1], conv_resample=True,
                     use_scale_shift_norm=True, resblock_updown=True, num_heads=1, num_head_channels=64,
                     pool="attention", num_classes=None, time_scale=999.0)
DG_HEAD_COND: dict = {**DG_HEAD, "num_classes": 1000}


#----------------------------------------------------------------------------
# Loading released state dicts.


STATE_DICT_KIND = "state_dict (tensors only)"
STATE_DICT_FIX = ("point guidance.extractor_weights at the extractor's classifier file, DG's 32x32_classifier.pt or "
                  "guided-diffusion's 64x64_classifier.pt (rule fetch_dg_classifier downloads it)")


def load_state_dict_file(path: str | Path) -> dict[str, Tensor]:
    """Read a tensors-only state_dict file (no pickled code), unwrapping ``{"state_dict": ...}`` and
    DataParallel's ``module.`` prefix. A file that is missing raises FileNotFoundError; one that is anything else (a
    folder, truncated, pickled objects, not a state_dict) raises :class:`aot.core.artifacts.ArtifactError` (a ValueError)
    of one line naming it."""
    from aot.core.artifacts import artifact_error, read_torch

    path = Path(path)
    if path.is_dir():
        raise artifact_error(path, STATE_DICT_KIND, "a folder, not a file", fix=STATE_DICT_FIX)
    obj = read_torch(path, kind=STATE_DICT_KIND, fix=STATE_DICT_FIX)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj or not all(
            isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()):
        raise artifact_error(path, STATE_DICT_KIND, "not a state_dict: expected a non-empty mapping of parameter "
                             f"names to tensors, possibly under 'state_dict'; got {type(obj).__name__}",
                             fix=STATE_DICT_FIX)
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def state_dict_problems(want: Mapping[str, Sequence[int]], got: Mapping[str, Tensor]) -> list[str]:
    """How the state_dict ``got`` differs from the names and shapes ``want`` (empty: it loads with strict=True)."""
    missing = [k for k in want if k not in got]
    unexpected = [k for k in got if k not in want]
    reshaped = [k for k in want if k in got and tuple(got[k].shape) != tuple(want[k])]
    problems = []
    if missing:
        problems.append(f"{len(missing)} of its {len(want)} keys missing (e.g. {missing[0]!r})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]!r})")
    if reshaped:
        k = reshaped[0]
        problems.append(f"{len(reshaped)} tensors of another shape (e.g. {k!r}: {list(got[k].shape)}, "
                        f"expected {list(want[k])})")
    return problems


def load_weights(module: nn.Module, path: str | Path) -> None:
    """Load the state_dict file ``path`` into ``module`` (strict); a file of other names or shapes raises
    :class:`aot.core.artifacts.ArtifactError` (one line naming it) instead of torch's multi-line RuntimeError."""
    from aot.core.artifacts import artifact_error

    sd = load_state_dict_file(path)
    problems = state_dict_problems({k: v.shape for k, v in module.state_dict().items()}, sd)
    if problems:
        raise artifact_error(path, STATE_DICT_KIND, f"does not fit {type(module).__name__}: {', '.join(problems)}",
                             fix=STATE_DICT_FIX)
    module.load_state_dict(sd)
