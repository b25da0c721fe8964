"""A private copy of the workflow (Snakefile, rules, configs) for tests that run Snakemake for real, so their
results/ and .snakemake/ never touch the checkout."""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def copy_workflow(dest: Path) -> Path:
    """Copy the Snakefile, workflow/ and config/ into ``dest`` (created if needed); return ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "Snakefile", dest)
    shutil.copytree(ROOT / "workflow", dest / "workflow")
    shutil.copytree(ROOT / "config", dest / "config")
    return dest
