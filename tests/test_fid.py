"""aot.eval.fid: offline asset handling, the clean-fid legacy_tensorflow feature path (fake TorchScript Inception),
and FID over seed blocks. No network and no real Inception weights are used."""

from __future__ import annotations

import hashlib
import io
import socket
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from fakes import write_fake_inception

from aot.eval import fid
from aot.eval.fid import (
    INCEPTION_FILE,
    InceptionFeatures,
    MissingAssetError,
    dataset_stats,
    fid_blocks,
    fid_from_features,
    inception_weights,
    reference_stats,
)
from aot.eval.metrics import frechet_distance, gaussian_stats

downloads_helper = pytest.importorskip("cleanfid.downloads_helper")
STATS_FILE = "cifar10_legacy_tensorflow_train_32.npz"


@pytest.fixture
def offline(monkeypatch):
    """Every socket connection fails, as on an offline cluster node."""

    def refuse(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture
def caches(tmp_path, monkeypatch):
    """clean-fid's caches (Inception weights, stats) point at empty folders; an output folder beside them."""
    dirs = {name: tmp_path / name for name in ("inception", "stats", "out")}
    for d in dirs.values():
        d.mkdir()
    monkeypatch.setattr(fid, "INCEPTION_CACHE_DIR", dirs["inception"])
    monkeypatch.setattr(fid, "CLEANFID_STATS_DIR", dirs["stats"])
    return dirs


def assert_one_line(err: Exception, *words: str) -> None:
    msg = str(err)
    assert "\n" not in msg and msg.strip() == msg, msg
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"


def listing(*dirs) -> list[str]:
    return sorted(str(p) for d in dirs for p in d.rglob("*"))


# ----------------------------------------------------------------------------
# Assets offline.


def test_inception_weights_offline_raises_one_line(offline, caches):
    with pytest.raises(MissingAssetError) as e:
        inception_weights()
    assert_one_line(e.value, INCEPTION_FILE, "evaluate.inception_weights", str(caches["inception"]), "failed")
    assert isinstance(e.value, FileNotFoundError)
    assert listing(*caches.values()) == []  # no half file in the cache, nothing in the output folder

    with pytest.raises(MissingAssetError) as e:
        inception_weights(download=False)
    assert_one_line(e.value, INCEPTION_FILE, "evaluate.inception_weights", "download disabled")

    missing = caches["out"] / "weights" / INCEPTION_FILE
    with pytest.raises(MissingAssetError) as e:
        inception_weights(missing)  # an explicit path never falls back to the cache or a download
    assert_one_line(e.value, str(missing), "evaluate.inception_weights", downloads_helper.inception_url)
    assert listing(*caches.values()) == []


def test_reference_stats_offline_raises_one_line(offline, caches):
    with pytest.raises(MissingAssetError) as e:
        reference_stats("cifar10")
    assert_one_line(e.value, STATS_FILE, "evaluate.fid_ref", str(caches["stats"]), "failed")
    assert listing(*caches.values()) == []

    missing = caches["out"] / "cifar10-32x32.npz"
    with pytest.raises(MissingAssetError) as e:
        reference_stats(path=missing)
    assert_one_line(e.value, str(missing), "evaluate.fid_ref")
    assert listing(*caches.values()) == []

    with pytest.raises(ValueError, match="unknown reference"):
        reference_stats("imagenet")


class FakeResponse(io.BytesIO):
    """urlopen() result: ``data`` then, if ``fail``, a connection reset mid-transfer."""

    def __init__(self, data: bytes, fail: bool):
        super().__init__(data)
        self.fail = fail

    def read(self, n=-1):
        chunk = super().read(n)
        if not chunk and self.fail:
            raise ConnectionResetError("connection reset mid-transfer")
        return chunk


def test_downloads_use_cleanfid_urls_and_are_atomic(offline, caches, monkeypatch, pinned):
    """clean-fid's own download functions run; an interrupted transfer leaves no file, a whole one lands (the
    Inception file checked to be the official one, what verify_inception accepts)."""
    fake_weights = pinned
    torchscript = fake_weights.read_bytes()
    buf = io.BytesIO()
    np.savez(buf, mu=np.zeros(3), sigma=np.eye(3))
    urls, state = [], {"fail": True}

    def fake_urlopen(url, *args, **kwargs):
        urls.append(url)
        return FakeResponse(buf.getvalue() if url.endswith(".npz") else torchscript, state["fail"])

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    for call, word in ((inception_weights, INCEPTION_FILE), (reference_stats, STATS_FILE)):
        with pytest.raises(MissingAssetError) as e:
            call()
        assert_one_line(e.value, word, "ConnectionResetError")
    assert listing(*caches.values()) == []

    state["fail"] = False
    assert inception_weights() == caches["inception"] / INCEPTION_FILE
    assert (caches["inception"] / INCEPTION_FILE).read_bytes() == torchscript
    mu, sigma = reference_stats()
    np.testing.assert_array_equal(sigma, np.eye(3))
    assert listing(caches["inception"], caches["stats"]) == [str(caches["inception"] / INCEPTION_FILE),
                                                             str(caches["stats"] / STATS_FILE)]
    assert fid.verify_inception(caches["inception"] / INCEPTION_FILE) == sha256(torchscript)
    assert urls[0] == downloads_helper.inception_url
    assert urls[1] == fid.cleanfid_stats_url("cifar10", 32, "train")

    # Present in the cache: no further download.
    n = len(urls)
    inception_weights(), reference_stats()
    assert len(urls) == n


def test_stats_url_is_the_one_cleanfid_requests(monkeypatch):
    features = pytest.importorskip("cleanfid.features")
    seen = []

    def capture(local_folder, url):
        seen.append(url)
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(features, "check_download_url", capture)
    with pytest.raises(urllib.error.URLError):
        features.get_reference_statistics("cifar10", 32, mode="legacy_tensorflow", split="train")
    assert seen == [fid.cleanfid_stats_url("cifar10", 32, "train")]
    assert seen[0].endswith("/" + STATS_FILE)


def test_reference_stats_reads_cleanfid_and_edm_npz(tmp_path):
    rng = np.random.default_rng(0)
    mu = rng.standard_normal(5)
    A = rng.standard_normal((5, 5))
    sigma = A @ A.T
    # clean-fid's make_custom_stats: np.savez_compressed(mu=, sigma=); EDM's fid.py ref: np.savez(mu, sigma).
    np.savez_compressed(tmp_path / "custom_legacy_tensorflow_custom_na.npz", mu=mu, sigma=sigma)
    np.savez(tmp_path / "cifar10-32x32.npz", mu=mu.astype(np.float32), sigma=sigma.astype(np.float32))
    for name, tol in (("custom_legacy_tensorflow_custom_na.npz", 0), ("cifar10-32x32.npz", 1e-6)):
        m, s = reference_stats(path=tmp_path / name)
        assert m.dtype == s.dtype == np.float64
        np.testing.assert_allclose(m, mu, rtol=tol, atol=tol)
        np.testing.assert_allclose(s, sigma, rtol=tol, atol=tol)

    np.savez(tmp_path / "bad.npz", mu=mu)
    with pytest.raises(ValueError) as e:
        reference_stats(path=tmp_path / "bad.npz")
    assert_one_line(e.value, "bad.npz", "evaluate.fid_ref")
    np.savez(tmp_path / "shape.npz", mu=mu, sigma=sigma[:4])
    with pytest.raises(ValueError, match="shape.npz"):
        reference_stats(path=tmp_path / "shape.npz")


# ----------------------------------------------------------------------------
# Feature path with a fake TorchScript Inception.


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def fake_weights(tmp_path_factory):
    """A stand-in TorchScript Inception (same interface as the official file, other bytes)."""
    return write_fake_inception(tmp_path_factory.mktemp("weights") / INCEPTION_FILE)


@pytest.fixture
def pinned(monkeypatch, fake_weights):
    """The stand-in plays the official file: its size and sha256 are pinned in place of the real file's."""
    monkeypatch.setattr(fid, "INCEPTION_SHA256", sha256(fake_weights.read_bytes()))
    monkeypatch.setattr(fid, "INCEPTION_BYTES", fake_weights.stat().st_size)
    return fake_weights


@pytest.fixture
def no_download(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("no download expected")

    monkeypatch.setattr(downloads_helper, "check_download_inception", refuse)
    monkeypatch.setattr(downloads_helper, "check_download_url", refuse)


def test_inception_features_from_local_file(pinned, offline, no_download, caches):
    fake_weights = pinned
    assert inception_weights(fake_weights) == fake_weights
    assert inception_weights(fake_weights.parent) == fake_weights  # a folder holding the file
    feats = InceptionFeatures(inception_weights(fake_weights), device="cpu", batch_size=3)

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (7, 3, 32, 32), dtype=np.uint8)
    out = feats(rgb)
    assert out.shape == (7, 2048) and out.dtype == np.float64
    np.testing.assert_allclose(out[:, :3], rgb.astype(np.float64).mean(axis=(2, 3)), rtol=1e-6)  # [0, 255]
    np.testing.assert_array_equal(out[:, 3:5], 32)  # native 32x32: the TorchScript model resizes
    np.testing.assert_array_equal(InceptionFeatures(fake_weights, batch_size=7)(rgb), out)  # batching

    gray = rgb[:, :1]
    np.testing.assert_array_equal(feats(gray), feats(np.repeat(gray, 3, axis=1)))
    assert listing(*caches.values()) == []

    with pytest.raises(ValueError, match="uint8"):
        feats(rgb.astype(np.float32))
    with pytest.raises(ValueError, match="uint8"):
        feats(rgb[:, :2])


@pytest.mark.filterwarnings(r"ignore:.*torch\.jit\.load.* is deprecated:FutureWarning")
def test_inception_features_match_cleanfid_pipeline(pinned, tmp_path):
    """Same numbers as clean-fid's own legacy_tensorflow path: PNG -> ResizeDataset -> InceptionV3W."""
    fake_weights = pinned
    cleanfid_fid = pytest.importorskip("cleanfid.fid")
    from cleanfid.inception_torchscript import InceptionV3W
    from PIL import Image

    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (5, 3, 32, 32), dtype=np.uint8)
    gray = rng.integers(0, 256, (3, 1, 32, 32), dtype=np.uint8)
    files = []
    for i, img in enumerate(images):
        files.append(tmp_path / f"rgb{i}.png")
        Image.fromarray(img.transpose(1, 2, 0)).save(files[-1])
    for i, img in enumerate(gray):
        files.append(tmp_path / f"gray{i}.png")
        Image.fromarray(img[0], mode="L").save(files[-1])  # clean-fid converts to RGB

    model = InceptionV3W(str(fake_weights.parent), download=False, resize_inside=True).eval()
    ref = cleanfid_fid.get_files_features(
        files, model, num_workers=0, batch_size=4, device=torch.device("cpu"), mode="legacy_tensorflow",
        verbose=False,
    )
    feats = InceptionFeatures(fake_weights)
    np.testing.assert_array_equal(np.concatenate([feats(images), feats(gray)]), ref.astype(np.float64))


