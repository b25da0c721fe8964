"""The DG discriminator: it learns a separable toy, resumes exactly, never resumes on other data, pairs its
perturbation noise with AOT when asked, and round-trips through a plain-data checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from aot.core.samples import save_samples
from aot.data.datasets import Dataset
from aot.models.discriminator import load_discriminator
from aot.training.discriminator import (
    DiscSpec,
    build_ctor,
    train_discriminator,
    training_set,
)

HEAD = {"model_channels": 32, "num_head_channels": 32, "num_res_blocks": 1}


def toy_data(n=96, seed=0, fake_value=60):
    """Real: bright 1x8x8 images with 3 classes; fake: dark ones. Separable at low noise."""
    rng = np.random.default_rng(seed)
    real = rng.integers(180, 256, size=(n, 1, 8, 8), dtype=np.uint8)
    fake = rng.integers(0, fake_value + 1, size=(n, 1, 8, 8), dtype=np.uint8)
    labels = rng.integers(0, 3, size=n).astype(np.int64)
    ds = Dataset(real, labels, real[:4], labels[:4], {"num_classes": 3, "name": "toy"})
    return ds, fake, rng.integers(0, 3, size=n).astype(np.int64)


def spec(**kw):
    base = dict(epochs=2, batch=32, seed=0, head=HEAD)
    base.update(kw)
    return DiscSpec.from_dict(base)


def test_training_set_balances_real_and_fake():
    ds, fake, fl = toy_data(n=10)
    x, target, labels = training_set(ds, fake[:7], fl[:7])
    assert x.shape == (14, 1, 8, 8) and target.tolist() == [1.0] * 7 + [0.0] * 7
    assert x.min() >= -1 and x.max() <= 1 and labels.dtype == torch.int64


@pytest.mark.parametrize("cond", [False, True])
def test_discriminator_learns_a_separable_toy(tmp_path, cond):
    ds, fake, fl = toy_data()
    s = train_discriminator(spec(epochs=6, cond=cond, lr=1e-3), ds, fake, fl, out=tmp_path / "d.pt",
                            stats_out=tmp_path / "d.json", state_dir=tmp_path / "state", progress=False)
    assert s["final_accuracy"] > 0.8, s["history"]
    assert s["history"][-1]["loss"] < s["history"][0]["loss"]
    disc, ckpt = load_discriminator(tmp_path / "d.pt")
    assert ckpt["ctor"]["head"]["num_classes"] == (3 if cond else None)
    # At a small VP time, the trained discriminator scores real above fake on fresh draws.
    tau = torch.full((16,), 0.05)
    real = torch.full((16, 1, 8, 8), 0.9)
    dark = torch.full((16, 1, 8, 8), -0.9)
    labels = torch.zeros(16, dtype=torch.int64)
    assert (disc(real, tau, labels) > disc(dark, tau, labels)).all()


def test_resume_is_exact_and_keyed_by_the_data(tmp_path):
    ds, fake, fl = toy_data()
    kw = dict(stats_out=tmp_path / "s.json", progress=False)
    train_discriminator(spec(epochs=2), ds, fake, fl, out=tmp_path / "full.pt", state_dir=tmp_path / "a", **kw)
    train_discriminator(spec(epochs=1), ds, fake, fl, out=tmp_path / "half.pt", state_dir=tmp_path / "b", **kw)
    s = train_discriminator(spec(epochs=2), ds, fake, fl, out=tmp_path / "resumed.pt", state_dir=tmp_path / "b", **kw)
    assert [h["epoch"] for h in s["history"]] == [1, 2]
    full, resumed = (load_discriminator(tmp_path / f)[1]["state_dict"] for f in ("full.pt", "resumed.pt"))
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    # Other generated images with the same spec start from scratch instead of resuming.
    other = train_discriminator(spec(epochs=2), ds, fake // 2, fl, out=tmp_path / "other.pt",
                                state_dir=tmp_path / "a", **kw)
    assert len(list((tmp_path / "a").iterdir())) == 2
    assert other["history"][0] != s["history"][0]


def test_aot_pairing_lowers_the_noise_distance_and_is_reported(tmp_path):
    ds, fake, fl = toy_data()
    s = train_discriminator(spec(pairing="aot", cond=True), ds, fake, fl, out=tmp_path / "d.pt",
                            stats_out=tmp_path / "d.json", state_dir=tmp_path / "st", progress=False)
    assert 0 < s["dist_reduction"] < 1
    assert s["mean_dist_paired"] < s["mean_dist_independent"]
    assert json.loads((tmp_path / "d.json").read_text())["spec"]["pairing"] == "aot"


def test_bad_specs_fail_with_one_clear_line(tmp_path):
    ds, fake, fl = toy_data(n=8)
    with pytest.raises(ValueError, match="pairing='sinkhorn' is unknown"):
        DiscSpec.from_dict({"pairing": "sinkhorn"})
    with pytest.raises(ValueError, match="unknown discriminator spec keys"):
        DiscSpec.from_dict({"epoch": 3})
    with pytest.raises(FileNotFoundError, match="guidance.extractor_weights"):
        build_ctor(spec(extractor="adm32", extractor_weights=str(tmp_path / "no.pt")), channels=3, resolution=32,
                   num_classes=10)
    with pytest.raises(ValueError, match="needs 3x32x32 images"):
        build_ctor(spec(extractor="adm32"), channels=1, resolution=8, num_classes=10)
    with pytest.raises(ValueError, match="batch=32 exceeds the 16 training images"):
        train_discriminator(spec(), ds, fake, fl, out=tmp_path / "d.pt", stats_out=tmp_path / "d.json",
                            state_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="needs labelled samples"):
        train_discriminator(spec(cond=True, batch=4), ds, fake, np.full(8, -1), out=tmp_path / "d.pt",
                            stats_out=tmp_path / "d.json", state_dir=tmp_path, progress=False)
    assert not (tmp_path / "d.pt").exists()


def test_adm32_extractor_weights_are_checked_by_sha256(tmp_path):
    from aot.models.adm import ADM_CLASSIFIER_32, EncoderUNet
    from aot.models.discriminator import discriminator_from_ctor

    weights = tmp_path / "32x32_classifier.pt"
    torch.save(EncoderUNet(**ADM_CLASSIFIER_32).state_dict(), weights)
    ctor = build_ctor(spec(extractor="adm32", extractor_weights=str(weights), head={}), channels=3, resolution=32,
                      num_classes=10)
    assert ctor["head"]["in_channels"] == 512 and ctor["head"]["image_size"] == 8
    disc = discriminator_from_ctor(ctor)
    assert not any(p.requires_grad for p in disc.extractor.parameters())
    out = disc(torch.zeros(2, 3, 32, 32), torch.full((2,), 0.5))
    assert out.shape == (2,)
    torch.save({"other": torch.zeros(1)}, weights)  # the file changed after training
    with pytest.raises(ValueError, match="sha256 differs"):
        discriminator_from_ctor(ctor)


def test_adm64_extractor_needs_64x64_rgb_and_reads_cosine_time(tmp_path):
    """extractor adm64: guided-diffusion's 64x64 classifier (65.4M parameters, features 512x8x8, so DG's head), fed
    the cosine schedule's time, as DG's get_grad_log_ratio at img_resolution 64."""
    from aot.models.adm import ADM_CLASSIFIER_64, DG_HEAD

    weights = tmp_path / "64x64_classifier.pt"
    weights.write_bytes(b"only its sha256 is read by build_ctor")
    ctor = build_ctor(spec(extractor="adm64", extractor_weights=str(weights), head={}), channels=3, resolution=64,
                      num_classes=0)
    assert ctor["extractor"] == ADM_CLASSIFIER_64 and ctor["time"] == "cosine"
    assert ctor["head"] == dict(DG_HEAD, out_channels=1, num_classes=None)
    with pytest.raises(ValueError, match="extractor=adm64 needs 3x64x64 images, the data is 3x32x32"):
        build_ctor(spec(extractor="adm64", extractor_weights=str(weights)), channels=3, resolution=32, num_classes=10)
    with pytest.raises(FileNotFoundError, match="64x64_classifier.pt .*--extractor adm64"):
        build_ctor(spec(extractor="adm64", extractor_weights=str(tmp_path / "missing.pt")), channels=3,
                   resolution=64, num_classes=0)
    assert build_ctor(spec(), channels=1, resolution=8, num_classes=3)["time"] == "vp"


@pytest.mark.parametrize("time", ["vp", "cosine"])
def test_discriminator_feeds_the_mapped_time_to_extractor_and_head(time):
    """A small extractor: logits == head(extractor.features(x, t'), t') with t' = tau (vp) or cosine_time(tau)."""
    from aot.models.adm import DG_HEAD
    from aot.models.discriminator import Discriminator
    from aot.models.vp import cosine_time

    ext = dict(image_size=16, in_channels=3, model_channels=32, out_channels=10, num_res_blocks=1,
               attention_resolutions=[2], channel_mult=[1, 2], num_head_channels=32)
    head = dict(DG_HEAD, image_size=8, in_channels=64, model_channels=32, num_head_channels=32, num_res_blocks=1)
    torch.manual_seed(0)
    disc = Discriminator(head, ext, time).eval()
    with torch.no_grad():  # ADM zero-initialises its output convs: redraw every weight so that time matters
        for p in disc.parameters():
            p.copy_(0.2 * torch.randn_like(p))
    x, tau = torch.randn(3, 3, 16, 16), torch.tensor([0.02, 0.3, 0.9])
    t = cosine_time(tau) if time == "cosine" else tau
    with torch.no_grad():
        want = disc.head(disc.extractor.features(x, t), t).view(-1)
        torch.testing.assert_close(disc(x, tau), want, rtol=0, atol=0)
        if time == "cosine":  # the mapping matters: at the VP time itself the logits differ
            assert not torch.allclose(disc(x, tau), disc.head(disc.extractor.features(x, tau), tau).view(-1))
    with pytest.raises(ValueError, match="time='linear' is unknown; valid choices: vp, cosine"):
        Discriminator(head, ext, "linear")


def test_cli_train_disc_then_guided_sample_needs_disc(tmp_path):
    """`python -m aot sample --dg-weight` without `--disc` is refused in one line, before loading anything."""
    save_samples(tmp_path / "fake.npz", dict(images=np.zeros((4, 1, 8, 8), np.uint8), labels=np.full(4, -1),
                                             seeds=np.arange(4), meta=np.array("{}")))
    r = subprocess.run([sys.executable, "-m", "aot", "sample", "--ckpt", str(tmp_path / "none.pt"), "--rho", "7",
                        "--steps", "4", "--seeds", "0-3", "--dg-weight", "2", "--out", str(tmp_path / "s.npz")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("error: --dg-weight needs --disc")
