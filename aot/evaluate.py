"""Scoring stages for the embedded default: a feature network trained on the dataset's training split, its
reference statistics, and FD/KID of sample sets in its feature space.

These numbers are "FD (featnet-v1)", a Frechet distance in a small classifier's feature space: they rank
models trained on the same small dataset but are NOT comparable to published Inception FIDs.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import torch

from aot.checkpoint import atomic_write_bytes, load_checkpoint, save_checkpoint, write_json
from aot.data import load_dataset


def fit_featnet(dataset: str | Path, out: str | Path, ref_out: str | Path, *, epochs: int, batch_size: int,
                lr: float, seed: int, progress: bool = True) -> dict:
    """Train the feature net on the training split; write it and the reference features of that split."""
    from aot.featnet import extract_features, train_featnet

    ds = load_dataset(dataset)
    model, ctor, info = train_featnet(ds.train_images, ds.train_labels, ds.test_images, ds.test_labels,
                                      epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, progress=progress)
    info = {**info, "dataset": ds.meta}
    save_checkpoint(out, kind="featnet", state_dict=model.state_dict(), ctor=ctor,
                    config=dict(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed), extra=info)
    feats = extract_features(model, ds.train_images)
    buf = io.BytesIO()
    np.savez(buf, features=feats, name=np.array(info["name"]))
    atomic_write_bytes(ref_out, lambda f: f.write(buf.getvalue()))
    return info


def load_featnet(path: str | Path):
    from aot.featnet import FeatureNet

    ckpt = load_checkpoint(path, kind="featnet")
    model = FeatureNet(**ckpt["ctor"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval().requires_grad_(False), ckpt


def score(sample_paths: list[str | Path], featnet: str | Path, ref: str | Path, out: str | Path, *,
          model: str = "", kid_subsets: int = 100, kid_subset_size: int = 1000) -> dict:
    """FD and KID of the concatenated sample shards against the training split, in featnet space."""
    from aot.featnet import extract_features
    from aot.generate import load_samples
    from aot.metrics import frechet_distance, gaussian_stats, kernel_inception_distance

    t0 = time.perf_counter()
    images, labels, seeds, metas = load_samples(sample_paths)
    net, ckpt = load_featnet(featnet)
    with np.load(ref, allow_pickle=False) as z:
        ref_feats = z["features"]
    feats = extract_features(net, images)
    fd = frechet_distance(*gaussian_stats(feats), *gaussian_stats(ref_feats))
    size = min(kid_subset_size, len(feats), len(ref_feats))
    kid_mean, kid_std = kernel_inception_distance(feats, ref_feats, num_subsets=kid_subsets, max_subset_size=size)
    # Conditional models: how often the feature net recognises the class the sample was asked for.
    agree = None
    if (labels >= 0).all():
        with torch.no_grad():
            from aot.data import to_float

            logits = torch.cat([net(to_float(images[i : i + 500])) for i in range(0, len(images), 500)])
        agree = float((logits.argmax(1).numpy() == labels).mean())
    m = metas[0]
    result = dict(model=model, metric="FD", feature_net=ckpt["extra"]["name"], fd=float(fd), kid=float(kid_mean),
                  kid_std=float(kid_std), kid_subset_size=size, class_agreement=agree,
                  num_images=int(len(images)), seed_first=int(seeds.min()), seed_last=int(seeds.max()),
                  rho=m["rho"], steps=m["steps"], nfe=m["nfe"], pairing=m["train"]["pairing"],
                  cond=bool(m["train"]["cond"]), featnet_test_accuracy=ckpt["extra"]["test_accuracy"],
                  seconds=time.perf_counter() - t0)
    write_json(out, result)
    return result


def read_json(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())