def test_inception_features_rejects_bad_weights(tmp_path):
    bad = tmp_path / INCEPTION_FILE
    bad.write_bytes(b"not a torchscript archive")
    with pytest.raises(ValueError) as e:
        InceptionFeatures(bad, sha256=sha256(bad.read_bytes()))  # trusted, but not TorchScript
    assert_one_line(e.value, str(bad), "evaluate.inception_weights")
    with pytest.raises(MissingAssetError) as e:
        InceptionFeatures(tmp_path / "absent.pt")
    assert_one_line(e.value, "absent.pt", "evaluate.inception_weights")


def test_inception_file_is_hashed_before_anything_loads_it(tmp_path, fake_weights, monkeypatch):
    """torch.jit.load runs the file's code: a file is loaded only with the sha256 the user trusts
    (evaluate.inception_sha256) or the official file's (INCEPTION_SHA256); else one line with the file's sha256, and
    nothing is loaded."""
    import shutil

    loads = []
    real_load = torch.jit.load
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    digest = sha256(fake_weights.read_bytes())
    mine = tmp_path / "my-inception.pt"  # a file of the user's, not the official one
    shutil.copy(fake_weights, mine)

    with pytest.raises(ValueError) as e:
        InceptionFeatures(mine)
    assert_one_line(e.value, str(mine), "not loaded", f"evaluate.inception_sha256: {digest}",
                    f"is not the official {INCEPTION_FILE}'s ({fid.INCEPTION_SHA256})")
    with pytest.raises(ValueError) as e:
        InceptionFeatures(mine, sha256="0" * 64)
    assert_one_line(e.value, str(mine), f"sha256 {digest} is not evaluate.inception_sha256 ({'0' * 64})")
    assert loads == []
    assert InceptionFeatures(mine, sha256=digest.upper()).sha256 == digest and len(loads) == 1

    # The official file needs no trusted sha256 (the stand-in plays it); a changed copy of it is refused.
    monkeypatch.setattr(fid, "INCEPTION_SHA256", digest)
    fetched = tmp_path / "resources" / INCEPTION_FILE
    fetched.parent.mkdir()
    shutil.copy(fake_weights, fetched)
    assert InceptionFeatures(fetched).sha256 == digest and len(loads) == 2
    fetched.write_bytes(fetched.read_bytes() + b"tampered")
    with pytest.raises(ValueError) as e:
        InceptionFeatures(fetched)
    assert_one_line(e.value, str(fetched), f"is not the official {INCEPTION_FILE}'s ({digest})",
                    "snakemake -R fetch_inception")
    assert len(loads) == 2


