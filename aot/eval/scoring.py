"""Scoring stages for the embedded default: a feature network trained on the dataset's training split, its
reference statistics, and FD/KID of sample sets in its feature space.

These numbers are "FD (featnet-v1)", a Frechet distance in a small classifier's feature space: they rank
models trained on the same small dataset but are NOT comparable to published Inception FIDs.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import torch

from aot.core.artifacts import read_npz
from aot.core.checkpoint import atomic_write_bytes, load_checkpoint, save_checkpoint, write_json
from aot.data.datasets import load_dataset


def fit_featnet(dataset: str | Path, out: str | Path, ref_out: str | Path, *, epochs: int, batch_size: int,
                lr: float, seed: int, progress: bool = True) -> dict:
    """Train the feature net on the training split; write it and the reference features of that split."""
    from aot.eval.featnet import extract_features, train_featnet

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
    from aot.eval.featnet import FeatureNet

    ckpt = load_checkpoint(path, kind="featnet")
    model = FeatureNet(**ckpt["ctor"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval().requires_grad_(False), ckpt


def featnet_scores(images: np.ndarray, labels: np.ndarray, featnet: str | Path, ref: str | Path, *,
                   kid_subsets: int, kid_subset_size: int, fd_jackknife: int = 50,
                   seeds: np.ndarray | None = None, features_out: str | Path | None = None) -> dict:
    """FD and KID against the training split in the feature net's space, and class agreement.

    ``fd_jackknife`` > 0: also the FD's standard deviation by a delete-a-group jackknife with that many groups of
    generated images (``metrics.frechet_distance_jackknife``, seed 0): how far the score would move with other seeds.
    ``features_out``: also write the generated images' features with their ``seeds`` and the reference statistics
    (npz), so that the tables stage can compare two models sampled at the same seeds (``metrics.
    frechet_distance_difference``).
    """
    from aot.data.datasets import to_float
    from aot.eval.featnet import extract_features
    from aot.eval.metrics import frechet_distance, frechet_distance_jackknife, gaussian_stats, kernel_inception_distance

    if fd_jackknife == 1 or fd_jackknife < 0:
        raise ValueError(f"fd_jackknife={fd_jackknife}: use 0 (off) or at least 2 groups")
    net, ckpt = load_featnet(featnet)
    ref_feats = read_npz(ref, ["features"], kind="reference features", rule="featnet")["features"]
    feats = extract_features(net, images)
    mu_ref, sigma_ref = gaussian_stats(ref_feats)
    fd = frechet_distance(*gaussian_stats(feats), mu_ref, sigma_ref)
    if features_out is not None:
        if seeds is None or len(seeds) != len(feats):
            raise ValueError("features_out needs one seed per image")
        buf = io.BytesIO()
        np.savez(buf, features=feats.astype(np.float32), seeds=np.asarray(seeds, np.int64), mu_ref=mu_ref,
                 sigma_ref=sigma_ref, feature_net=np.array(ckpt["extra"]["name"]))
        atomic_write_bytes(features_out, lambda f: f.write(buf.getvalue()))
    fd_std = None
    if fd_jackknife:
        fd_std = frechet_distance_jackknife(feats, mu_ref, sigma_ref, groups=fd_jackknife)[0]
    size = min(kid_subset_size, len(feats), len(ref_feats))
    kid_mean, kid_std = kernel_inception_distance(feats, ref_feats, num_subsets=kid_subsets, max_subset_size=size)
    # Conditional models: how often the feature net recognises the class the sample was asked for.
    agree = None
    if (labels >= 0).all():
        with torch.no_grad():
            logits = torch.cat([net(to_float(images[i : i + 500])) for i in range(0, len(images), 500)])
        agree = float((logits.argmax(1).numpy() == labels).mean())
    return dict(metric=f"FD ({ckpt['extra']['name']})", value=float(fd), value_std=fd_std, fd=float(fd),
                fd_std=fd_std, fd_jackknife=fd_jackknife, kid=float(kid_mean),
                kid_std=float(kid_std), kid_subset_size=size, class_agreement=agree,
                feature_net=ckpt["extra"]["name"], featnet_test_accuracy=ckpt["extra"]["test_accuracy"])


def inception_scores(images: np.ndarray, seeds: np.ndarray, fid_ref: str | Path, *, weights: str | None,
                     block: int, device: str, sha256: str | None = None) -> dict:
    """Inception FID (clean-fid legacy_tensorflow) per disjoint block of seeds; min and mean, as the paper."""
    from aot.eval.fid import InceptionFeatures, fid_blocks, inception_weights
    from aot.eval.metrics import load_stats

    mu, sigma, _ = load_stats(fid_ref)
    features = InceptionFeatures(inception_weights(weights), device=device, sha256=sha256)
    res = fid_blocks(images, seeds, features, mu, sigma, block=block)
    blocks = res["fid_blocks"]  # spread over disjoint seed blocks (none with a single block)
    size = f"{block // 1000}k" if block % 1000 == 0 else str(block)  # FID-50k; a rehearsal's FID-4
    return dict(metric=f"FID-{size} (Inception, clean-fid legacy_tensorflow), min of "
                f"{len(blocks)}", value=res["fid_min"],
                value_std=float(np.std(blocks, ddof=1)) if len(blocks) > 1 else None, **res)


def refuse_constant(images: np.ndarray, sample_paths: list[str | Path], model: str = "") -> None:
    """A sample set whose images are all identical (e.g. all black: a non-finite guidance weight) would still get
    a plausible-looking FD; refuse it with one line naming the files and the model."""
    flat = np.asarray(images).reshape(len(images), -1)
    if len(flat) == 0:
        return
    constant = bool((flat[0] == flat[0, 0]).all())
    if len(flat) == 1 and not constant:
        return
    for i in range(0, len(flat), 4096):  # real samples differ within the first block: cheap
        if not (flat[i : i + 4096] == flat[0]).all():
            return
    names = ", ".join(map(str, sample_paths[:3])) + (f" (+{len(sample_paths) - 3} more)" if len(sample_paths) > 3
                                                       else "")
    what = f"constant (every pixel {flat[0, 0]})" if constant else "identical"
    raise ValueError(f"{names}: all {len(flat)} sample images of model {model or '?'} are {what}; the sampler or its "
                     "guidance produced garbage (non-finite weights?): fix and resample instead of scoring them")


def score(sample_paths: list[str | Path], out: str | Path, *, metrics: list[str], model: str = "",
          featnet: str | Path | None = None, ref: str | Path | None = None, kid_subsets: int = 100,
          kid_subset_size: int = 1000, fd_jackknife: int = 50, features_out: str | Path | None = None,
          fid_ref: str | Path | None = None,
          inception_weights: str | None = None, inception_sha256: str | None = None,
          fid_block: int = 50000, device: str = "cpu") -> dict:
    """Score the concatenated sample shards with each requested metric; write one JSON."""
    from aot.core.samples import load_samples

    t0 = time.perf_counter()
    images, labels, seeds, metas = load_samples(sample_paths)
    refuse_constant(images, sample_paths, model)
    scores = {}
    for name in metrics:
        if name == "featnet":
            scores[name] = featnet_scores(images, labels, featnet, ref, kid_subsets=kid_subsets,
                                          kid_subset_size=kid_subset_size, fd_jackknife=fd_jackknife,
                                          seeds=seeds, features_out=features_out)
        elif name == "inception":
            scores[name] = inception_scores(images, seeds, fid_ref, weights=inception_weights, block=fid_block,
                                            device=device, sha256=inception_sha256)
        else:
            raise ValueError(f"unknown metric {name!r}; valid: featnet, inception")
    m = metas[0]
    result = dict(model=model, num_images=int(len(images)), seed_first=int(seeds.min()),
                  seed_last=int(seeds.max()), rho=m["rho"], steps=m["steps"], nfe=m["nfe"],
                  pairing=m["train"]["pairing"], cond=bool(m["train"]["cond"]), guidance=m.get("guidance"),
                  checkpoint=m.get("checkpoint"), **({"churn": m["churn"]} if "churn" in m else {}),
                  scores=scores,
                  seconds=time.perf_counter() - t0)
    write_json(out, result)
    return result


def fid_reference(source: str, out: str | Path, *, dataset: str | Path | None = None, weights: str | None = None,
                  device: str = "cpu", sha256: str | None = None) -> dict:
    """Inception reference statistics: clean-fid's CIFAR-10 train stats, a local npz, or the prepared
    dataset's training split (computed here once; the DAG caches the file)."""
    from aot.eval.fid import InceptionFeatures, dataset_stats, inception_weights, reference_stats
    from aot.eval.metrics import save_stats

    if source == "dataset":
        ds = load_dataset(dataset)
        features = InceptionFeatures(inception_weights(weights), device=device, sha256=sha256)
        mu, sigma = dataset_stats(ds.train_images, features)
        meta = dict(source="dataset", dataset=ds.meta, num_images=int(len(ds.train_images)))
    elif source == "cifar10":
        mu, sigma = reference_stats("cifar10")
        meta = dict(source="clean-fid cifar10 legacy_tensorflow train 32")
    else:
        mu, sigma = reference_stats(path=source)
        meta = dict(source=str(source))
    save_stats(out, mu, sigma, **meta)
    return meta
