"""Inception FID comparable with the paper (docs/method.md §4), built on clean-fid's ``legacy_tensorflow`` mode.

The detector is NVIDIA's TorchScript port of TF Inception-v3, ``inception-2015-12-05.pt``, called by
clean-fid's ``InceptionV3W`` with ``resize_inside=True``: images go in as float32 in [0, 255] at their native
size (32x32) and the TorchScript model does the TF-compatible resize to 299x299 itself. The reference is
clean-fid's precomputed ``cifar10_legacy_tensorflow_train_32.npz`` (50k training images), or any local npz
with ``mu``/``sigma`` (clean-fid's stats or EDM's ``fid-refs/cifar10-32x32.npz``), or statistics of the
prepared dataset.

Assets are looked up, never silently replaced, and a missing one raises :class:`MissingAssetError` with one
line that names the file, where it was looked for and the config key that points to it. Downloads use
clean-fid's own functions into a temporary folder next to clean-fid's cache and are renamed into place, so an
interrupted download never leaves a half file. The Frechet distance itself is :mod:`aot.eval.metrics`.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch

from aot.eval.metrics import frechet_distance, gaussian_stats, load_stats

INCEPTION_FILE = "inception-2015-12-05.pt"
# Where clean-fid caches its downloads (cleanfid/features.py: feature_extractor, get_reference_statistics);
# module attributes, so tests and offline clusters can point them elsewhere.
INCEPTION_CACHE_DIR = Path("./" if os.name == "nt" else "/tmp")
CLEANFID_STATS_DIR = None  # None = <cleanfid package>/stats, clean-fid's own cache
CLEANFID_STATS_BASE_URL = "https://www.cs.cmu.edu/~clean-fid/stats/"  # as in get_reference_statistics
# Built-in references: name -> clean-fid (dataset_name, dataset_res, dataset_split) in legacy_tensorflow mode.
CLEANFID_REFERENCES = {"cifar10": ("cifar10", 32, "train")}
EDM_CIFAR10_REF_URL = "https://nvlabs-fi-cdn.nvidia.com/edm/fid-refs/cifar10-32x32.npz"
# The official inception-2015-12-05.pt, from NVIDIA's StyleGAN2-ADA metrics folder (the URL clean-fid downloads):
# k-diffusion pins the same file at the same URL with this sha256 (crowsonkb/k-diffusion, k_diffusion/evaluation.py,
# InceptionV3FeatureExtractor); 95,607,719 bytes is that file's size. fetch_inception refuses any other file, and
# verify_inception loads a file with this digest without further trust (evaluate.inception_sha256 is for others).
INCEPTION_SHA256 = "f58cb9b6ec323ed63459aa4fb441fe750cfe39fafad6da5cb504a16f19e958f4"
INCEPTION_BYTES = 95_607_719


class MissingAssetError(FileNotFoundError):
    """An Inception weights file or reference statistics file is absent; the message is one line."""

    def __init__(self, message: str):
        super().__init__(_one_line(message))


class AssetMismatchError(ValueError):
    """A downloaded or present Inception file is not the official one (size or sha256); the message is one line."""

    def __init__(self, message: str):
        super().__init__(_one_line(message))


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _inception_url() -> str:
    from cleanfid import downloads_helper

    return downloads_helper.inception_url


# ----------------------------------------------------------------------------
# Assets: Inception weights and reference statistics.


def _download_into(dest: Path, fetch: Callable[[str], str], check: Callable[[Path], object] | None = None) -> None:
    """Run clean-fid's ``fetch(folder) -> path`` in a temporary folder beside ``dest``; rename into place.

    ``check(path)`` runs on the downloaded file first: when it raises, nothing lands at ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{dest.name}.", dir=dest.parent) as tmp:
        got = Path(fetch(tmp))
        if not got.is_file() or got.stat().st_size == 0:
            raise OSError(f"download produced no data at {got}")
        if check is not None:
            check(got)
        os.replace(got, dest)