# ----------------------------------------------------------------------------
# FID.


def flat_features(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), -1).astype(np.float64)


def test_fid_from_features_is_frechet_of_gaussian_stats():
    rng = np.random.default_rng(0)
    feats, ref = rng.standard_normal((40, 6)), rng.standard_normal((60, 6)) + 0.3
    mu_ref, sigma_ref = gaussian_stats(ref)
    expect = frechet_distance(*gaussian_stats(feats), mu_ref, sigma_ref)
    assert fid_from_features(feats, mu_ref, sigma_ref) == expect
    images = rng.integers(0, 256, (30, 1, 2, 3), dtype=np.uint8)
    mu, sigma = dataset_stats(images, flat_features)
    mu2, sigma2 = gaussian_stats(flat_features(images))
    np.testing.assert_array_equal(mu, mu2)
    np.testing.assert_array_equal(sigma, sigma2)


def make_blocks(rng, block: int, shift: int = 0):
    """3 blocks of seeds 100.., 100+block.., 100+2*block..; blocks 0 and 1 hold identical images."""
    base = rng.integers(20, 200, (block, 1, 2, 3)).astype(np.uint8)
    third = rng.integers(20, 200, (block, 1, 2, 3)).astype(np.uint8) + np.uint8(shift)
    images = np.concatenate([base, base, third])
    seeds = 100 + np.arange(3 * block)
    perm = rng.permutation(3 * block)  # the sample shards come in any order
    return images[perm], seeds[perm]


