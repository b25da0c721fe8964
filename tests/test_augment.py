"""EDM's geometric augmentation pipe: identity cases, exact flips, warp geometry, label layout, RNG, rates."""

import math

import pytest
import torch

from aot.training.augment import (
    AUGMENT_DIM,
    EDM_CIFAR10,
    SYM6,
    AugmentPipe,
    augment_pipe_from_config,
    downsample2x,
    rotate2d,
    scale2d,
    translate2d,
    upsample2x,
    warp,
)

OFF = dict(xflip=0, yflip=0, scale=0, rotate_frac=0, aniso=0, translate_frac=0)
SLOTS = {"xflip": [0], "yflip": [1], "scale": [2], "rotate_frac": [3, 4], "aniso": [5, 6],
         "translate_frac": [7, 8]}  # the documented EDM layout
WARP_TOL = 1e-4  # float rounding through the filters is ~1e-5; a one-pixel error is O(1) on random images


def images(shape, seed=0, dtype=torch.float32):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype) * 2 - 1


def gen(seed):
    return torch.Generator().manual_seed(seed)


def flips_from_labels(x, labels):
    """Apply the flips the labels report (exact pixel blitting)."""
    x = torch.where(labels[:, 0].bool().view(-1, 1, 1, 1), x.flip(3), x)
    return torch.where(labels[:, 1].bool().view(-1, 1, 1, 1), x.flip(2), x)


def G_inv_from_labels(labels, H, W, scale_std=0.2, aniso_std=0.2, translate_std=0.125):
    """Rebuild G_inv from the documented label meaning (aniso only for r = 0, where it is unambiguous)."""
    s = torch.exp2(labels[:, 2].double() * scale_std)
    theta = torch.atan2(labels[:, 4].double(), labels[:, 3].double() + 1)
    a = torch.exp2(labels[:, 5].double() * aniso_std)
    t = labels[:, 7:9].double() * translate_std * torch.tensor([W, H], dtype=torch.float64)
    # content: scaled by s, turned by theta, stretched by a along x, moved by t -> inverse map, output->input
    return scale2d(1 / s) @ rotate2d(theta) @ scale2d(1 / a, a) @ translate2d(-t[:, 0], -t[:, 1])


# ----------------------------------------------------------------------------
# Configuration.


def test_from_config_and_constants():
    assert augment_pipe_from_config(0) is None
    pipe = augment_pipe_from_config(0.12)
    assert AUGMENT_DIM == 9
    assert {k: getattr(pipe, k) for k in EDM_CIFAR10} == EDM_CIFAR10
    assert (pipe.scale_std, pipe.rotate_frac_max, pipe.aniso_std, pipe.translate_std) == (0.2, 1, 0.2, 0.125)
    assert augment_pipe_from_config(0.5).p == 0.5
    with pytest.raises(ValueError):
        augment_pipe_from_config(-0.1)


@pytest.mark.parametrize("kwargs", [dict(brightness=1), dict(hue=0.5), dict(rotate_int=1), dict(bogus=0),
                                    dict(scale=-1), dict(p=-0.1)])
def test_unsupported_or_invalid_options_raise(kwargs):
    with pytest.raises(ValueError):
        AugmentPipe(**kwargs)


def test_unsupported_options_at_zero_are_accepted():
    AugmentPipe(brightness=0, contrast=0, lumaflip=0, hue=0, saturation=0, rotate_int=0, translate_int=0)


# ----------------------------------------------------------------------------
# Identity cases.


def test_p0_is_identity_with_zero_labels():
    x = images((16, 3, 32, 32))
    y, labels = AugmentPipe(p=0)(x, gen(0))
    assert torch.equal(y, x)
    assert labels.shape == (16, AUGMENT_DIM) and not labels.any()


def test_zero_magnitudes_give_identity_geometry():
    # Every transform is drawn for every image, but with zero size: the warp runs and must return the input.
    pipe = AugmentPipe(p=1, **{**OFF, "scale": 1, "rotate_frac": 1, "aniso": 1, "translate_frac": 1},
                       scale_std=0, rotate_frac_max=0, aniso_std=0, translate_std=0)
    for shape in [(8, 3, 32, 32), (8, 1, 8, 8)]:
        x = images(shape)
        y, labels = pipe(x, gen(1))
        torch.testing.assert_close(y, x, atol=1e-5, rtol=0)
        assert labels[:, 2].all() and labels[:, 5].all() and labels[:, 7:].all()  # drawn (EDM labels them)
        assert not labels[:, 3:5].any()  # rotation by exactly 0: cos - 1 = sin = 0


