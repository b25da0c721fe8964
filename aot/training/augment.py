"""EDM's non-leaking geometric augmentation (Karras et al. 2022, App. F.2; docs/method.md §1.5, §2.4).

Written from scratch after reading NVlabs/edm ``training/augment.py`` (itself built on StyleGAN2-ADA,
Karras et al. 2020): same parameters, same sampling distributions, same composed warp, same 9-dim labels.
Every image gets each transform independently with probability ``p * multiplier`` (clipped to 1). The
network is conditioned on the labels, so it learns the augmented distribution "as a side task" and is fed
zero labels at sampling time; the augmentations therefore do not leak into the generated images.

Augment labels, shape (N, 9), float32 (``AUGMENT_DIM``), in EDM's order for its CIFAR-10 config; a slot is
exactly 0 when its transform was not applied to that image (and the xflip/yflip slot is also 0 when the
coin said "no flip"):

====  ==============  =========================================================================
slot  transform       value
====  ==============  =========================================================================
0     xflip           1 if mirrored horizontally (width axis) else 0
1     yflip           1 if mirrored vertically (height axis) else 0
2     scale           w ~ N(0, 1); content magnified by s = 2^(w * scale_std)
3     rotate_frac     cos(w) - 1,  w ~ U(-pi, pi) * rotate_frac_max; content turned counter-clockwise
4     rotate_frac     sin(w)       on screen by w (rows run downward)
5     aniso           w cos(r),    w ~ N(0, 1): content stretched by 2^(w * aniso_std) along (cos r, -sin r)
6     aniso           w sin(r)     and squeezed across; r ~ U(-pi, pi) w.p. aniso_rotate_prob, else r = 0
7     translate_frac  w_x ~ N(0, 1); content moves right by w_x * translate_std * W pixels
8     translate_frac  w_y ~ N(0, 1); content moves down by w_y * translate_std * H pixels
====  ==============  =========================================================================

The aniso slots are EDM's encoding: (w, r) and (-w, r + pi) share a label but are different stretches.

The geometric transforms compose into one matrix G_inv (output pixel -> input pixel, pixel units, origin
at the image centre) applied as EDM does: reflect-pad, 2x upsample with the sym6 wavelet low-pass, bilinear
``grid_sample``, sym6 downsample and crop (``warp``). An identity G_inv reproduces the image to float
rounding and integer translations are exact; sym6 is not symmetric, so rotations and scalings pivot
< 0.1 px off the centre, exactly as in EDM (original pixel k sits at upsampled index 2k).

Differences from EDM, none of which changes what a label means:

* Only the transforms of EDM's CIFAR-10 config exist (xflip, yflip, scale, rotate_frac, aniso,
  translate_frac). The integer ones (rotate_int, translate_int) and the colour ones (brightness,
  contrast, lumaflip, hue, saturation) are left out; asking for them raises ``ValueError``.
* The label layout is fixed at 9 slots; a disabled transform (multiplier 0) keeps its slots at 0, where EDM
  would drop them and shrink the label vector.
* Only images with a geometric transform applied go through ``warp``; EDM sends the whole batch when any
  multiplier is nonzero, which for the others is the identity up to ~1e-6 of float rounding.
* EDM's ``translate_frac_std`` is called ``translate_std`` here. Random numbers come from the caller's
  generator, in the same order and shapes as EDM draws them from the global RNG.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

AUGMENT_DIM = 9

EDM_CIFAR10 = dict(p=0.12, xflip=1e8, yflip=1, scale=1, rotate_frac=1, aniso=1, translate_frac=1)

# Daubechies' least-asymmetric wavelet "sym6", decomposition low-pass filter (orthonormal, sum = sqrt(2)).
SYM6 = (
    0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
    0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
    -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148,
)  # fmt: skip

Draw = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # G_inv factor (N, 3, 3), labels (N, k), applied (N,)

_UNSUPPORTED = ("rotate_int", "translate_int", "brightness", "contrast", "lumaflip", "hue", "saturation")

# ----------------------------------------------------------------------------
# 3x3 homogeneous matrices in pixel units, batched over leading dims: (..., 3, 3).


def affine2d(a, b, c, d, tx, ty) -> torch.Tensor:
    """[[a, b, tx], [c, d, ty], [0, 0, 1]] from tensors (or floats) broadcast to one batch shape."""
    ref = next(v for v in (a, b, c, d, tx, ty) if isinstance(v, torch.Tensor))
    a, b, c, d, tx, ty = torch.broadcast_tensors(*(torch.as_tensor(v, dtype=ref.dtype, device=ref.device)
                                                   for v in (a, b, c, d, tx, ty)))
    zero, one = torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([a, b, tx, c, d, ty, zero, zero, one], dim=-1).unflatten(-1, (3, 3))


def translate2d(tx: torch.Tensor, ty: torch.Tensor | float = 0.0) -> torch.Tensor:
    """x -> x + (tx, ty)."""
    return affine2d(1.0, 0.0, 0.0, 1.0, tx, ty)


def scale2d(sx: torch.Tensor, sy: torch.Tensor | float | None = None) -> torch.Tensor:
    """x -> diag(sx, sy) x (isotropic when sy is None)."""
    return affine2d(sx, 0.0, 0.0, sx if sy is None else sy, 0.0, 0.0)


def rotate2d(theta: torch.Tensor) -> torch.Tensor:
    """x -> R(theta) x with R = [[cos, -sin], [sin, cos]]."""
    cos, sin = theta.cos(), theta.sin()
    return affine2d(cos, -sin, sin, cos, 0.0, 0.0)


# ----------------------------------------------------------------------------
# Random draws: everything comes from the caller's generator, on the generator's device.


def _rand(n: int, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=generator.device)


def _randn(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=generator, device=generator.device)


def _gate(w: torch.Tensor, prob: float, generator: torch.Generator) -> torch.Tensor:
    """Keep w[..., i] with probability prob (one coin per image, the last dim), else 0."""
    keep = _rand(w.shape[-1], generator) < prob
    return torch.where(keep, w, torch.zeros_like(w))


# ----------------------------------------------------------------------------
# The warp: reflect-pad, sym6 2x upsample, bilinear resample, sym6 2x downsample.


def _margins(G_inv: torch.Tensor, H: int, W: int, slack: int) -> list[int]:
    """Reflect-padding (left, right, top, bottom) so every output corner's source lies inside the pad."""
    cx, cy = (W - 1) / 2, (H - 1) / 2
    corners = torch.tensor([[-cx, cx, cx, -cx], [-cy, -cy, cy, cy], [1, 1, 1, 1]]).to(G_inv)  # (3, 4)
    src = (G_inv @ corners)[:, :2, :]  # (N, 2, 4): source (x, y) of each output corner
    lo, hi = (-src).amax(dim=(0, 2)), src.amax(dim=(0, 2))  # (2,) each, (x, y)
    half = torch.tensor([cx, cy]).to(G_inv)
    limit = torch.tensor([W - 1, H - 1]).to(G_inv)  # one reflection must suffice
    m0 = (lo - half + slack).clamp(min=0).minimum(limit).ceil().int().tolist()
    m1 = (hi - half + slack).clamp(min=0).minimum(limit).ceil().int().tolist()
    return [m0[0], m1[0], m0[1], m1[1]]


