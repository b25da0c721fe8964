"""aot.eval.featnet: the small-data feature network trains on real digits, deterministically, and scores sanely."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aot.eval.featnet import FEATNET_NAME, FeatureNet, extract_features, random_translate, train_featnet
from aot.eval.metrics import frechet_distance, gaussian_stats


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Train on one intra-op thread, restored afterwards.

    With two OpenMP threads on a busy 2-core machine the runtime swings by 10x; one thread keeps this module
    within seconds. Weights depend on the thread count (reduction order): bit-identity holds at a fixed count.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits():
    """sklearn digits as uint8 NCHW (N, 1, 8, 8), stratified 80/20 split with a fixed seed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # (1797, 1, 8, 8)
    labels = d.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(images, labels, test_size=0.2, stratify=labels, random_state=0)
    return x_tr, y_tr, x_te, y_te


@pytest.fixture(scope="module")
def trained(digits):
    return train_featnet(*digits, epochs=6, seed=0)


def test_reaches_high_test_accuracy_on_digits(trained):
    model, ctor, info = trained
    assert info["test_accuracy"] >= 0.9, info
    assert info["train_accuracy"] >= 0.9, info
    assert info["name"] == FEATNET_NAME and info["epochs"] == 6 and info["seconds"] > 0
    assert set(info) == {"train_accuracy", "test_accuracy", "epochs", "seconds", "name"}
    assert not model.training
    assert ctor == dict(in_channels=1, img_resolution=8, num_classes=10, width=32, feature_dim=128)


def test_ctor_rebuilds_the_model(trained, digits):
    model, ctor, _ = trained
    clone = FeatureNet(**ctor)
    clone.load_state_dict(model.state_dict())
    clone.eval()
    x = torch.rand(5, 1, 8, 8) * 2 - 1
    with torch.no_grad():
        assert torch.equal(clone(x), model(x))


def test_same_seed_gives_bit_identical_weights(digits):
    x_tr, y_tr, x_te, y_te = digits
    subset = (x_tr[:300], y_tr[:300], x_te[:50], y_te[:50])
    rng_state = torch.random.get_rng_state()
    a, _, _ = train_featnet(*subset, epochs=2, batch_size=64, seed=7)
    b, _, _ = train_featnet(*subset, epochs=2, batch_size=64, seed=7)
    c, _, _ = train_featnet(*subset, epochs=2, batch_size=64, seed=8)
    assert torch.equal(torch.random.get_rng_state(), rng_state)  # the global RNG is untouched
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_features_shape_dtype_and_batch_independence(trained, digits):
    model, _, _ = trained
    x_te = digits[2]
    f = extract_features(model, x_te)
    assert f.shape == (len(x_te), 128) and f.dtype == np.float64
    assert np.isfinite(f).all()
    f_small = extract_features(model, x_te, batch_size=7)
    np.testing.assert_allclose(f_small, f, rtol=1e-5, atol=1e-5)
    assert extract_features(model, x_te[:0]).shape == (0, 128)


def test_fd_train_vs_test_much_smaller_than_test_vs_noise(trained, digits):
    model, _, _ = trained
    x_tr, _, x_te, _ = digits
    noise = np.random.default_rng(0).integers(0, 256, size=x_te.shape, dtype=np.uint8)
    s_tr, s_te, s_noise = (gaussian_stats(extract_features(model, x)) for x in (x_tr, x_te, noise))
    fd_real = frechet_distance(*s_tr, *s_te)
    fd_noise = frechet_distance(*s_te, *s_noise)
    assert 0 < 10 * fd_real < fd_noise, (fd_real, fd_noise)


def test_extract_features_rejects_wrong_inputs(trained):
    model, _, _ = trained
    with pytest.raises(ValueError):
        extract_features(model, np.zeros((4, 1, 8, 8), dtype=np.float32))
    with pytest.raises(ValueError):
        extract_features(model, np.zeros((4, 3, 8, 8), dtype=np.uint8))


def test_cifar_shaped_random_input():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(48, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, size=48)
    model, ctor, info = train_featnet(
        images[:40],
        labels[:40],
        images[40:],
        labels[40:],
        epochs=1,
        batch_size=16,
        feature_dim=64,
        progress=True,
    )
    assert ctor["in_channels"] == 3 and ctor["img_resolution"] == 32 and ctor["feature_dim"] == 64
    assert 0 <= info["test_accuracy"] <= 1
    f = extract_features(model, images, batch_size=20)
    assert f.shape == (48, 64) and f.dtype == np.float64
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 32, 32)).shape == (2, ctor["num_classes"])


@pytest.mark.parametrize("resolution", [0, 6, 30])
def test_rejects_resolution_not_multiple_of_4(resolution):
    with pytest.raises(ValueError):
        FeatureNet(1, resolution, 10)


def test_random_translate_is_a_one_pixel_shift():
    x = torch.arange(2 * 2 * 5 * 5, dtype=torch.float32).reshape(2, 2, 5, 5)
    g = torch.Generator().manual_seed(0)
    out = random_translate(x, g)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate")
    crops = [padded[:, :, dy : dy + 5, dx : dx + 5] for dy in range(3) for dx in range(3)]
    for i in range(2):
        assert any(torch.equal(out[i], c[i]) for c in crops)
    assert torch.equal(random_translate(x, torch.Generator().manual_seed(0)), out)
