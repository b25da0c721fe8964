"""EDM's network pickles read as data: nothing from the file runs.

EDM's ``.pkl`` files are plain ``pickle.dump(dict(ema=..., loss_fn=..., augment_pipe=..., dataset_kwargs=...))`` of
objects made with EDM's ``torch_utils/persistence.py``: every ``@persistent_class`` object is pickled as a call
``torch_utils.persistence._reconstruct_persistent_obj(meta)`` with ``meta = dict(type='class', version=6,
module_src=<source of its whole module>, class_name=<bare class name>, state=<its __dict__>)``, and unpickling it
normally *executes* ``module_src``. Here a restricted unpickler resolves only a fixed set of globals, each to a small
data-only reconstructor of ours (nothing named in the file is imported), and the persistent-object hook returns the
meta dict unchanged (``module_src`` is kept as an inert string and never executed). Any other global raises
:class:`UnsafePickleError`.
"""

from __future__ import annotations

import io
import pickle
import warnings
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """The file names a global outside the allow-list; nothing from it was executed."""


class CheckpointFormatError(ValueError):
    """The file is not a readable EDM network pickle (truncated, corrupt, or an unexpected structure)."""


class PersistentMeta(dict):
    """Meta dict of one EDM persistent object: type, version, module_src (never run), class_name, state."""

    @property
    def class_name(self) -> str:
        return str(self["class_name"]).rsplit(".", 1)[-1]

    @property
    def state(self) -> dict:
        return self["state"]


class TorchModuleState:
    """A plain (non-persistent) torch container module such as ``nn.ModuleDict``: its class name and state."""

    torch_class = "torch.nn.Module"

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise CheckpointFormatError(f"{self.torch_class}: state is a {type(state).__name__}, not a dict")
        self.state = state


class EasyDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict`` (a dict with attribute access); here just a dict."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, dict):
            self.update(state)


_TORCH_CONTAINERS = {
    name: type(name, (TorchModuleState,), {"torch_class": f"torch.nn.{name}"})
    for name in ("ModuleDict", "ModuleList", "Sequential")
}


def _refuse(what: str, source: str) -> UnsafePickleError:
    return UnsafePickleError(f"refusing to load {what} from {source}: checkpoints are read as data only")


def one_line(text: object, limit: int = 200) -> str:
    """``text`` on one line, at most ``limit`` characters (torch's and pickle's messages span lines)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def naming_error(path: Path, e: Exception) -> CheckpointFormatError:
    """``e`` as one line that starts with the file's name (every error of this module names the file)."""
    msg = one_line(e, 400)
    return CheckpointFormatError(msg if msg.startswith(str(path)) else f"{path}: {msg}")