def test_fid_blocks_split_by_seed():
    rng = np.random.default_rng(0)
    block = 20
    images, seeds = make_blocks(rng, block)
    mu_ref, sigma_ref = gaussian_stats(flat_features(rng.integers(20, 200, (200, 1, 2, 3)).astype(np.uint8)))
    seen = []

    def recording(imgs):
        seen.append(imgs)
        return flat_features(imgs)

    out = fid_blocks(images, seeds, recording, mu_ref, sigma_ref, block=block)
    assert set(out) == {"fid_min", "fid_mean", "fid_blocks", "block_seeds"}
    assert len(out["fid_blocks"]) == 3
    assert out["block_seeds"] == [[100, 119], [120, 139], [140, 159]]
    for b, imgs in enumerate(seen):  # each block holds exactly its seed range, in seed order
        expect = images[np.argsort(seeds)][b * block : (b + 1) * block]
        np.testing.assert_array_equal(imgs, expect)
    assert out["fid_blocks"][0] == out["fid_blocks"][1]  # identical blocks -> identical FIDs
    assert out["fid_min"] == min(out["fid_blocks"]) <= out["fid_mean"]
    assert out["fid_mean"] == pytest.approx(np.mean(out["fid_blocks"]))
    assert all(isinstance(v, float) for v in [out["fid_min"], out["fid_mean"], *out["fid_blocks"]])


def test_fid_blocks_shifted_block_scores_worse():
    rng = np.random.default_rng(1)
    block = 25
    ref = rng.integers(20, 200, (500, 1, 2, 3)).astype(np.uint8)
    mu_ref, sigma_ref = gaussian_stats(flat_features(ref))
    images, seeds = make_blocks(rng, block, shift=40)
    out = fid_blocks(images, seeds, flat_features, mu_ref, sigma_ref, block=block)
    assert out["fid_blocks"][2] > max(out["fid_blocks"][:2])
    assert out["fid_min"] == out["fid_blocks"][0] < out["fid_mean"]


def test_fid_blocks_rejects_bad_counts():
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (25, 1, 2, 3), dtype=np.uint8)
    mu, sigma = np.zeros(6), np.eye(6)
    with pytest.raises(ValueError) as e:
        fid_blocks(images, np.arange(25), flat_features, mu, sigma, block=10)
    assert_one_line(e.value, "25 images", "block=10", "remainder 5", "evaluate.fid_block")
    with pytest.raises(ValueError, match="not distinct"):
        fid_blocks(images[:20], np.arange(20) % 15, flat_features, mu, sigma, block=10)
    with pytest.raises(ValueError, match="seeds must have shape"):
        fid_blocks(images[:20], np.arange(10), flat_features, mu, sigma, block=10)
    out = fid_blocks(images[:20], np.arange(20), flat_features, mu, sigma, block=10)
    assert len(out["fid_blocks"]) == 2 == int(np.ceil(20 / 10))


