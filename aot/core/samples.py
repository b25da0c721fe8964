"""Sample files and image grids, with numpy and PIL only (no torch import: these run in many small jobs)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from aot.core.checkpoint import atomic_write_bytes


def save_samples(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, lambda f: f.write(buf.getvalue()))


SAMPLE_RULES = ("sample", "sample_guided")


def load_samples(paths: list[str | Path]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict]]:
    """Concatenate sample shards -> (images, labels, seeds, metas); refuses overlapping seeds.

    A corrupt shard raises one line naming it and the rule that remakes it (``aot.core.artifacts.ArtifactError``).
    """
    from aot.core.artifacts import artifact_error, read_npz, reading

    imgs, labels, seeds, metas = [], [], [], []
    for p in paths:
        kind = "sample shard"
        z = read_npz(p, ["images", "labels", "seeds", "meta"], kind=kind, rule=SAMPLE_RULES)
        with reading(p, kind, SAMPLE_RULES):
            meta = json.loads(str(z["meta"]))
            n = len(z["images"])
            if z["images"].ndim != 4 or len(z["labels"]) != n or z["seeds"].shape != (n,):
                raise ValueError(f"expected images (N, C, H, W) with N labels and N seeds, got {z['images'].shape}, "
                                 f"{z['labels'].shape}, {z['seeds'].shape}")
        if not isinstance(meta, dict):
            raise artifact_error(p, kind, "meta is not a JSON object", SAMPLE_RULES)
        imgs.append(z["images"])
        labels.append(z["labels"])
        seeds.append(z["seeds"])
        metas.append(meta)
    seeds_all = np.concatenate(seeds)
    if len(np.unique(seeds_all)) != len(seeds_all):
        raise ValueError("sample shards overlap in seeds; each shard must cover a disjoint seed range")
    return np.concatenate(imgs), np.concatenate(labels), seeds_all, metas


def save_grid(path: str | Path, images: np.ndarray, nrow: int = 16, scale: int = 4) -> None:
    """The first nrow^2 uint8 images (N, C, H, W) as one PNG, nearest-neighbour upscaled so 8x8 digits show."""
    from PIL import Image

    images = np.asarray(images)
    n = min(len(images), nrow * nrow)
    c, h, w = images.shape[1:]
    rows = -(-n // nrow)
    canvas = np.zeros((rows * (h + 1) + 1, nrow * (w + 1) + 1, c), dtype=np.uint8)
    for i in range(n):
        r, q = divmod(i, nrow)
        canvas[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + q * (w + 1) : 1 + q * (w + 1) + w] = \
            images[i].transpose(1, 2, 0)
    img = Image.fromarray(canvas[..., 0] if c == 1 else canvas)
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(path, lambda f: f.write(buf.getvalue()))
