"""Checkpoints are plain data: a state_dict, the constructor arguments, and the resolved config.

Torch is imported lazily, so the atomic writers also serve stages that never import it.

Nothing here pickles code: files are written with ``torch.save`` of tensors, numbers, strings, lists and
dicts only, and read back with ``torch.load(..., weights_only=True)``. Writes are atomic (temp file +
``os.replace``), so a run killed mid-write never leaves a truncated checkpoint behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

FORMAT = "aot-checkpoint/1"


def atomic_write_bytes(path: str | os.PathLike, write) -> None:
    """Call ``write(fileobj)`` on a temporary file next to ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, lambda f: f.write(text.encode()))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_checkpoint(
    path: str | os.PathLike,
    *,
    kind: str,
    state_dict: dict[str, torch.Tensor],
    ctor: dict[str, Any],
    config: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> None:
    """Save ``state_dict`` + constructor args ``ctor`` + resolved ``config`` (plain data only).

    ``kind`` names the model family (e.g. ``"denoiser"``, ``"featnet"``) so a loader can refuse the wrong file.
    """
    import torch

    payload = {
        "format": FORMAT,
        "kind": kind,
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        "ctor": ctor,
        "config": config,
        "extra": extra or {},
    }
    atomic_write_bytes(path, lambda f: torch.save(payload, f))


# The workflow rule that writes each kind of checkpoint (named in the error for a corrupt file).
CHECKPOINT_RULES = {"denoiser": ("train", "import_checkpoint"), "discriminator": "train_discriminator",
                    "featnet": "featnet"}


def load_checkpoint(path: str | os.PathLike, *, kind: str | None = None) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` without unpickling any code.

    A truncated, overwritten or foreign file raises one line (``aot.core.artifacts.ArtifactError``, a ValueError) that
    names it and the rule that remakes it.
    """
    from aot.core.artifacts import artifact_error, read_torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    what, rule = f"{kind or 'aot'} checkpoint", CHECKPOINT_RULES.get(kind or "")
    payload = read_torch(path, kind=what, rule=rule)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise artifact_error(path, what, f"not an aot checkpoint: expected format {FORMAT!r}", rule)
    if kind is not None and payload.get("kind") != kind:
        raise artifact_error(path, what, f"holds a {payload.get('kind')!r} checkpoint, expected {kind!r}", rule)
    sd, ctor = payload.get("state_dict"), payload.get("ctor")
    if not isinstance(sd, dict) or not isinstance(ctor, dict):
        raise artifact_error(path, what, "expected a state_dict and constructor arguments", rule)
    return payload