def _cached_or_download(dest: Path, fetch: Callable[[str], str], download: bool,
                        check: Callable[[Path], object] | None = None) -> str | None:
    """None if ``dest`` is usable (present, or downloaded now); otherwise why not, for the error message. A download
    that ``check`` refuses raises its :class:`AssetMismatchError`."""
    if dest.is_file() and dest.stat().st_size > 0:
        return None
    if not download:
        return "(download disabled)" if not dest.exists() else "(empty or not a file; download disabled)"
    try:
        _download_into(dest, fetch, check)
    except AssetMismatchError:
        raise
    except Exception as e:  # offline, HTTP error, read-only cache, interrupted transfer
        return f"and its download failed ({type(e).__name__}: {e})"
    return None


def check_official_inception(path: str | os.PathLike, *, dest: str | os.PathLike | None = None,
                             downloaded: bool = False) -> str:
    """Return the sha256 of ``path`` if it is the official ``inception-2015-12-05.pt`` (:data:`INCEPTION_BYTES`
    bytes, sha256 :data:`INCEPTION_SHA256`), else raise :class:`AssetMismatchError`: one line with the expected and
    the found size and sha256, the URL and the path (``dest``: where the file was meant to go, for a download still
    in its temporary folder). Nothing is loaded: loading TorchScript runs code from the file."""
    from aot.core.download import sha256_file

    path = Path(path)
    size = path.stat().st_size
    digest = sha256_file(path) if size == INCEPTION_BYTES else None  # a wrong size is not worth hashing
    if digest == INCEPTION_SHA256:
        return digest
    got = f"{size:,} bytes" + (f", sha256 {digest}" if digest else "")
    if downloaded:
        how = f"downloaded from {_inception_url()}; nothing was written there: retry, or fetch it by hand"
    else:
        how = (f"the file at that path; delete it and rerun (snakemake -R fetch_inception) to download "
               f"{_inception_url()} again")
    raise AssetMismatchError(
        f"{dest or path}: not the official {INCEPTION_FILE}: expected {INCEPTION_BYTES:,} bytes, sha256 "
        f"{INCEPTION_SHA256}; got {got} ({how}); a file of your own goes in evaluate.inception_weights with its "
        f"sha256 in evaluate.inception_sha256")


def inception_weights(path: str | os.PathLike | None = None, *, download: bool = True) -> Path:
    """Path of ``inception-2015-12-05.pt``: ``path`` (``evaluate.inception_weights``) or clean-fid's cache.

    ``path`` may be the file or a folder holding it; a missing explicit path is an error (no fallback). With
    no path, clean-fid's cache (``/tmp/inception-2015-12-05.pt``) is used, and if absent and ``download`` is
    true the file is fetched with clean-fid's ``check_download_inception``, checked to be the official file
    (:func:`check_official_inception`) and renamed into the cache.
    """
    url = _inception_url()
    if path is not None:
        p = Path(path)
        p = p / INCEPTION_FILE if p.is_dir() else p
        if p.is_file() and p.stat().st_size > 0:
            return p
        raise MissingAssetError(
            f"{INCEPTION_FILE} not found: looked at {p} (config evaluate.inception_weights); "
            f"download {url} to that path, or set evaluate.inception_weights to null to use clean-fid's cache"
        )
    from cleanfid import downloads_helper

    dest = Path(INCEPTION_CACHE_DIR) / INCEPTION_FILE
    why = _cached_or_download(dest, downloads_helper.check_download_inception, download,
                              partial(check_official_inception, dest=dest, downloaded=True))
    if why is not None:
        raise MissingAssetError(
            f"{INCEPTION_FILE} not found: looked in clean-fid's cache {dest} {why}; download {url} there, "
            f"or set evaluate.inception_weights to a local copy"
        )
    return dest