def test_the_official_inception_file_is_pinned():
    """The digest k-diffusion pins for inception-2015-12-05.pt at the same URL, and that file's size."""
    assert fid.INCEPTION_SHA256 == "f58cb9b6ec323ed63459aa4fb441fe750cfe39fafad6da5cb504a16f19e958f4"
    assert fid.INCEPTION_BYTES == 95_607_719
    assert downloads_helper.inception_url == (
        "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt")


@pytest.fixture
def serve(monkeypatch):
    """clean-fid's download writes the given file (bytes, or a size for a sparse file of zeros); returns the calls."""
    calls, content = [], {}

    def fake_download(folder):
        calls.append(folder)
        dest = Path(folder) / INCEPTION_FILE
        data = content["data"]
        if isinstance(data, int):
            with open(dest, "wb") as f:
                f.truncate(data)
        else:
            dest.write_bytes(data)
        return str(dest)

    monkeypatch.setattr(downloads_helper, "check_download_inception", fake_download)
    return lambda data: content.update(data=data) or calls


def test_fetch_inception_refuses_a_file_that_is_not_the_official_one(offline, tmp_path, serve, fake_weights):
    """With the real pin: a download of another file (wrong size; right size, wrong sha256) stops with one line
    giving the expected and the found size and sha256, the URL and the path, and never lands; a wrong file already
    at the path is refused and kept; nothing else is written."""
    url = downloads_helper.inception_url
    out = tmp_path / "resources" / INCEPTION_FILE
    expected = f"expected 95,607,719 bytes, sha256 {fid.INCEPTION_SHA256}"
    for data, got in ((fake_weights.read_bytes(), f"got {fake_weights.stat().st_size:,} bytes ("),
                      (95_607_719, f"got 95,607,719 bytes, sha256 {hashlib.sha256(bytes(95_607_719)).hexdigest()}")):
        calls = serve(data)
        with pytest.raises(fid.AssetMismatchError) as e:
            fid.fetch_inception(out)
        assert_one_line(e.value, str(out), f"not the official {INCEPTION_FILE}", expected, got,
                        f"downloaded from {url}", "evaluate.inception_sha256")
        assert listing(tmp_path) == [str(out.parent)] and len(calls) >= 1  # no file, no temporary folder

    out.write_bytes(fake_weights.read_bytes())  # put there by hand
    calls = serve(b"never downloaded")
    n = len(calls)
    with pytest.raises(fid.AssetMismatchError) as e:
        fid.fetch_inception(out)
    assert_one_line(e.value, str(out), expected, f"got {fake_weights.stat().st_size:,} bytes",
                    "snakemake -R fetch_inception", url)
    assert out.read_bytes() == fake_weights.read_bytes() and listing(tmp_path) == [str(out.parent), str(out)]
    assert len(calls) == n  # a file in place is never replaced by a download

    from aot.__main__ import main

    assert main(["fetch-inception", "--out", str(out)]) == 2  # the CLI prints the line (exit 2)


def test_clean_fid_cache_download_is_checked_too(offline, caches, serve, fake_weights):
    serve(fake_weights.read_bytes())
    with pytest.raises(fid.AssetMismatchError) as e:
        inception_weights()
    assert_one_line(e.value, str(caches["inception"] / INCEPTION_FILE), f"sha256 {fid.INCEPTION_SHA256}")
    assert listing(*caches.values()) == []


def test_fetch_inception_downloads_the_official_file(offline, tmp_path, monkeypatch, serve, pinned):
    """Rule fetch_inception's stage: clean-fid's download into the given path (atomic) once checked; a file already
    there is checked and kept; offline, one line and exit 2."""
    from aot.__main__ import main

    calls = serve(pinned.read_bytes())
    out = tmp_path / "resources" / INCEPTION_FILE
    info = fid.fetch_inception(out)
    digest = hashlib.sha256(pinned.read_bytes()).hexdigest()
    assert info == dict(path=str(out), sha256=digest, url=downloads_helper.inception_url,
                        bytes=pinned.stat().st_size, downloaded=True)
    assert out.read_bytes() == pinned.read_bytes() and len(calls) == 1
    assert listing(tmp_path) == [str(out.parent), str(out)]
    assert fid.fetch_inception(out) == dict(info, downloaded=False) and len(calls) == 1  # present: kept
    assert fid.verify_inception(out) == digest  # loadable without evaluate.inception_sha256

    def offline_download(folder):
        raise OSError("offline")

    monkeypatch.setattr(downloads_helper, "check_download_inception", offline_download)
    assert main(["fetch-inception", "--out", str(tmp_path / "new" / INCEPTION_FILE)]) == 2
