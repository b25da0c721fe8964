"""Prepared datasets: one on-disk format for every source, and the pixel conversions.

On-disk format (``.npz``, written by ``python -m aot prepare``):

=================  =========================  ==========================================
key                dtype / shape              meaning
=================  =========================  ==========================================
``train_images``   uint8 (N, C, H, W)         training split, 0..255
``train_labels``   int64 (N,)                 class index 0..K-1
``test_images``    uint8 (M, C, H, W)         held-out split (feature-net accuracy only)
``test_labels``    int64 (M,)
``meta``           0-d str (JSON)             name, source, num_classes (+ subset, subset_seed)
=================  =========================  ==========================================

Sources (:mod:`aot.data.sources`): digits, CIFAR-10, a researcher's own images, synthetic blobs. Any source can be
cut to a per-class training subset (``class_subset``; ``dataset.subset`` in the config) for scaled-down runs.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from aot.core.checkpoint import atomic_write_bytes


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
    from aot.core.artifacts import read_npz, reading

    keys = ["train_images", "train_labels", "test_images", "test_labels", "meta"]
    z = read_npz(path, keys, kind="prepared dataset", rule="prepare_dataset")
    with reading(path, "prepared dataset", "prepare_dataset"):
        ds = Dataset(train_images=z["train_images"], train_labels=z["train_labels"].astype(np.int64),
                     test_images=z["test_images"], test_labels=z["test_labels"].astype(np.int64),
                     meta=json.loads(str(z["meta"])))
        _check(ds)
    return ds


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


def class_subset(ds: Dataset, n: int, seed: int = 0) -> Dataset:
    """Keep ``n`` training images, ``n / num_classes`` from each class (e.g. a CIFAR-10 run scaled down).

    Each class's images are drawn by a permutation of one ``numpy`` Generator seeded with ``seed`` (classes in
    order), so a seed always keeps the same images; the kept indices are sorted so their order is the source's.
    The test split stays whole (it only scores the feature net). ``meta`` records ``subset`` and ``subset_seed``.
    """
    k = ds.num_classes
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0 or n % k:
        near = k * max(1, round(n / k)) if isinstance(n, (int, np.integer)) and not isinstance(n, bool) else k
        raise ValueError(f"dataset.subset: {n!r} must be a positive multiple of the {k} classes (the same number "
                         f"of images from each), e.g. {near}; or null for the whole training split")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"dataset.subset_seed: {seed!r} must be an integer >= 0")
    per = int(n) // k
    rng = np.random.default_rng(int(seed))
    kept = []
    for c in range(k):
        idx = np.flatnonzero(ds.train_labels == c)
        if len(idx) < per:
            raise ValueError(f"dataset.subset: {n} needs {per} images per class but class {c} has {len(idx)} "
                             f"training images; use at most {k * min(np.bincount(ds.train_labels, minlength=k))}")
        kept.append(rng.permutation(idx)[:per])
    keep = np.sort(np.concatenate(kept))
    meta = {**ds.meta, "subset": int(n), "subset_seed": int(seed)}
    return Dataset(ds.train_images[keep], ds.train_labels[keep], ds.test_images, ds.test_labels, meta)