def fetch_inception(out: str | os.PathLike) -> dict:
    """Download the official ``inception-2015-12-05.pt`` from clean-fid's URL to ``out`` (the workflow's
    ``resources/``, on the submitting machine) unless a file is already there, and check that it is that file
    (:func:`check_official_inception`: a download that is not never lands at ``out``, a file already there that is
    not is refused and kept); return ``{path, sha256, url, bytes, downloaded}``."""
    from cleanfid import downloads_helper

    out, url = Path(out), _inception_url()
    downloaded = not (out.is_file() and out.stat().st_size > 0)
    if downloaded:
        why = _cached_or_download(out, downloads_helper.check_download_inception, True,
                                  partial(check_official_inception, dest=out, downloaded=True))
        if why is not None:
            raise MissingAssetError(f"{INCEPTION_FILE} could not be fetched to {out} {why}; download {url} there "
                                    f"by hand, or set evaluate.inception_weights to a local copy")
        digest = INCEPTION_SHA256  # what the check of the download found
    else:
        digest = check_official_inception(out)
    return dict(path=str(out), sha256=digest, url=url, bytes=out.stat().st_size, downloaded=downloaded)


def cleanfid_stats_url(name: str, res: int, split: str, mode: str = "legacy_tensorflow") -> str:
    """The URL that clean-fid's ``get_reference_statistics(name, res, mode, split=split)`` downloads."""
    return f"{CLEANFID_STATS_BASE_URL}/{f'{name}_{mode}_{split}_{res}.npz'.lower()}"


def _cleanfid_stats_dir() -> Path:
    if CLEANFID_STATS_DIR is not None:
        return Path(CLEANFID_STATS_DIR)
    import cleanfid

    return Path(cleanfid.__file__).parent / "stats"


def _read_stats(path: Path, key_hint: str) -> tuple[np.ndarray, np.ndarray]:
    from aot.core.artifacts import ArtifactError

    try:
        mu, sigma, _ = load_stats(path)
    except ArtifactError as e:  # already one line naming the file; add which key points at it
        raise ValueError(_one_line(f"{e}; {key_hint}")) from None
    except Exception as e:  # missing key, not a zip, truncated, pickled object arrays
        raise ValueError(
            _one_line(f"{path}: not an npz with mu and sigma ({type(e).__name__}: {e}); {key_hint}")
        ) from None
    finite = np.isfinite(mu).all() and np.isfinite(sigma).all()
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]) or not finite:
        raise ValueError(f"{path}: expected finite mu (D,), sigma (D, D); got {mu.shape}, {sigma.shape}")
    return mu, sigma


