"""Where the CIFAR-10 python batches are in an extracted archive: shared by the config check (before any job)
and the loader, so both accept exactly the same folders. Pure Python: the Snakefile imports it."""

from __future__ import annotations

from pathlib import Path

CIFAR10_BATCHES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")
CIFAR10_FOLDER = "cifar-10-batches-py"


def cifar10_batch_files(folder: str | Path) -> dict[str, Path]:
    """The CIFAR-10 batches of an extracted archive: in ``folder`` itself or in a folder right below it
    (cifar-10-batches-py/ first, then the others by name); a batch found in neither is left out. Two levels at
    most, so that a wrong folder (a home directory, /) is answered at once."""
    folder = Path(folder)
    below = sorted((p for p in folder.iterdir() if p.is_dir()), key=lambda p: (p.name != CIFAR10_FOLDER, p.name))
    out = {}
    for name in CIFAR10_BATCHES:
        hit = next((d / name for d in (folder, *below) if (d / name).is_file()), None)
        if hit is not None:
            out[name] = hit
    return out