def reconstructors(source: str) -> dict[tuple[str, str], Callable]:
    """Data-only stand-ins for every global an EDM pickle may name; ``source`` names the file in messages."""

    def reconstruct_persistent_obj(meta: Any) -> PersistentMeta:
        # EDM's version imports meta['module_src'] with exec(); we only check and keep the data.
        if (not isinstance(meta, dict) or meta.get("type") != "class"
                or not isinstance(meta.get("class_name"), str)):
            raise CheckpointFormatError(f"{source}: malformed persistent-object record")
        state = meta.get("state")
        meta = PersistentMeta(meta)
        meta["state"] = {} if state is None else state
        if not isinstance(meta["state"], dict):
            raise CheckpointFormatError(f"{source}: persistent {meta.class_name} has a non-dict state")
        return meta

    def load_from_bytes(b: Any) -> Any:
        # torch.storage._load_from_bytes runs torch.load(weights_only=False) on the nested legacy
        # torch.save blob of one storage; ours is weights_only, so the nested file is data-only too.
        if not isinstance(b, bytes | bytearray):
            raise CheckpointFormatError(f"{source}: tensor storage is not bytes")
        try:
            storage = torch.load(io.BytesIO(b), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:  # torch's message (and its advice to load unsafely) is not passed on
            raise _refuse("a nested tensor storage that is not plain data", source) from None
        except Exception as e:  # RuntimeError, EOFError, ... of a damaged blob
            raise CheckpointFormatError(f"{source}: a nested tensor storage is not readable "
                                        f"({type(e).__name__}: {one_line(e, 120)})") from None
        if not isinstance(storage, torch.storage.TypedStorage | torch.UntypedStorage):
            raise CheckpointFormatError(f"{source}: nested tensor payload is a {type(storage).__name__}, "
                                        "not a storage")
        return storage

    def rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                          metadata=None) -> torch.Tensor:
        if not isinstance(storage, torch.storage.TypedStorage):
            raise CheckpointFormatError(f"{source}: tensor without a typed storage")
        ints = (storage_offset, *size, *stride)
        if not all(isinstance(v, int) for v in ints) or len(size) != len(stride):
            raise CheckpointFormatError(f"{source}: malformed tensor geometry")
        # Hooks and metadata are dropped: we want the numbers only. set_() bounds-checks against the storage.
        return torch._utils._rebuild_tensor(storage, storage_offset, tuple(size), tuple(stride))

    def rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None) -> torch.Tensor:
        if not isinstance(data, torch.Tensor):
            raise CheckpointFormatError(f"{source}: parameter without tensor data")
        return data  # a plain tensor: _parameters vs _buffers already says what it is

    def codecs_encode(obj, encoding="utf-8", errors="strict") -> bytes:
        # Protocol <= 2 pickles write bytes as _codecs.encode(str, 'latin1'); nothing else is needed.
        if not isinstance(obj, str) or encoding not in ("latin1", "latin-1"):
            raise _refuse(f"_codecs.encode(..., {encoding!r})", source)
        return obj.encode("latin1")

    def numpy_dtype(spec, align=False, copy=False) -> np.dtype:
        # copy=True always: the BUILD that follows must not mutate numpy's shared dtype singletons.
        dtype = np.dtype(spec, False, True) if isinstance(spec, str) else None
        if dtype is None or dtype.kind not in "biufc":
            raise _refuse(f"numpy.dtype({spec!r})", source)
        return dtype

    def numpy_scalar(dtype, data=None) -> int | float | complex | bool:
        # EDM keeps np.sqrt(0.5)-style numpy floats in UNetBlock attributes and init kwargs.
        if not isinstance(dtype, np.dtype) or dtype.kind not in "biufc" or not isinstance(data, bytes):
            raise _refuse("a numpy scalar that is not a plain number", source)
        if len(data) != dtype.itemsize:
            raise CheckpointFormatError(f"{source}: numpy scalar of {len(data)} bytes for dtype {dtype}")
        return np.frombuffer(data, dtype=dtype)[0].item()

    table: dict[tuple[str, str], Callable] = {
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): reconstruct_persistent_obj,
        ("torch.storage", "_load_from_bytes"): load_from_bytes,
        ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): rebuild_parameter,
        ("collections", "OrderedDict"): OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("__builtin__", "set"): set,  # protocol <= 2 spells builtins this way
        ("__builtin__", "frozenset"): frozenset,
        ("_codecs", "encode"): codecs_encode,
        ("numpy", "dtype"): numpy_dtype,
        ("numpy.core.multiarray", "scalar"): numpy_scalar,  # numpy 1.x name
        ("numpy._core.multiarray", "scalar"): numpy_scalar,  # numpy 2.x name
        ("dnnlib.util", "EasyDict"): EasyDict,
    }
    for name, cls in _TORCH_CONTAINERS.items():
        table["torch.nn.modules.container", name] = cls
    return table


class _RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose globals come only from :func:`_reconstructors`; no import ever happens."""

    def __init__(self, file, source: str):
        super().__init__(file)
        self._source = source
        self._table = reconstructors(source)

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._table[module, name]
        except (KeyError, TypeError):
            raise _refuse(f"{module}.{name}", self._source) from None

    def persistent_load(self, pid: Any) -> Any:
        raise _refuse(f"persistent id {pid!r}", self._source)


def load_edm_pickle(path: str | Path) -> Any:
    """Unpickle ``path`` as inert data: persistent objects become :class:`PersistentMeta`, tensors tensors."""
    path = Path(path)
    with open(path, "rb") as f:
        if f.read(4) == b"PK\x03\x04":
            raise CheckpointFormatError(f"{path} is a torch.save zip archive, not an EDM pickle; read it "
                                        "with load_checkpoint or torch.load(weights_only=True)")
        f.seek(0)
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*TypedStorage is deprecated")
                return _RestrictedUnpickler(f, str(path)).load()
        except (UnsafePickleError, CheckpointFormatError):
            raise
        except Exception as e:  # bad input raises many types (EOFError, KeyError, struct.error, ...)
            raise CheckpointFormatError(f"{path}: not a readable EDM pickle (truncated or corrupt?): "
                                        f"{type(e).__name__}: {one_line(e)}") from None


#: The only (module, name) pairs an EDM pickle may name; each resolves to a reconstructor defined here.
ALLOWED_GLOBALS: tuple[str, ...] = tuple(sorted(f"{m}.{n}" for m, n in reconstructors("")))
