"""Small synthetic CIFAR-10 archives in the official python format, for tests (no download, no real images).

The official ``cifar-10-python.tar.gz`` holds ``cifar-10-batches-py/`` with ``data_batch_1`` .. ``data_batch_5``,
``test_batch`` and ``batches.meta``. Each batch is a pickled dict: ``b'batch_label'`` (bytes), ``b'labels'`` (a list
of ints 0..9), ``b'data'`` (uint8 array N x 3072; each row is the 1024 red, then green, then blue values of one
32x32 image, row-major) and ``b'filenames'`` (list of bytes). Only numpy and the standard library are used, so the
module can be imported by a test (``from cifar_archive import ...`` with tests/ on sys.path, pytest's default) or by
a subprocess with the checkout on PYTHONPATH (``from tests.cifar_archive import ...``).
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
LABEL_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def synthetic_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 (N, 3, 32, 32): a per-class colour and a per-class gradient direction, plus noise (0..255)."""
    n = len(labels)
    colours = np.linspace(30, 225, 10)[:, None] * np.array([1.0, 0.6, 0.3])[None]  # (10, 3), distinct per class
    ramp = np.linspace(-40, 40, 32)
    grad = np.where((labels % 2 == 0)[:, None, None], ramp[None, :, None], ramp[None, None, :])  # (N, 32, 32)
    x = colours[labels][:, :, None, None] + grad[:, None] + rng.normal(0, 12, size=(n, 3, 32, 32))
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def _key(name: str, str_keys: bool):
    return name if str_keys else name.encode()


def _text(value: str, str_keys: bool):
    return value if str_keys else value.encode()


def batch_dict(images: np.ndarray, labels: np.ndarray, label: str, start: int, str_keys: bool = False) -> dict:
    """One batch as the official files hold it (bytes keys), or with ``str`` keys as Python 3 re-pickles give."""
    return {
        _key("batch_label", str_keys): _text(label, str_keys),
        _key("labels", str_keys): [int(v) for v in labels],
        _key("data", str_keys): np.ascontiguousarray(images.reshape(len(images), 3 * 32 * 32)),
        _key("filenames", str_keys): [_text(f"synthetic_{start + i:06d}.png", str_keys) for i in range(len(images))],
    }


def cifar10_members(per_batch: int = 20, seed: int = 0, protocol: int = 2, str_keys: bool = False,
                    test_size: int | None = None) -> tuple[dict[str, bytes], dict[str, np.ndarray]]:
    """-> ({member path: pickled bytes}, expected arrays). ``per_batch`` a multiple of 10 gives balanced classes.

    Expected arrays: ``train_images`` uint8 (5 * per_batch, 3, 32, 32), ``train_labels`` int64, ``test_images``,
    ``test_labels`` (``test_size`` images, default ``per_batch``), in the order of the batches.
    """
    rng = np.random.default_rng(seed)
    test_size = per_batch if test_size is None else test_size
    members: dict[str, bytes] = {}
    splits: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"train": [], "test": []}
    start = 0
    for i, name in enumerate([*TRAIN_BATCHES, "test_batch"]):
        n = test_size if name == "test_batch" else per_batch
        labels = rng.permutation(np.arange(n) % 10).astype(np.int64)
        images = synthetic_images(labels, rng)
        label = "testing batch 1 of 1" if name == "test_batch" else f"training batch {i + 1} of 5"
        members[f"{FOLDER}/{name}"] = pickle.dumps(batch_dict(images, labels, label, start, str_keys),
                                                   protocol=protocol)
        splits["test" if name == "test_batch" else "train"].append((images, labels))
        start += n
    meta = {_key("label_names", str_keys): [_text(v, str_keys) for v in LABEL_NAMES],
            _key("num_cases_per_batch", str_keys): per_batch, _key("num_vis", str_keys): 3 * 32 * 32}
    members[f"{FOLDER}/batches.meta"] = pickle.dumps(meta, protocol=protocol)
    expected = {}
    for split, parts in splits.items():
        expected[f"{split}_images"] = np.concatenate([p[0] for p in parts])
        expected[f"{split}_labels"] = np.concatenate([p[1] for p in parts])
    return members, expected


def write_tar_gz(path: str | Path, members: dict[str, bytes | tarfile.TarInfo]) -> Path:
    """Write a gzip tar of regular files (bytes) and of prepared TarInfo entries (links, devices), in order."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        folder = tarfile.TarInfo(FOLDER)
        folder.type, folder.mode, folder.mtime = tarfile.DIRTYPE, 0o755, 1_200_000_000
        tar.addfile(folder)
        for name, content in members.items():
            if isinstance(content, tarfile.TarInfo):
                tar.addfile(content)
                continue
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(content), 0o644, 1_200_000_000
            tar.addfile(info, io.BytesIO(content))
    return path


def write_cifar10_archive(path: str | Path, per_batch: int = 20, seed: int = 0, protocol: int = 2,
                          str_keys: bool = False, test_size: int | None = None) -> dict[str, np.ndarray]:
    """Write ``path`` (a ``cifar-10-python.tar.gz`` look-alike) and return the arrays a loader must give back."""
    members, expected = cifar10_members(per_batch, seed, protocol, str_keys, test_size)
    write_tar_gz(path, members)
    return expected