def test_warp_identity_and_filter_roundtrip():
    x = images((4, 3, 16, 16), dtype=torch.float64)
    identity = torch.eye(3, dtype=torch.float64).repeat(4, 1, 1)
    torch.testing.assert_close(warp(x, identity), x, atol=1e-10, rtol=0)
    up = upsample2x(x)
    assert up.shape == (4, 3, 32, 32)
    torch.testing.assert_close(downsample2x(up)[..., 3:-3, 3:-3], x[..., 3:-3, 3:-3], atol=1e-10, rtol=0)


def test_sym6_is_an_orthonormal_lowpass():
    h = torch.tensor(SYM6, dtype=torch.float64)
    assert h.sum().item() == pytest.approx(math.sqrt(2), abs=1e-12)
    for shift in range(0, len(h), 2):
        assert (h[shift:] * h[: len(h) - shift]).sum().item() == pytest.approx(float(shift == 0), abs=1e-12)


# ----------------------------------------------------------------------------
# Flips: exact pixel blitting, labelled.


@pytest.mark.parametrize("name, dim", [("xflip", 3), ("yflip", 2)])
def test_flip_only_is_exact_and_labelled(name, dim):
    x = images((2000, 1, 8, 8))
    y, labels = AugmentPipe(p=1, **{**OFF, name: 1e8})(x, gen(2))
    flipped = labels[:, SLOTS[name][0]].bool()
    assert torch.equal(y[flipped], x[flipped].flip(dim))
    assert torch.equal(y[~flipped], x[~flipped])
    assert (y[flipped] != x[flipped]).flatten(1).any(1).all()  # random images: a missed flip would show
    assert 0.45 < flipped.float().mean().item() < 0.55
    other = [i for i in range(AUGMENT_DIM) if i != SLOTS[name][0]]
    assert not labels[:, other].any()


# ----------------------------------------------------------------------------
# Warp geometry (output pixel -> input pixel in centred pixel units, rows pointing down).


@pytest.mark.parametrize("tx, ty", [(3, -2), (0, 5), (-4, 0), (1, 1)])
def test_integer_translation_moves_content_with_reflect_padding(tx, ty):
    N, H, W = 2, 32, 32
    x = images((N, 3, H, W), seed=3)
    y = warp(x, translate2d(torch.full((N,), -float(tx)), -float(ty)))  # content moves by (+tx, +ty)
    m = max(abs(tx), abs(ty))
    padded = torch.nn.functional.pad(x, [m] * 4, mode="reflect")
    expected = padded[:, :, m - ty : m - ty + H, m - tx : m - tx + W]
    torch.testing.assert_close(y, expected, atol=WARP_TOL, rtol=0)


def smooth_images(shape, seed=0):
    """Band-limited random images: bicubic upsampling of 4x4 noise."""
    coarse = images((*shape[:2], 4, 4), seed=seed)
    return torch.nn.functional.interpolate(coarse, size=shape[2:], mode="bicubic", align_corners=False)


def test_quarter_rotation_is_rot90_counter_clockwise():
    # sym6 is not symmetric, so (as in EDM) the pivot sits < 0.1 px off the centre: a smooth image and a
    # loose tolerance. The clockwise and half turns miss by ~2.
    x = smooth_images((3, 2, 16, 16), seed=4)
    y = warp(x, rotate2d(torch.full((3,), math.pi / 2)))
    torch.testing.assert_close(y, torch.rot90(x, 1, dims=(2, 3)), atol=0.1, rtol=0)


def test_scale_magnifies_content():
    # A centred Gaussian blob of std 3 px warped with G_inv = scale(1/2) becomes one of std 6 px (up to
    # bilinear interpolation at the peak, ~7e-3).
    r = torch.arange(32, dtype=torch.float64) - 15.5

    def blob(std):
        return torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * std**2))[None, None]

    y = warp(blob(3.0), scale2d(torch.tensor([0.5], dtype=torch.float64)))
    torch.testing.assert_close(y, blob(6.0), atol=0.01, rtol=0)


# ----------------------------------------------------------------------------
# Labels: layout and meaning.