def reference_stats(
    name: str = "cifar10", *, path: str | os.PathLike | None = None, download: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Inception reference (mu, sigma): a local npz ``path``, else clean-fid's legacy_tensorflow statistics.

    ``path`` (config ``evaluate.fid_ref``) holds ``mu`` (2048,) and ``sigma`` (2048, 2048): clean-fid's stats
    or EDM's ``fid-refs`` npz. Without it, ``name`` picks clean-fid's precomputed statistics (``cifar10``:
    ``cifar10_legacy_tensorflow_train_32.npz``, the 50k training images) from clean-fid's cache, downloaded
    with clean-fid's ``check_download_url`` if absent and ``download`` is true.
    """
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise MissingAssetError(
                f"reference statistics {p.name} not found: looked at {p} (config evaluate.fid_ref); put an "
                f"npz with mu/sigma there (clean-fid's stats, or EDM's {EDM_CIFAR10_REF_URL}) or set "
                f"evaluate.fid_ref to {' or '.join(CLEANFID_REFERENCES)} or dataset"
            )
        return _read_stats(p, "evaluate.fid_ref must point to clean-fid or EDM reference statistics")
    if name not in CLEANFID_REFERENCES:
        raise ValueError(f"unknown reference {name!r}: built-in {sorted(CLEANFID_REFERENCES)}, or pass path=")
    from cleanfid import downloads_helper

    url = cleanfid_stats_url(*CLEANFID_REFERENCES[name])
    fname = url.rsplit("/", 1)[1]
    dest = _cleanfid_stats_dir() / fname
    why = _cached_or_download(dest, partial(downloads_helper.check_download_url, url=url), download)
    if why is not None:
        raise MissingAssetError(
            f"{fname} not found: looked in clean-fid's cache {dest} {why}; download {url} there, or set "
            f"evaluate.fid_ref to a local npz with mu/sigma"
        )
    return _read_stats(dest, f"delete it so clean-fid downloads it again from {url}")


# ----------------------------------------------------------------------------
# Features.


def _load_inception(weights: Path, device: str) -> torch.nn.Module:
    """clean-fid's ``InceptionV3W`` in legacy_tensorflow mode (``resize_inside=True``), read from ``weights``.

    ``InceptionV3W.__init__`` only takes a folder and a fixed file name (``torch.jit.load(<folder>/<name>)``);
    this does the same load from any file, with ``map_location``, and keeps clean-fid's ``forward``:
    ``self.base(x, return_features=True).view((bs, 2048))``.
    """
    from cleanfid.inception_torchscript import InceptionV3W

    try:
        with warnings.catch_warnings():  # recent torch deprecates TorchScript; the weights exist only as .pt
            warnings.filterwarnings("ignore", r".*torch\.jit\.load.* is deprecated", FutureWarning)
            base = torch.jit.load(str(weights), map_location=device).eval()
        layers = base.layers
    except Exception as e:  # not TorchScript, truncated, or another network
        raise ValueError(
            _one_line(f"{weights}: not the TorchScript Inception {INCEPTION_FILE} ({type(e).__name__}: {e}); "
                      f"replace it with {_inception_url()} (config evaluate.inception_weights)")
        ) from None
    model = InceptionV3W.__new__(InceptionV3W)
    torch.nn.Module.__init__(model)
    model.base, model.layers, model.resize_inside = base, layers, True
    return model.eval().requires_grad_(False)


def verify_inception(weights: str | os.PathLike, sha256: str | None = None) -> str:
    """Check ``weights`` before anything loads it (``torch.jit.load`` runs the TorchScript code in the file); return
    its sha256.

    Accepted: a file whose sha256 is ``sha256`` (config ``evaluate.inception_sha256``, the explicit trust of a file
    you provide), or, without it, the official file (sha256 :data:`INCEPTION_SHA256`, what :func:`fetch_inception`
    downloads). Anything else is refused with one line that names the file and gives its sha256 to put in the
    config once you trust it.
    """
    from aot.core.download import sha256_file

    weights = Path(weights)
    digest = sha256_file(weights)
    if sha256:
        if digest != sha256.lower():
            raise ValueError(_one_line(
                f"{weights}: sha256 {digest} is not evaluate.inception_sha256 ({sha256}); the file is not the one "
                f"you trusted: put that file back, or set evaluate.inception_sha256 to {digest} if you trust this one"))
        return digest
    if digest == INCEPTION_SHA256:
        return digest
    raise ValueError(_one_line(
        f"{weights}: sha256 {digest} is not the official {INCEPTION_FILE}'s ({INCEPTION_SHA256}) and no "
        f"evaluate.inception_sha256 is set; loading TorchScript runs code from the file, so it is not loaded: if you "
        f"trust it, set evaluate.inception_sha256: {digest}, or replace it with {_inception_url()} (evaluate."
        f"inception_weights: null downloads it; snakemake -R fetch_inception)"))


class InceptionFeatures:
    """2048-d pool features of TF Inception-v3, computed as clean-fid's ``legacy_tensorflow`` mode does.

    Parameters
    ----------
    weights : Path
        A local ``inception-2015-12-05.pt`` (see :func:`inception_weights`); nothing is downloaded here.
    device : str
        Torch device for the network; features always come back on the CPU.
    batch_size : int
        Images per forward pass (results do not depend on it beyond float rounding).
    sha256 : str, optional
        The trusted sha256 of ``weights`` (config ``evaluate.inception_sha256``); see :func:`verify_inception`,
        which runs before the file is loaded.
    """

    def __init__(self, weights: str | os.PathLike, device: str = "cpu", batch_size: int = 200,
                 sha256: str | None = None):
        weights = Path(weights)
        if not weights.is_file():
            raise MissingAssetError(
                f"{INCEPTION_FILE} not found: looked at {weights} (config evaluate.inception_weights); "
                f"download {_inception_url()} there"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.weights, self.device, self.batch_size = weights, torch.device(device), batch_size
        self.sha256 = verify_inception(weights, sha256)
        self.model = _load_inception(weights, device)

    def __call__(self, images_uint8_nchw: np.ndarray) -> np.ndarray:
        """Features of uint8 images.

        Parameters
        ----------
        images_uint8_nchw : ndarray, shape (N, C, H, W), uint8, C in {1, 3}
            Native resolution; grayscale is repeated to 3 channels (PIL ``convert('RGB')`` in clean-fid).

        Returns
        -------
        ndarray, shape (N, 2048), float64
        """
        x = np.asarray(images_uint8_nchw)
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1] not in (1, 3) or x.shape[0] == 0:
            raise ValueError(f"expected uint8 images (N >= 1, C in {{1, 3}}, H, W), got {x.dtype} {x.shape}")
        feats = []
        with torch.no_grad():
            for i in range(0, x.shape[0], self.batch_size):
                batch = torch.from_numpy(x[i : i + self.batch_size]).to(self.device)
                batch = batch.expand(-1, 3, -1, -1) if batch.shape[1] == 1 else batch  # (B, 3, H, W)
                # clean-fid: ToTensor()(uint8 HWC) * 255 -> float32 in [0, 255] (exact for every uint8 value);
                # the legacy_tensorflow resizer is the identity, the TorchScript model resizes inside.
                batch = batch.to(torch.float32).contiguous()
                # clean-fid's get_batch_features: model(batch) under no_grad -> (B, 2048) float32.
                feats.append(self.model(batch).cpu().numpy())
        return np.concatenate(feats).astype(np.float64)


# ----------------------------------------------------------------------------
# FID.


def dataset_stats(
    images_uint8_nchw: np.ndarray, features: Callable[[np.ndarray], np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Reference (mu, sigma) of a prepared image set, e.g. the 50k training images (store with save_stats)."""
    return gaussian_stats(features(images_uint8_nchw))


def fid_from_features(feats: np.ndarray, mu_ref: np.ndarray, sigma_ref: np.ndarray) -> float:
    """FID of one feature set against reference statistics (docs/method.md §4; aot.eval.metrics.frechet_distance)."""
    mu, sigma = gaussian_stats(feats)
    return frechet_distance(mu, sigma, mu_ref, sigma_ref)


def fid_blocks(
    images: np.ndarray,
    seeds: np.ndarray,
    features: Callable[[np.ndarray], np.ndarray],
    mu_ref: np.ndarray,
    sigma_ref: np.ndarray,
    *,
    block: int = 50000,
) -> dict:
    """FID per disjoint block of ``block`` images taken in seed order; min and mean over blocks.

    EDM/AOT: three runs of 50k images (seeds 0-49999, 50000-99999, 100000-149999), report the minimum.

    Parameters
    ----------
    images : ndarray, shape (N, C, H, W), uint8
    seeds : ndarray, shape (N,), int
        One distinct seed per image; N must be a multiple of ``block``.
    features : callable
        images -> (n, D) features, e.g. :class:`InceptionFeatures`.

    Returns
    -------
    dict
        ``fid_min``, ``fid_mean``, ``fid_blocks`` (one per block, in seed order) and ``block_seeds``
        ([lowest, highest] seed of each block, inclusive).
    """
    seeds = np.asarray(seeds)
    N = len(images)
    if seeds.shape != (N,):
        raise ValueError(f"seeds must have shape ({N},) like the images, got {seeds.shape}")
    if block < 2:
        raise ValueError(f"block must be >= 2, got {block}")
    if N == 0 or N % block != 0:
        raise ValueError(
            f"{N} images is not a multiple of block={block} (remainder {N % block}); "
            f"generate {block - N % block} more or change evaluate.fid_block"
        )
    if len(np.unique(seeds)) != N:
        raise ValueError("seeds are not distinct: the blocks would not be disjoint")
    order = np.argsort(seeds, kind="stable")
    fids, block_seeds = [], []
    for b in range(N // block):
        idx = order[b * block : (b + 1) * block]
        fids.append(fid_from_features(features(images[idx]), mu_ref, sigma_ref))
        block_seeds.append([int(seeds[idx[0]]), int(seeds[idx[-1]])])
    return dict(fid_min=min(fids), fid_mean=float(np.mean(fids)), fid_blocks=fids, block_seeds=block_seeds)
