"""Reading the workflow's artifacts with one-line errors: which file, what was expected, and the fix.

Every reader here turns whatever a truncated, overwritten or foreign file raises (``zipfile.BadZipFile``,
``EOFError``, numpy's refusal of pickled object arrays, a missing key, ``json.JSONDecodeError``, torch's
``weights_only`` refusal, ...) into one :class:`ArtifactError` (a ``ValueError``) of one line::

    <path>: unreadable <kind> (<short reason>); delete it and rerun the rule that makes it (snakemake -R <rule>)

No message suggests loading the file unsafely: nothing here ever unpickles, and numpy's or torch's advice to
do so is never passed on. ``python -m aot`` prints a ``ValueError`` as ``error: <message>`` (exit 2).
"""

from __future__ import annotations

import json
import os
import pickle
import re
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

# The exceptions a corrupt or foreign file can raise while it is read (TypeError/AttributeError/IndexError: a
# well-formed file holding the wrong structure).
_READ_ERRORS = (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile, RuntimeError, pickle.UnpicklingError,
                TypeError, AttributeError, IndexError, UnicodeDecodeError)


class ArtifactError(ValueError):
    """One line naming an unreadable artifact, what it should hold, and how to remake it."""


def fix_text(rule: str | Iterable[str] | None) -> str:
    """'delete it and rerun the rule that makes it (snakemake -R <rule>)'; without a rule, the generic advice."""
    if not rule:
        return "delete it and rerun the rule that writes it"
    rules = [rule] if isinstance(rule, str) else list(rule)
    return f"delete it and rerun the rule that makes it (snakemake -R {' '.join(rules)})"


def _reason(e: BaseException) -> str:
    """A short, single-line, safe description of why a file could not be read."""
    text = str(e)
    if isinstance(e, json.JSONDecodeError):
        return f"invalid JSON at line {e.lineno} column {e.colno}"
    if isinstance(e, zipfile.BadZipFile) or "central directory" in text or "PytorchStreamReader" in text:
        return "truncated or damaged zip archive"
    if isinstance(e, EOFError):
        return "truncated"
    if isinstance(e, KeyError):
        return f"missing key {text}"
    low = text.lower()
    if "object arrays" in low or "pickled (object) data" in low:
        return "holds pickled object arrays; refused"
    if isinstance(e, pickle.UnpicklingError) or "pickle" in low or "weights_only" in low:
        return "corrupt, or not plain data (pickled objects are refused)"
    if isinstance(e, UnicodeDecodeError):
        return "not UTF-8 text"
    first = text.strip().splitlines()[0] if text.strip() else ""
    first = re.sub(r"\s+", " ", first)[:120]
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def artifact_error(path: str | os.PathLike, kind: str, reason: str, rule: str | Iterable[str] | None = None,
                   fix: str | None = None) -> ArtifactError:
    """The one-line error for ``path``; ``fix`` replaces the default 'delete it and rerun ...' advice."""
    reason = re.sub(r"\s+", " ", reason).replace("allow_pickle", "pickle loading")
    return ArtifactError(f"{path}: unreadable {kind} ({reason}); {fix or fix_text(rule)}")


def _header_mismatch(path: str | os.PathLike, magic: bytes) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(magic)) != magic
    except OSError:
        return False


@contextmanager
def reading(path: str | os.PathLike, kind: str, rule: str | Iterable[str] | None = None,
            fix: str | None = None, magic: bytes | None = None) -> Iterator[None]:
    """Map any error raised while reading ``path`` in the ``with`` block to one :class:`ArtifactError`.

    A missing file stays a ``FileNotFoundError`` (its message already names it); an ArtifactError raised inside
    (a nested reader) passes through unchanged. ``magic``: the bytes the file must start with (zip: ``b"PK"``); a
    file that fails to load and lacks them is reported as overwritten rather than by the loader's own guess.
    """
    try:
        yield
    except (ArtifactError, FileNotFoundError):
        raise
    except _READ_ERRORS as e:
        if magic is not None and _header_mismatch(path, magic):
            reason = "not a zip archive (no zip header): overwritten, or another format"
        else:
            reason = _reason(e)
        raise artifact_error(path, kind, reason, rule, fix) from None