@pytest.mark.parametrize("name", list(SLOTS))
def test_each_transform_fills_only_its_slots(name):
    y, labels = AugmentPipe(p=1, **{**OFF, name: 1})(images((64, 3, 16, 16)), gen(5))
    other = [i for i in range(AUGMENT_DIM) if i not in SLOTS[name]]
    assert not labels[:, other].any()
    hit = labels[:, SLOTS[name]].ne(0).any(1)
    if name in ("xflip", "yflip"):
        assert 0.3 < hit.float().mean() < 0.7 and set(labels[:, SLOTS[name][0]].tolist()) == {0.0, 1.0}
    else:
        assert hit.all()


def test_labels_determine_the_geometry():
    # With every transform on, the output equals flips + warp with G_inv rebuilt from the documented labels.
    N, H, W = 32, 16, 16
    x = images((N, 3, H, W), seed=6)
    pipe = AugmentPipe(**{**EDM_CIFAR10, "p": 1, "yflip": 1, "xflip": 1}, aniso_rotate_prob=0)
    y, labels = pipe(x, gen(7))
    assert not labels[:, 6].any()  # r = 0: the aniso stretch is along x
    expected = warp(flips_from_labels(x, labels).double(), G_inv_from_labels(labels, H, W))
    torch.testing.assert_close(y.double(), expected, atol=WARP_TOL, rtol=0)


def test_labels_are_zero_exactly_when_no_transform_was_applied():
    x = images((512, 3, 16, 16), seed=8)
    y, labels = AugmentPipe(**EDM_CIFAR10)(x, gen(9))
    x_flipped = flips_from_labels(x, labels)
    plain = ~labels[:, 2:].ne(0).any(1)
    assert 100 < plain.sum() < 412
    assert torch.equal(y[plain], x_flipped[plain])  # no geometric transform: only the exact flips
    assert (y[~plain] - x_flipped[~plain]).abs().flatten(1).amax(1).min() > 1e-3


# ----------------------------------------------------------------------------
# Randomness, shapes, dtypes, range.


def test_same_generator_state_same_output_and_new_seed_differs():
    x = images((64, 3, 32, 32), seed=10)
    pipe = AugmentPipe(**EDM_CIFAR10)
    y1, l1 = pipe(x, gen(11))
    y2, l2 = pipe(x, gen(11))
    y3, l3 = pipe(x, gen(12))
    assert torch.equal(y1, y2) and torch.equal(l1, l2)
    assert not torch.equal(l1, l3) and not torch.equal(y1, y3)


@pytest.mark.parametrize("shape", [(64, 1, 8, 8), (32, 3, 32, 32), (8, 4, 12, 20)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shapes_dtypes_and_range(shape, dtype):
    x = images(shape, seed=13, dtype=dtype)
    y, labels = AugmentPipe(**{**EDM_CIFAR10, "p": 0.5})(x, gen(14))
    assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
    assert labels.shape == (shape[0], AUGMENT_DIM) and labels.dtype == torch.float32
    assert torch.isfinite(y).all() and y.abs().max() < 2.0  # sym6 rings a little beyond [-1, 1] on noise


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_labels():
    x = images((16, 3, 32, 32), seed=15)
    g = torch.Generator(device="cuda").manual_seed(16)
    y, labels = AugmentPipe(**{**EDM_CIFAR10, "p": 1})(x.cuda(), g)
    assert y.is_cuda and labels.is_cuda and labels.shape == (16, AUGMENT_DIM)


# ----------------------------------------------------------------------------
# Rates under EDM's CIFAR-10 settings.


def test_edm_cifar10_rates():
    # Each of scale, rotate_frac, aniso, translate_frac is drawn with prob. p = 0.12, independently, so
    # P(any non-flip transform) = 1 - 0.88^4 = 0.400; xflip = 1e8 * p >= 1 -> always tossed -> 50% flipped;
    # yflip is tossed with prob. 0.12 -> 6% flipped.
    N = 4000
    _, labels = AugmentPipe(**EDM_CIFAR10)(images((N, 1, 8, 8), seed=17), gen(18))
    hit = labels.ne(0)
    any_geometric = hit[:, 2:].any(1).float().mean().item()
    assert any_geometric == pytest.approx(1 - 0.88**4, abs=0.03)
    for name in ("scale", "rotate_frac", "aniso", "translate_frac"):
        assert hit[:, SLOTS[name]].any(1).float().mean().item() == pytest.approx(0.12, abs=0.02)
    assert hit[:, 0].float().mean().item() == pytest.approx(0.5, abs=0.03)
    assert hit[:, 1].float().mean().item() == pytest.approx(0.06, abs=0.015)
