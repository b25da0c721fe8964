"""Prepared datasets: one on-disk format for every source, and the pixel conversions.

On-disk format (``.npz``, written by ``python -m aot prepare``):

=================  =========================  ==========================================
key                dtype / shape              meaning
=================  =========================  ==========================================
``train_images``   uint8 (N, C, H, W)         training split, 0..255
``train_labels``   int64 (N,)                 class index 0..K-1
``test_images``    uint8 (M, C, H, W)         held-out split (feature-net accuracy only)
``test_labels``    int64 (M,)
``meta``           0-d str (JSON)             name, source, resolution, channels, num_classes
=================  =========================  ==========================================

Sources: scikit-learn's ``load_digits`` (1797 real 8x8 digits shipped inside scikit-learn: the embedded
default, no download) and CIFAR-10 (official python archive, downloaded with torchvision or read from a local
``cifar-10-python.tar.gz`` / extracted folder). CIFAR's batches are pickles; they are read with a restricted
unpickler that only rebuilds numpy arrays, so no code from the file ever runs.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from aot.checkpoint import atomic_write_bytes


@dataclass(frozen=True)
class Dataset:
    train_images: np.ndarray  # uint8 (N, C, H, W)
    train_labels: np.ndarray  # int64 (N,)
    test_images: np.ndarray  # uint8 (M, C, H, W)
    test_labels: np.ndarray  # int64 (M,)
    meta: dict

    @property
    def resolution(self) -> int:
        return int(self.train_images.shape[-1])

    @property
    def channels(self) -> int:
        return int(self.train_images.shape[1])

    @property
    def num_classes(self) -> int:
        return int(self.meta["num_classes"])


def to_float(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 0..255 -> float32 in [-1, 1] (EDM: x = img / 127.5 - 1)."""
    images = torch.as_tensor(images)
    return images.to(torch.float32) / 127.5 - 1


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float in [-1, 1] -> uint8 0..255, rounded and clipped as EDM's generate.py does."""
    return (x * 127.5 + 128).clip(0, 255).to(torch.uint8).cpu().numpy()


def save_dataset(path: str | Path, ds: Dataset) -> str:
    """Write ``ds`` in the format above (atomically) and return the sha256 of the file."""
    _check(ds)
    buf = io.BytesIO()
    np.savez(
        buf,
        train_images=ds.train_images,
        train_labels=ds.train_labels,
        test_images=ds.test_images,
        test_labels=ds.test_labels,
        meta=np.array(json.dumps(ds.meta, sort_keys=True)),
    )
    data = buf.getvalue()
    atomic_write_bytes(path, lambda f: f.write(data))
    return hashlib.sha256(data).hexdigest()


def load_dataset(path: str | Path) -> Dataset:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset not found: {path} (run `python -m aot prepare` first)")
    with np.load(path, allow_pickle=False) as z:
        ds = Dataset(
            train_images=z["train_images"],
            train_labels=z["train_labels"].astype(np.int64),
            test_images=z["test_images"],
            test_labels=z["test_labels"].astype(np.int64),
            meta=json.loads(str(z["meta"])),
        )
    _check(ds)
    return ds


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check(ds: Dataset) -> None:
    for split in ("train", "test"):
        x, y = getattr(ds, f"{split}_images"), getattr(ds, f"{split}_labels")
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[2] != x.shape[3]:
            raise ValueError(f"{split}_images must be uint8 (N, C, R, R), got {x.dtype} {x.shape}")
        if y.shape != (x.shape[0],):
            raise ValueError(f"{split}_labels must have shape ({x.shape[0]},), got {y.shape}")
    if ds.train_images.shape[1:] != ds.test_images.shape[1:]:
        raise ValueError("train and test images differ in shape")