def read_npz(path: str | os.PathLike, keys: Iterable[str], *, kind: str = "npz file",
             rule: str | Iterable[str] | None = None, optional: Iterable[str] = (),
             fix: str | None = None) -> dict[str, np.ndarray]:
    """Every array of ``keys`` (required) and ``optional`` (if present) from an npz, loaded in full, no pickle."""
    path = Path(path)
    keys, optional = list(keys), list(optional)
    with reading(path, kind, rule, fix, magic=None if path.suffix == ".npy" else b"PK"):
        if not path.is_file():
            raise FileNotFoundError(f"{kind} not found: {path}")
        z = np.load(path, allow_pickle=False)
        if not hasattr(z, "files"):  # np.load of a .npy file returns the array itself
            raise ValueError("a bare .npy array, not an npz archive")
        with z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise artifact_error(path, kind, f"missing {', '.join(missing)}; expected {', '.join(keys)}",
                                     rule, fix)
            out = {k: z[k] for k in [*keys, *(k for k in optional if k in z.files)]}
        for k, v in out.items():
            if v.dtype == object:
                raise artifact_error(path, kind, f"{k!r} is an object array; refused", rule, fix)
    return out


def read_json(path: str | os.PathLike, *, kind: str = "JSON file", rule: str | Iterable[str] | None = None,
                   expect: type = dict, keys: Iterable[str] = (), fix: str | None = None) -> Any:
    """A JSON file's value; it must be an ``expect`` (dict by default) holding ``keys``."""
    path = Path(path)
    with reading(path, kind, rule, fix):
        if not path.is_file():
            raise FileNotFoundError(f"{kind} not found: {path}")
        obj = json.loads(path.read_bytes().decode("utf-8"))
    if not isinstance(obj, expect):
        raise artifact_error(path, kind, f"expected a JSON {_json_type(expect)}, found a {_json_type(type(obj))}",
                             rule, fix)
    missing = [k for k in keys if k not in obj]
    if missing:
        raise artifact_error(path, kind, f"missing key {', '.join(map(repr, missing))}", rule, fix)
    return obj



def _json_type(t: type) -> str:
    return {dict: "object", list: "array", str: "string", int: "number", float: "number",
            bool: "boolean", type(None): "null"}.get(t, t.__name__)


def read_jsonl(path: str | os.PathLike, *, kind: str = "log", rule: str | Iterable[str] | None = None,
               fix: str | None = None) -> list[Any]:
    """One JSON value per non-empty line (e.g. ``log.jsonl``); a bad line is named by its number."""
    path = Path(path)
    with reading(path, kind, rule, fix):
        lines = path.read_bytes().decode("utf-8").splitlines()
    out = []
    for i, line in enumerate(lines, 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise artifact_error(path, kind, f"invalid JSON on line {i} column {e.colno}", rule, fix) from None
    return out


def read_torch(path: str | os.PathLike, *, kind: str = "torch file", rule: str | Iterable[str] | None = None,
               fix: str | None = None) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU: plain data only, never code."""
    import torch

    path = Path(path)
    with reading(path, kind, rule, fix, magic=b"PK"):
        if not path.is_file():
            raise FileNotFoundError(f"{kind} not found: {path}")
        return torch.load(path, map_location="cpu", weights_only=True)


def read_state(path: str | os.PathLike, *, kind: str = "training state") -> Any:
    """A resumable training state (``training-state.pt``, ``disc-state.pt``): a corrupt one says to delete it."""
    return read_torch(path, kind=kind, fix="delete it to restart that run from scratch")