def _filter_taps(images: torch.Tensor) -> torch.Tensor:
    """sym6 as a depthwise kernel, shape (C, 1, 1, L)."""
    h = torch.tensor(SYM6, dtype=images.dtype, device=images.device)
    return h.reshape(1, 1, 1, -1).expand(images.shape[1], 1, 1, -1)


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, 2H, 2W); input pixel k lands on output index 2k (EDM's phase)."""
    k = _filter_taps(x)
    pad = (k.shape[-1] - 2) // 2
    x = F.conv_transpose2d(x, k, stride=(1, 2), padding=(0, pad), groups=x.shape[1])
    return F.conv_transpose2d(x, k.transpose(2, 3), stride=(2, 1), padding=(pad, 0), groups=x.shape[1])


def downsample2x(x: torch.Tensor) -> torch.Tensor:
    """(N, C, 2H, 2W) -> (N, C, H, W), the adjoint of ``upsample2x`` (and its left inverse)."""
    k = _filter_taps(x)
    pad = (k.shape[-1] - 2) // 2
    x = F.conv2d(x, k, stride=(1, 2), padding=(0, pad), groups=x.shape[1])
    return F.conv2d(x, k.transpose(2, 3), stride=(2, 1), padding=(pad, 0), groups=x.shape[1])


def _to_upsampled(size_up: tuple[int, int], ref: torch.Tensor) -> torch.Tensor:
    """Centred pixel coords -> normalized coords of a 2x upsampled grid of size_up (align_corners=False)."""
    two = torch.tensor(2.0, dtype=ref.dtype, device=ref.device)
    # Pixel k sits at upsampled index 2k: u = 2x - 1/2 (centred), then n = 2u / size.
    return scale2d(two / size_up[1], 2 / size_up[0]) @ translate2d(-two / 4, -0.5) @ scale2d(two)


def warp(images: torch.Tensor, G_inv: torch.Tensor) -> torch.Tensor:
    """Resample each image at G_inv (output pixel -> input pixel), reflect-padded, anti-aliased.

    images : Tensor, shape (N, C, H, W)
    G_inv : Tensor, shape (N, 3, 3), pixel units, origin at the image centre, y pointing down
    returns : Tensor, shape (N, C, H, W)
    """
    N, C, H, W = images.shape
    G_inv = G_inv.to(torch.float64)  # the matrix chain is tiny; keep its rounding negligible
    slack = len(SYM6) // 4  # output border kept while resampling, so the downsample sees no edge

    # Reflect-pad so the sampled area and the filter footprints stay inside real (mirrored) content.
    mx0, mx1, my0, my1 = _margins(G_inv, H, W, 2 * slack)
    x = F.pad(images, [mx0, mx1, my0, my1], mode="reflect")
    shift = torch.tensor((mx0 - mx1) / 2, dtype=G_inv.dtype, device=G_inv.device)
    G_inv = translate2d(shift, (my0 - my1) / 2) @ G_inv

    # Upsample, resample the (H + 2 slack, W + 2 slack) output window bilinearly, downsample and crop.
    x = upsample2x(x)
    out_up = (2 * (H + 2 * slack), 2 * (W + 2 * slack))
    theta = _to_upsampled(tuple(x.shape[2:]), G_inv) @ G_inv @ _to_upsampled(out_up, G_inv).inverse()
    grid = F.affine_grid(theta[:, :2, :].to(x.dtype), [N, C, *out_up], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return downsample2x(x)[:, :, slack : slack + H, slack : slack + W]


# ----------------------------------------------------------------------------
# The pipe.


class AugmentPipe:
    """EDM's augmentation pipe restricted to its geometric transforms; see the module docstring.

    Each ``*`` multiplier times ``p`` is the probability (clipped to 1) that an image gets that transform;
    0 disables it. ``xflip=1e8`` makes the x-flip coin always tossed, i.e. a plain 50% mirror.
    """

    def __init__(self, p: float = 0.12, xflip: float = 1e8, yflip: float = 1, scale: float = 1,
                 rotate_frac: float = 1, aniso: float = 1, translate_frac: float = 1, scale_std: float = 0.2,
                 rotate_frac_max: float = 1, aniso_std: float = 0.2, aniso_rotate_prob: float = 0.5,
                 translate_std: float = 0.125, **unsupported: float):
        self.p = float(p)                                  # overall multiplier of every probability
        self.xflip = float(xflip)                          # x-flip (mirror along the width axis)
        self.yflip = float(yflip)                          # y-flip (mirror along the height axis)
        self.scale = float(scale)                          # isotropic scaling
        self.rotate_frac = float(rotate_frac)              # arbitrary rotation
        self.aniso = float(aniso)                          # anisotropic scaling
        self.translate_frac = float(translate_frac)        # fractional translation
        self.scale_std = float(scale_std)                  # log2 std of isotropic scaling
        self.rotate_frac_max = float(rotate_frac_max)      # rotation range, 1 = full circle
        self.aniso_std = float(aniso_std)                  # log2 std of anisotropic scaling
        self.aniso_rotate_prob = float(aniso_rotate_prob)  # prob. of stretching along a random axis
        self.translate_std = float(translate_std)          # translation std, relative to image size
        self._check(unsupported)

    def _check(self, unsupported: dict[str, float]) -> None:
        for name, value in unsupported.items():
            if name not in _UNSUPPORTED:
                raise ValueError(f"AugmentPipe: unknown option {name}={value!r}")
            if value != 0:
                raise ValueError(f"AugmentPipe: {name} is not implemented (only EDM's geometric CIFAR-10 "
                                 f"transforms are); set {name}=0")
        multipliers = (self.xflip, self.yflip, self.scale, self.rotate_frac, self.aniso, self.translate_frac)
        if min(self.p, *multipliers) < 0:
            raise ValueError("AugmentPipe: p and the probability multipliers must be >= 0")

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment a batch.

        images : Tensor, shape (N, C, H, W), float, in [-1, 1]; any square or rectangular size >= 7
        generator : torch.Generator, source of all randomness (its device hosts the draws)
        returns : (Tensor, shape (N, C, H, W), same dtype and device; Tensor, shape (N, 9), float32 labels)
        """
        N, C, H, W = images.shape
        labels = torch.zeros(N, AUGMENT_DIM, device=generator.device)

        # Pixel blitting: exact flips.
        x_flip, y_flip = self._flip(N, self.xflip, generator), self._flip(N, self.yflip, generator)
        labels[:, 0], labels[:, 1] = x_flip, y_flip
        images = torch.where(x_flip.bool().to(images.device).view(N, 1, 1, 1), images.flip(3), images)
        images = torch.where(y_flip.bool().to(images.device).view(N, 1, 1, 1), images.flip(2), images)

        # Geometric transforms: one composed G_inv per image, applied where any transform was drawn.
        G_inv = torch.eye(3, device=generator.device).repeat(N, 1, 1)
        applied = torch.zeros(N, dtype=torch.bool, device=generator.device)
        for sample, slots in ((self._scale, [2]), (self._rotate, [3, 4]), (self._aniso, [5, 6]),
                              (self._translate, [7, 8])):
            G_part, part_labels, hit = sample(N, H, W, generator)
            G_inv, applied = G_inv @ G_part, applied | hit
            labels[:, slots] = part_labels
        idx = applied.nonzero().flatten().to(images.device)
        if len(idx):
            warped = warp(images[idx], G_inv[applied].to(images.device))
            images = images.index_copy(0, idx, warped.to(images.dtype))
        return images, labels.to(images.device)

    # Each sampler returns a Draw: (G_inv factor (N, 3, 3), labels (N, k), applied mask (N,)).

    def _flip(self, N: int, multiplier: float, generator: torch.Generator) -> torch.Tensor:
        if multiplier == 0:
            return torch.zeros(N, device=generator.device)
        w = torch.randint(2, (N,), generator=generator, device=generator.device).float()
        return _gate(w, multiplier * self.p, generator)

    def _scale(self, N: int, H: int, W: int, generator: torch.Generator) -> Draw:
        if self.scale == 0:
            return _off(N, 1, generator)
        w = _gate(_randn((N,), generator), self.scale * self.p, generator)
        s = torch.exp2(w * self.scale_std)
        return scale2d(1 / s), w[:, None], w != 0

    def _rotate(self, N: int, H: int, W: int, generator: torch.Generator) -> Draw:
        if self.rotate_frac == 0:
            return _off(N, 2, generator)
        w = (_rand(N, generator) * 2 - 1) * (math.pi * self.rotate_frac_max)
        w = _gate(w, self.rotate_frac * self.p, generator)
        return rotate2d(w), torch.stack([w.cos() - 1, w.sin()], dim=1), w != 0

    def _aniso(self, N: int, H: int, W: int, generator: torch.Generator) -> Draw:
        if self.aniso == 0:
            return _off(N, 2, generator)
        w = _randn((N,), generator)
        r = (_rand(N, generator) * 2 - 1) * math.pi
        w = _gate(w, self.aniso * self.p, generator)
        r = _gate(r, self.aniso_rotate_prob, generator)
        s = torch.exp2(w * self.aniso_std)
        G = rotate2d(-r) @ scale2d(1 / s, s) @ rotate2d(r)  # stretch by s along (cos r, -sin r)
        return G, torch.stack([w * r.cos(), w * r.sin()], dim=1), w != 0

    def _translate(self, N: int, H: int, W: int, generator: torch.Generator) -> Draw:
        if self.translate_frac == 0:
            return _off(N, 2, generator)
        w = _gate(_randn((2, N), generator), self.translate_frac * self.p, generator)
        G = translate2d(-w[0] * (W * self.translate_std), -w[1] * (H * self.translate_std))
        return G, w.t(), (w != 0).any(dim=0)


def _off(N: int, k: int, generator: torch.Generator) -> Draw:
    """A disabled transform: identity, zero labels, nothing applied."""
    device = generator.device
    G_inv = torch.eye(3, device=device).repeat(N, 1, 1)
    return G_inv, torch.zeros(N, k, device=device), torch.zeros(N, dtype=torch.bool, device=device)


def augment_pipe_from_config(p: float) -> AugmentPipe | None:
    """EDM's CIFAR-10 pipe at augmentation probability p; None when p == 0 (no pipe, augment_dim 0)."""
    if p < 0:
        raise ValueError(f"augment probability p={p} must be >= 0")
    return AugmentPipe(**{**EDM_CIFAR10, "p": p}) if p > 0 else None
