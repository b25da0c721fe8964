"""The dataset sources ``python -m aot prepare`` knows, by name (``SOURCES``): scikit-learn's digits (the embedded
default, shipped inside scikit-learn), CIFAR-10 (:mod:`aot.data.cifar10`), a researcher's own images
(:mod:`aot.data.images`) and synthetic class blobs for tests; and the digits written out as PNGs in EDM's layout."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from aot.core.checkpoint import atomic_write_bytes
from aot.core.defaults import TEST_FRACTION
from aot.data.cifar10 import cifar10_dataset
from aot.data.datasets import Dataset, stratified_split


def digits_dataset(test_fraction: float = TEST_FRACTION, seed: int = 0) -> Dataset:
    """scikit-learn's 1797 real 8x8 handwritten digits (UCI optdigits test set), 0..16 -> uint8 0..255."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # (1797, 1, 8, 8)
    labels = d.target.astype(np.int64)
    tr, te = stratified_split(labels, test_fraction, seed)
    meta = dict(name="digits", source="sklearn.datasets.load_digits", num_classes=10,
                split_seed=seed, test_fraction=test_fraction)
    return Dataset(images[tr], labels[tr], images[te], labels[te], meta)


def images_dataset(path: str | Path, resolution: int | None = None, test_fraction: float = TEST_FRACTION,
                   seed: int = 0) -> Dataset:
    """A folder or ``.zip`` of images (:mod:`aot.data.images`), decoded in sorted order and split per class.

    ``resolution``: center-crop and LANCZOS-resize every image to it (EDM's ``dataset_tool.py``); None keeps the
    images' own size. The held-out split (``test_fraction``, stratified with ``seed``; 0 keeps every image for
    training) only scores the feature net. An unlabeled source is one class (label 0, ``meta["labeled"]`` false).
    """
    from aot.data.images import RESIZE_FILTER, list_source, read_images

    listing = list_source(path)
    images, source_sha256 = read_images(listing, resolution)
    labels = np.asarray(listing.labels if listing.labeled else [0] * len(images), dtype=np.int64)
    tr, te = stratified_split(labels, test_fraction, seed)
    meta = dict(name=Path(path).stem or "images", source=str(path), num_classes=listing.num_classes,
                labeled=listing.labeled, label_source=listing.label_source,
                classes=list(listing.classes) if listing.classes else None, num_images=len(images),
                resize=(f"center crop + {RESIZE_FILTER} to {resolution}x{resolution} (EDM dataset_tool.py "
                        "--transform=center-crop)") if resolution else None,
                source_fingerprint=listing.fingerprint, source_sha256=source_sha256, split_seed=seed,
                test_fraction=test_fraction)
    return Dataset(images[tr], labels[tr], images[te], labels[te], meta)


def write_digits_pngs(out: str | Path) -> dict:
    """scikit-learn's digits written as EDM's ``dataset_tool.py`` writes a dataset: uncompressed 8x8 grayscale PNGs
    ``00000/img00000000.png`` ... in the source's order, and ``dataset.json`` with every label; a folder, or a zip
    when ``out`` ends in ``.zip``. Written atomically (a temporary name, then renamed). Returns a summary."""
    import os
    import shutil
    import zipfile

    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)  # as digits_dataset
    files, labels = {}, []
    for idx, (img, y) in enumerate(zip(images, d.target, strict=True)):
        idx_str = f"{idx:08d}"
        name = f"{idx_str[:5]}/img{idx_str}.png"  # dataset_tool.py's archive_fname
        buf = io.BytesIO()
        Image.fromarray(img, "L").save(buf, format="png", compress_level=0, optimize=False)
        files[name] = buf.getvalue()
        labels.append([name, int(y)])
    files["dataset.json"] = json.dumps({"labels": labels}).encode()
    out = Path(out)
    if out.suffix.lower() == ".zip":
        def write(f):
            with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as z:
                for name, data in files.items():
                    z.writestr(name, data)
        atomic_write_bytes(out, write)
    else:
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # an empty folder made for it (Snakemake makes an output's parents)
        if out.exists():
            raise ValueError(f"{out} exists; remove it first (nothing is overwritten)")
        tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        for name, data in files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_bytes(data)
        os.replace(tmp, out)
    return dict(out=str(out), images=len(labels), classes=int(d.target.max()) + 1, layout="EDM dataset_tool.py")


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


SOURCES = {"digits": digits_dataset, "cifar10": cifar10_dataset, "synthetic": synthetic_dataset,
           "images": images_dataset}
