"""What a config describes before any data exists: each dataset source's image shape and classes, the keys only
some sources read, image sources a rule writes, and the names of models, guided models and (rho, steps) settings.
"""

from __future__ import annotations

import os
from pathlib import Path

from aot.core.defaults import TEST_FRACTION

# Image shape and classes of each dataset source (what the networks are built for), known before any data exists.
SOURCE_SHAPES = {"digits": dict(channels=1, resolution=8), "cifar10": dict(channels=3, resolution=32),
                 "synthetic": dict(channels=3, resolution=32)}


DATASET_CLASSES = 10  # every built-in source has 10 classes (an images source: as many as its labels give)


# Keys of ``dataset`` that only some sources read, with their defaults there (CIFAR-10 has an official split).
DATASET_SOURCE_KEYS = {
    "digits": {"test_fraction": TEST_FRACTION, "split_seed": 0},
    "synthetic": {"split_seed": 0},
    "cifar10": {"archive": None},
    "images": {"path": None, "resolution": None, "channels": None, "num_classes": None, "test_fraction": TEST_FRACTION,
               "split_seed": 0},
}


# Image sources that a rule of the workflow writes (workflow/rules/data.smk), with what they hold, so a config can be
# checked and described before they exist. Snakemake tracks them as that rule's output (no fingerprint).
GENERATED_SOURCES = {
    "resources/digits-png": dict(channels=1, resolution=8, num_classes=10, labeled=True),
    "resources/digits-png.zip": dict(channels=1, resolution=8, num_classes=10, labeled=True),
}


def generated_source(path: str) -> str | None:
    """The key of GENERATED_SOURCES that ``path`` names (e.g. ``./resources/digits-png/``), else None."""
    norm = os.path.normpath(path)
    return norm if norm in GENERATED_SOURCES else None


def image_source_info(d: dict) -> dict:
    """channels, resolution, num_classes, labeled and fingerprint of the ``dataset`` of an images source, from its
    listing and its first image's header (:mod:`aot.data.images`; nothing decoded, nothing written). A source that a
    rule writes and that does not exist yet has its known shape and no fingerprint. Raises ImageSourceError."""
    from aot.data.images import list_source, probe_shape

    generated = generated_source(d["path"])
    declared = {k: d.get(k) for k in ("channels", "resolution", "num_classes")}
    if not Path(d["path"]).exists() and None not in declared.values() and generated is None:
        # Declared in full: the config can be checked and shown (show-config) before the images are there; the
        # prepare job then needs the path and checks the images against these values.
        return dict(declared, labeled=declared["num_classes"] > 0, fingerprint=None)
    if not Path(d["path"]).exists() and generated is None and any(v is not None for v in declared.values()):
        key = next(k for k in ("resolution", "channels", "num_classes") if declared[k] is None)
        raise ValueError(f"config error: dataset.{key}: {d['path']} does not exist yet, so the images' shape must be "
                         "declared in full (dataset.resolution, channels and num_classes); give it, or point "
                         "dataset.path at the images")
    if generated is not None and not Path(d["path"]).exists():
        known = GENERATED_SOURCES[generated]
        return dict(known, resolution=d.get("resolution") or known["resolution"], fingerprint=None)
    listing = list_source(d["path"])
    shape = probe_shape(listing, d.get("resolution"))
    info = dict(shape, num_classes=listing.num_classes, labeled=listing.labeled,
                fingerprint=None if generated else listing.fingerprint)
    found = dict(channels=info["channels"], num_classes=info["num_classes"] if info["labeled"] else 0)  # 0: unlabeled
    for key in ("channels", "num_classes"):
        if declared[key] is not None and declared[key] != found[key]:
            raise ValueError(f"config error: dataset.{key}: {declared[key]} declared, but {d['path']} has "
                             f"{found[key]}{' (unlabeled)' if key == 'num_classes' and not found[key] else ''}; "
                             f"correct dataset.{key} or remove it")
    return info


def dataset_shape(d: dict) -> dict:
    """channels, resolution and num_classes of the images the networks are built for, known before any job."""
    if d["source"] == "images":
        info = image_source_info(d)
        return dict(channels=info["channels"], resolution=info["resolution"], num_classes=info["num_classes"])
    return dict(SOURCE_SHAPES[d["source"]], num_classes=DATASET_CLASSES)


def fill_dataset_defaults(d: dict) -> None:
    for key, value in DATASET_SOURCE_KEYS.get(d["source"], {}).items():
        d.setdefault(key, value)


def model_names(cfg: dict, *, imported: bool | None = None) -> list[str]:
    """Models: one per arm and conditioning, e.g. 'aot-cond'. ``imported`` True/False keeps only the arms
    whose networks are imported from released checkpoints / trained here."""
    return [
        f"{arm}-{cond}"
        for arm, a in cfg["arms"].items()
        for cond in cfg["conditioning"]
        if imported is None or imported == ("checkpoints" in a)
    ]


def guided_names(cfg: dict) -> list[str]:
    """Guided models: one per Discriminator Guidance run and conditioning, e.g. 'aot_dg-cond'."""
    g = cfg.get("guidance", {})
    if not g.get("enabled", True):
        return []
    return [f"{run}-{cond}" for run in g.get("runs", {}) for cond in cfg["conditioning"]]


def setting_name(rho: float, steps: int, churn: dict | None = None) -> str:
    """Sampler setting as a path component, e.g. rho7-steps18 (rho 7.5 -> rho7.5); EDM's stochastic sampler adds its
    S_churn, e.g. rho7-steps256-churn40 (a grid holds each (rho, steps) once, so the name is unique)."""
    return f"rho{rho:g}-steps{steps}" + (f"-churn{churn['S_churn']:g}" if churn else "")