# ----------------------------------------------------------------------------
# Sources.


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic per-class split -> (train_idx, test_idx), both sorted."""
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n_test = int(round(len(idx) * test_fraction))
        test.extend(rng.permutation(idx)[:n_test].tolist())
    test_idx = np.sort(np.array(test, dtype=np.int64))
    train_idx = np.setdiff1d(np.arange(len(labels)), test_idx)
    return train_idx, test_idx


def digits_dataset(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's 1797 real 8x8 handwritten digits (UCI optdigits test set), 0..16 -> uint8 0..255."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # (1797, 1, 8, 8)
    labels = d.target.astype(np.int64)
    tr, te = stratified_split(labels, test_fraction, seed)
    meta = dict(name="digits", source="sklearn.datasets.load_digits", num_classes=10,
                split_seed=seed, test_fraction=test_fraction)
    return Dataset(images[tr], labels[tr], images[te], labels[te], meta)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays and nothing else (no code from the file runs)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")
        return super().find_class(module.replace("numpy.core", "numpy._core"), name)


def _read_cifar_batch(raw: bytes) -> tuple[np.ndarray, np.ndarray]:
    batch = _NumpyOnlyUnpickler(io.BytesIO(raw), encoding="bytes").load()
    x = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)  # NCHW as stored
    y = np.asarray(batch[b"labels"], dtype=np.int64)
    return x, y


CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]


def cifar10_dataset(archive: str | Path | None, download_root: str | Path = "resources/cifar10") -> Dataset:
    """CIFAR-10 from a local ``cifar-10-python.tar.gz`` (or its extracted folder), else downloaded.

    Uses the 5 training batches (50,000 images) for training and ``test_batch`` as the held-out split.
    """
    if archive is None:
        from torchvision.datasets.utils import download_url

        download_url(CIFAR10_URL, str(download_root), filename="cifar-10-python.tar.gz",
                     md5="c58f30108f718f92721af3b95e74349a")
        archive = Path(download_root) / "cifar-10-python.tar.gz"
    archive = Path(archive)
    if not archive.exists():
        raise FileNotFoundError(f"dataset.archive: {archive} does not exist; point it at cifar-10-python.tar.gz "
                                "or set it to null to download")
    files: dict[str, bytes] = {}
    if archive.is_dir():
        for name in [*CIFAR10_TRAIN, "test_batch"]:
            hits = list(archive.rglob(name))
            if not hits:
                raise FileNotFoundError(f"{archive}: no {name} below it")
            files[name] = hits[0].read_bytes()
    else:
        with tarfile.open(archive, "r:gz") as tar:
            for m in tar.getmembers():
                base = Path(m.name).name
                if base in (*CIFAR10_TRAIN, "test_batch") and m.isfile():
                    files[base] = tar.extractfile(m).read()
    parts = [_read_cifar_batch(files[n]) for n in CIFAR10_TRAIN]
    x_tr, y_tr = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    x_te, y_te = _read_cifar_batch(files["test_batch"])
    meta = dict(name="cifar10", source=str(archive), num_classes=10)
    return Dataset(x_tr, y_tr, x_te, y_te, meta)


def synthetic_dataset(n_train: int = 512, n_test: int = 128, channels: int = 3, resolution: int = 32,
                      num_classes: int = 10, seed: int = 0) -> Dataset:
    """Class-dependent blobs for tests and benchmarks of paper-size shapes (not for results)."""
    rng = np.random.default_rng(seed)
    means = rng.uniform(40, 215, size=(num_classes, channels, 1, 1))

    def make(n):
        y = rng.integers(0, num_classes, size=n)
        x = means[y] + rng.normal(0, 30, size=(n, channels, resolution, resolution))
        return x.clip(0, 255).astype(np.uint8), y.astype(np.int64)

    x_tr, y_tr = make(n_train)
    x_te, y_te = make(n_test)
    return Dataset(x_tr, y_tr, x_te, y_te, dict(name="synthetic", source="synthetic", num_classes=num_classes))


SOURCES = {"digits": digits_dataset, "cifar10": cifar10_dataset, "synthetic": synthetic_dataset}
