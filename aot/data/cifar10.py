"""CIFAR-10 from the official python archive (``cifar-10-python.tar.gz``, downloaded with torchvision or read from a
local archive or extracted folder). The batches are pickles; they are read with a restricted unpickler that only
rebuilds numpy arrays, so no code from the file ever runs. Every error names the archive, the member and the fix."""

from __future__ import annotations

import gzip
import importlib
import io
import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np

from aot.data.cifar10_layout import CIFAR10_BATCHES, CIFAR10_FOLDER, cifar10_batch_files
from aot.data.datasets import Dataset


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


CIFAR10_TRAIN = CIFAR10_MEMBERS[:5]
