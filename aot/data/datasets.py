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

Sources: scikit-learn's ``load_digits`` (1797 real 8x8 digits shipped inside scikit-learn: the embedded
default, no download), CIFAR-10 (official python archive, downloaded with torchvision or read from a local
``cifar-10-python.tar.gz`` / extracted folder) and a researcher's own images (a folder or ``.zip`` as EDM's
``dataset_tool.py`` writes it, or one subfolder per class: :mod:`aot.data.images`). CIFAR's batches are pickles;
they are read with a restricted unpickler that only rebuilds numpy arrays, so no code from the file ever runs. Any
source can be cut to a per-class training subset (``class_subset``; ``dataset.subset`` in the config) for scaled-down
runs.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import io
import json
import pickle
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from aot.core.checkpoint import atomic_write_bytes
from aot.data.cifar10_layout import CIFAR10_BATCHES, CIFAR10_FOLDER, cifar10_batch_files


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


def images_dataset(path: str | Path, resolution: int | None = None, test_fraction: float = 0.2,
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


def _numpy_attr(module: str, name: str):
    """``numpy.core.X`` (numpy 1 pickles) and ``numpy._core.X`` (numpy 2 pickles) name the same object; import
    whichever this numpy has, trying ``_core`` first (importing ``numpy.core`` warns on numpy 2)."""
    suffix = module.removeprefix("numpy._core").removeprefix("numpy.core")
    for base in ("numpy._core", "numpy.core"):
        try:
            return getattr(importlib.import_module(base + suffix), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"numpy has no {module}.{name}")


def _latin1(text: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """Stand-in for ``_codecs.encode``: Python 3 writes ``bytes`` as ``_codecs.encode(text, 'latin1')`` under pickle
    protocol 2, and that is the only call this allows (no other codec, no other argument type)."""
    if type(text) is not str or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise pickle.UnpicklingError("_codecs.encode is allowed only as encode(str, 'latin1')")
    return text.encode("latin1")


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays, numpy scalars and plain containers, and nothing else.

    Every global a pickle names goes through ``find_class``; the allow-list holds only the constructors numpy's own
    ``__reduce__`` emits for arrays (protocols 2-5, numpy 1 and 2 module names) and the latin1 ``bytes`` encoder of
    protocol 2, so no function chosen by the file (``os.system``, ``builtins.eval``...) can ever be called.
    """

    _NUMPY = {
        ("multiarray", "_reconstruct"),  # ndarray.__reduce__ (protocols 2-4)
        ("multiarray", "scalar"),  # numpy scalars, e.g. labels pickled as a list of np.int64
        ("numeric", "_frombuffer"),  # ndarray.__reduce_ex__ for protocol 5 (in-band PickleBuffer)
    }

    def find_class(self, module: str, name: str):
        if (module, name) in {("numpy", "ndarray"), ("numpy", "dtype")}:
            return getattr(np, name)
        core, _, sub = module.rpartition(".")
        if core in ("numpy.core", "numpy._core") and (sub, name) in self._NUMPY:
            return _numpy_attr(module, name)
        if module == "numpy.dtypes" and name.endswith("DType"):  # numpy >= 1.25 dtype classes, e.g. UInt8DType
            cls = getattr(importlib.import_module("numpy.dtypes"), name, None)
            if isinstance(cls, type) and issubclass(cls, np.dtype):
                return cls
        if (module, name) == ("_codecs", "encode"):
            return _latin1
        raise pickle.UnpicklingError(f"refused global {module}.{name} (only numpy arrays may be loaded)")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refused persistent id (only numpy arrays may be loaded)")


CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MEMBERS = list(CIFAR10_BATCHES)
CIFAR10_TRAIN = CIFAR10_MEMBERS[:5]
CIFAR10_FIX = "re-download cifar-10-python.tar.gz or set dataset.archive: null"
_MAX_MEMBER_BYTES = 256 << 20  # an official batch is 31 MB; refuse to inflate anything far larger


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _cifar_error(archive: Path, member: str, problem: str, expected: str) -> ValueError:
    return ValueError(_one_line(f"dataset.archive: {archive}: member {member}: {problem}; expected {expected}; "
                                f"{CIFAR10_FIX}"))


def _batch_key(batch: dict, key: str):
    """The official batches (Python 2) have ``bytes`` keys; batches re-pickled by Python 3 may have ``str`` keys."""
    for k in (key.encode(), key):
        if k in batch:
            return batch[k]
    raise KeyError(key)


def _read_cifar_batch(raw: bytes, archive: str | Path = "<bytes>", member: str = "<batch>") -> tuple[np.ndarray,
                                                                                                      np.ndarray]:
    """One CIFAR-10 batch pickle -> (uint8 (N, 3, 32, 32), int64 (N,)), checked, or a one-line ValueError."""
    archive = Path(archive)
    expected_pickle = "a CIFAR-10 python batch (a pickled dict with data and labels)"
    try:
        batch = _NumpyOnlyUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as e:  # any failure of a restricted unpickle means a bad file; nothing from it has run
        what = "refused to unpickle" if "refused" in str(e) else "not a valid pickle"
        raise _cifar_error(archive, member, f"{what} ({type(e).__name__}: {_one_line(e)[:200]})",
                           expected_pickle) from None
    if not isinstance(batch, dict):
        raise _cifar_error(archive, member, f"the pickle holds a {type(batch).__name__}", expected_pickle)
    try:
        data, labels = _batch_key(batch, "data"), _batch_key(batch, "labels")
    except KeyError as e:
        keys = ", ".join(sorted(repr(k) for k in batch)[:6])
        raise _cifar_error(archive, member, f"no {e.args[0]!r} key (keys: {keys})", expected_pickle) from None
    try:
        x, y = np.asarray(data), np.asarray(labels)
    except Exception as e:
        raise _cifar_error(archive, member, f"data/labels are not arrays ({type(e).__name__})", expected_pickle) \
            from None
    if x.dtype.kind not in "iub" or x.ndim != 2 or x.shape[1] != 3 * 32 * 32:
        raise _cifar_error(archive, member, f"data is {x.dtype} {x.shape}", "integer data of shape (N, 3072)")
    if x.size and (x.min() < 0 or x.max() > 255):
        raise _cifar_error(archive, member, f"data values span {x.min()}..{x.max()}", "pixel values 0..255")
    if y.dtype.kind not in "iub" or y.shape != (x.shape[0],):
        raise _cifar_error(archive, member, f"labels are {y.dtype} {y.shape}", f"{x.shape[0]} integer labels")
    if y.size and (y.min() < 0 or y.max() > 9):
        raise _cifar_error(archive, member, f"labels span {y.min()}..{y.max()}", "class indices 0..9")
    return x.astype(np.uint8).reshape(-1, 3, 32, 32), y.astype(np.int64)  # rows are R, G, B planes: NCHW


def _cifar_members_from_folder(folder: Path) -> dict[str, tuple[str, bytes]]:
    found = cifar10_batch_files(folder)  # the search the config check makes before any job
    files = {}
    for name in CIFAR10_MEMBERS:
        if name not in found:
            raise FileNotFoundError(_one_line(f"dataset.archive: {folder}: no file {name} in it or in a folder right "
                                              f"below it; expected the extracted {CIFAR10_FOLDER}/ folder; "
                                              f"{CIFAR10_FIX}"))
        files[name] = (str(found[name].relative_to(folder)), found[name].read_bytes())
    return files


def _cifar_members_from_tar(archive: Path) -> dict[str, tuple[str, bytes]]:
    """Read the six batches in one forward pass over the gzip stream; links, devices and oversized members are
    refused (never followed or extracted), and a truncated or non-gzip file is named with the member being read."""
    files: dict[str, tuple[str, bytes]] = {}
    member = "<archive header>"
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for m in tar:
                name = Path(m.name).name
                if name not in CIFAR10_MEMBERS:
                    continue
                member = m.name
                if not m.isreg():
                    kind = "a symlink" if m.issym() else "a hard link" if m.islnk() else "a FIFO" if m.isfifo() \
                        else "a device" if m.isdev() else "a directory" if m.isdir() else "not a regular file"
                    raise _cifar_error(archive, member, f"is {kind} (refused, not followed)", "a regular file")
                if m.size > _MAX_MEMBER_BYTES:
                    raise _cifar_error(archive, member, f"is {m.size} bytes", "a batch of about 31 MB")
                if name in files and files[name][0] == f"{CIFAR10_FOLDER}/{name}":
                    continue  # keep the official path when a name repeats
                f = tar.extractfile(m)
                raw = f.read() if f is not None else b""
                if len(raw) != m.size:
                    raise EOFError(f"read {len(raw)} of {m.size} bytes")
                files[name] = (member, raw)
            member = "<end of archive>"
    except ValueError:
        raise
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise _cifar_error(archive, member, f"unreadable ({type(e).__name__}: {_one_line(e)[:160]}); the file is "
                           "truncated or not a gzip tar", "the complete cifar-10-python.tar.gz") from None
    missing = [n for n in CIFAR10_MEMBERS if n not in files]
    if missing:
        raise _cifar_error(archive, f"{CIFAR10_FOLDER}/{missing[0]}", "missing from the archive",
                           f"the batches {', '.join(CIFAR10_MEMBERS)}")
    return files


def cifar10_dataset(archive: str | Path | None, download_root: str | Path = "resources/cifar10") -> Dataset:
    """CIFAR-10 from a local ``cifar-10-python.tar.gz`` (or its extracted folder), else downloaded.

    Uses the 5 training batches (50,000 images) for training and ``test_batch`` as the held-out split. Every
    problem with the archive raises one line naming the archive, the member, what was expected and the fix.
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
    files = _cifar_members_from_folder(archive) if archive.is_dir() else _cifar_members_from_tar(archive)
    parts = [_read_cifar_batch(files[n][1], archive, files[n][0]) for n in CIFAR10_TRAIN]
    x_tr, y_tr = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    x_te, y_te = _read_cifar_batch(files["test_batch"][1], archive, files["test_batch"][0])
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


SOURCES = {"digits": digits_dataset, "cifar10": cifar10_dataset, "synthetic": synthetic_dataset,
           "images": images_dataset}
