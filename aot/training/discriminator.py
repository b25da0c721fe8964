"""Training the Discriminator Guidance discriminator (with or without AOT noise pairing); the network is in
:mod:`aot.models.discriminator`.

Network (docs/method.md §3.2-3.3): logits = head(features(x_vp, tau), tau[, class]). At paper scale the features
are the frozen ADM 32x32 classifier's middle-block output (512 x 8 x 8, ``extractor="adm32"``, weights from DG's
``32x32_classifier.pt``) and the head is DG's small ADM encoder; at 64x64, ``extractor="adm64"`` reads features of
the same shape from guided-diffusion's ``64x64_classifier.pt``, fed the cosine schedule's time
(:mod:`aot.models.discriminator`). The embedded default has no pretrained extractor for 8x8 digits, so
``extractor="none"`` feeds the perturbed image to the head directly.

Training (docs/method.md §3.4, DG's train.py): real images (target 1) and the score model's samples (target 0),
equally many, shuffled into batches; each batch is diffused by the VP-SDE at importance-sampled times,
x_t = alpha(t) x + s(t) z, and scored with binary cross-entropy; Adam (lr 3e-4, weight decay 1e-7).
With ``pairing="aot"`` the perturbation noise z of each batch is assigned to the batch's clean images by the
exact AOT assignment (per class for a conditional discriminator), the paper's "discriminator trained with AOT"
(Table 3; docs/method.md §3.6: pool = batch, real and fake paired jointly; our choice, no public code exists).

Checkpoints hold the head's state_dict and the constructor arguments; a pretrained extractor is referenced by
path and sha256 (it is large and never trained here) and reloaded from that file.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from aot.core.artifacts import read_state
from aot.core.checkpoint import atomic_write_bytes, save_checkpoint, write_json
from aot.core.download import sha256_file
from aot.data.datasets import Dataset, to_float
from aot.models.adm import ADM_CLASSIFIERS, DG_HEAD, DG_HEAD_COND
from aot.models.dg_assets import CLASSIFIERS
from aot.models.discriminator import discriminator_from_ctor
from aot.models.vp import T_MIN, perturb, sample_vp_time
from aot.training.pairing import pair_noise

EXTRACTORS = ("none", *ADM_CLASSIFIERS)  # none | adm32 | adm64
PAIRINGS = ("none", "aot")

# ----------------------------------------------------------------------------
# Constructor arguments.


def build_ctor(spec: DiscSpec, *, channels: int, resolution: int, num_classes: int) -> dict[str, Any]:
    """Constructor arguments for ``spec`` on data of the given shape (plain data, saved in the checkpoint), with the
    extractor's weights file and its sha256 (the file must exist)."""
    ctor = network_ctor(spec, channels=channels, resolution=resolution, num_classes=num_classes)
    if ctor["extractor"] is not None:
        path = Path(spec.extractor_weights)
        if not spec.extractor_weights or not path.is_file():
            raise FileNotFoundError(
                f"guidance.extractor_weights: ADM classifier weights not found at {str(path)!r}; download "
                f"{CLASSIFIERS[spec.extractor].file} (python -m aot fetch-dg-classifier --extractor {spec.extractor}; "
                "docs/method.md §3.7) and set the key to its path"
            )
        ctor.update(extractor_weights=str(path), extractor_sha256=sha256_file(path))
    return ctor


def network_ctor(spec: DiscSpec, *, channels: int, resolution: int, num_classes: int) -> dict[str, Any]:
    """The network part of :func:`build_ctor`: head, extractor and time arguments (no file is read)."""
    if spec.extractor == "none":
        head = dict(DG_HEAD, image_size=resolution, in_channels=channels)
        extractor, time = None, "vp"
    else:
        head, extractor, clf = dict(DG_HEAD), dict(ADM_CLASSIFIERS[spec.extractor]), CLASSIFIERS[spec.extractor]
        time = clf.time
        if (channels, resolution) != (extractor["in_channels"], extractor["image_size"]):
            raise ValueError(f"extractor={spec.extractor} needs {clf.channels}x{clf.resolution}x{clf.resolution} "
                             f"images, the data is {channels}x{resolution}x{resolution}")
    head.update(spec.head)
    head["out_channels"] = 1
    if not spec.cond:
        head["num_classes"] = None
    elif "num_classes" not in spec.head:  # DG's conditional head embeds 1000 classes; ours the dataset's
        head["num_classes"] = DG_HEAD_COND["num_classes"] if extractor is not None else num_classes
    return dict(head=head, extractor=extractor, extractor_weights=None, extractor_sha256=None, time=time)


# ----------------------------------------------------------------------------
# Training.


@dataclass(frozen=True)
class DiscSpec:
    """Everything that determines a trained discriminator (its digest names the resumable state)."""

    cond: bool = False
    pairing: str = "none"  # perturbation noise: "none" (DG) | "aot" (exact assignment per batch, per class if cond)
    epochs: int = 50  # DG default
    batch: int = 128
    lr: float = 3e-4
    weight_decay: float = 1e-7
    seed: int = 0
    num_data: int = 0  # real and fake images used, each; 0 = as many as both sets have
    t_min: float = T_MIN
    extractor: str = "none"  # "none" | "adm32" | "adm64"
    extractor_weights: str = ""  # the classifier file: DG's 32x32_classifier.pt, guided-diffusion's 64x64_classifier.pt
    head: dict = field(default_factory=dict)  # overrides of aot.models.adm.DG_HEAD
    device: str = "cpu"

    @classmethod
    def from_dict(cls, d: dict) -> DiscSpec:
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown discriminator spec keys: {sorted(unknown)}")
        spec = cls(**d)
        if spec.pairing not in PAIRINGS:
            raise ValueError(f"pairing={spec.pairing!r} is unknown; valid choices: {', '.join(PAIRINGS)}")
        if spec.extractor not in EXTRACTORS:
            raise ValueError(f"extractor={spec.extractor!r} is unknown; valid choices: {', '.join(EXTRACTORS)}")
        return spec

    def digest(self) -> str:
        """Names the resumable state: everything but ``epochs`` (more epochs continue a run) and ``device``."""
        d = {k: v for k, v in asdict(self).items() if k not in ("device", "epochs")}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def training_set(real: Dataset, fake_images: np.ndarray, fake_labels: np.ndarray, num_data: int = 0):
    """Real (target 1) then fake (target 0) images in [-1, 1], their targets and class labels."""
    n = min(len(real.train_images), len(fake_images))
    n = min(n, num_data) if num_data else n
    if n == 0:
        raise ValueError("discriminator training needs at least one real and one generated image")
    if (fake_labels[:n] < 0).any() and not (fake_labels[:n] < 0).all():
        raise ValueError("generated samples mix labelled and unlabelled images")
    x = to_float(np.concatenate([real.train_images[:n], fake_images[:n]]))
    target = torch.cat([torch.ones(n), torch.zeros(n)])
    labels = torch.as_tensor(np.concatenate([real.train_labels[:n], fake_labels[:n]]), dtype=torch.int64)
    return x, target, labels


def train_discriminator(
    spec: DiscSpec,
    real: Dataset,
    fake_images: np.ndarray,
    fake_labels: np.ndarray,
    *,
    out: str | Path,
    stats_out: str | Path,
    state_dir: str | Path,
    progress: bool = True,
    model_name: str = "",
) -> dict:
    """Train (or resume) one discriminator; write its checkpoint to ``out`` and a summary JSON to ``stats_out``.

    The resumable state (head, optimizer, generator, history) is written after every epoch to
    ``state_dir/<spec digest>-<data digest>/disc-state.pt``; a rerun with the same spec and the same real and
    generated images continues from it (give each model its own ``state_dir``).
    """
    if spec.cond and (fake_labels < 0).any():
        raise ValueError("a conditional discriminator needs labelled samples (sample a conditional model)")
    x_all, target_all, labels_all = training_set(real, fake_images, fake_labels, spec.num_data)
    if len(x_all) < spec.batch:
        raise ValueError(f"guidance.train.batch={spec.batch} exceeds the {len(x_all)} training images; lower it")
    ctor = build_ctor(spec, channels=real.channels, resolution=real.resolution, num_classes=real.num_classes)
    # The state is keyed by the spec and the exact training images, so a changed sample set never resumes.
    n = len(x_all) // 2
    data_digest = hashlib.sha256(np.ascontiguousarray(real.train_images[:n]).tobytes()
                                 + np.ascontiguousarray(fake_images[:n]).tobytes()
                                 + labels_all.numpy().tobytes()).hexdigest()[:12]
    state_path = Path(state_dir) / f"{spec.digest()}-{data_digest}" / "disc-state.pt"
    with torch.random.fork_rng(devices=[]):  # the initial weights (and any dropout) follow spec.seed only
        torch.manual_seed(spec.seed)
        return _train(spec, ctor, x_all, target_all, labels_all, out=out, stats_out=stats_out,
                      state_path=state_path, progress=progress, model_name=model_name)


def _check_finite(loss_sum: float, head: nn.Module, *, epoch: int, spec: DiscSpec, model_name: str,
                  state_path: Path | None, history: list[dict]) -> None:
    """After each epoch, before its state is saved: the epoch's loss and the head's weights must be finite, else
    stop with one line (DivergenceError) and keep the last good state. One fused check, no random draw."""
    from aot.core.numerics import DivergenceError, finite_flags

    bad_weights = not finite_flags([], head)[1].item()
    what = [w for w, b in (("loss", not math.isfinite(loss_sum)), ("head weights", bad_weights)) if b]
    if not what:
        return
    kept = (f"the last good state (epoch {len(history)}) is kept in {state_path}" if state_path is not None
            else "no resumable state was saved")
    raise DivergenceError(f"discriminator {model_name or 'training'} diverged in epoch {epoch}: non-finite "
                          f"{' and '.join(what)}; lower guidance.train.lr (now {spec.lr:g}) or check the generated "
                          f"samples; {kept}; no discriminator was written")


def _train(spec: DiscSpec, ctor: dict, x_all: torch.Tensor, target_all: torch.Tensor, labels_all: torch.Tensor, *,
           out, stats_out, state_path: Path, progress: bool, model_name: str) -> dict:
    device = torch.device(spec.device)
    disc = discriminator_from_ctor(ctor).to(device)
    opt = torch.optim.Adam(disc.head.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    gen = torch.Generator().manual_seed(spec.seed)
    history: list[dict] = []

    if state_path.is_file():
        state = read_state(state_path, kind="discriminator state")
        disc.head.load_state_dict(state["head"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        history = json.loads(state["history"])
        print(f"resuming {state_path} after epoch {len(history)}", file=sys.stderr)

    steps_per_epoch = len(x_all) // spec.batch  # drop_last, as DG
    for epoch in range(len(history), spec.epochs):
        t0 = time.perf_counter()
        disc.train()
        order = torch.randperm(len(x_all), generator=gen)
        loss_sum = correct = seen = 0.0
        d_paired = d_indep = 0.0
        batches = range(steps_per_epoch)
        if progress:
            from tqdm import tqdm

            batches = tqdm(batches, desc=f"discriminator epoch {epoch + 1}/{spec.epochs}", unit="batch",
                           file=sys.stderr, mininterval=1.0 if sys.stderr.isatty() else 30.0)
        for b in batches:
            idx = order[b * spec.batch : (b + 1) * spec.batch]
            x, target, labels = x_all[idx], target_all[idx], labels_all[idx]
            # Data perturbation (VP-SDE at importance-sampled times), AOT-paired noise if asked.
            t = sample_vp_time(len(idx), gen, spec.t_min)
            z = torch.randn(x.shape, generator=gen)
            if spec.pairing == "aot":
                p = pair_noise(x, z, labels if spec.cond else None, method="aot", per_class=spec.cond, threads=1)
                z = p.noise
                d_paired, d_indep = d_paired + p.mean_dist_paired, d_indep + p.mean_dist_independent
            x_t = perturb(x, t, z).to(device)
            logits = disc(x_t, t.to(device), labels.to(device) if spec.cond else None)
            loss = F.binary_cross_entropy_with_logits(logits, target.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(idx)
            correct += ((logits.detach() > 0).float().cpu() == target).sum().item()
            seen += len(idx)
        _check_finite(loss_sum, disc.head, epoch=epoch + 1, spec=spec, model_name=model_name,
                      state_path=state_path if state_path.is_file() else None, history=history)
        entry = dict(epoch=epoch + 1, loss=loss_sum / seen, accuracy=correct / seen,
                     seconds=time.perf_counter() - t0)
        if spec.pairing == "aot":
            entry.update(mean_dist_paired=d_paired / steps_per_epoch, mean_dist_independent=d_indep / steps_per_epoch)
        history.append(entry)
        print(json.dumps(entry), file=sys.stderr)
        state = dict(head=disc.head.state_dict(), opt=opt.state_dict(), generator=gen.get_state(),
                     torch_rng=torch.get_rng_state(), history=json.dumps(history))
        state_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(state_path, lambda f, s=state: torch.save(s, f))

    config = asdict(spec)
    save_checkpoint(out, kind="discriminator", state_dict=disc.head.state_dict(), ctor=ctor, config=config)
    last = history[-1]
    summary = dict(model=model_name, spec=config, images_per_class=len(x_all) // 2, epochs=len(history),
                   final_loss=last["loss"], final_accuracy=last["accuracy"], history=history,
                   parameters=sum(p.numel() for p in disc.head.parameters()))
    if spec.pairing == "aot":
        paired = sum(h["mean_dist_paired"] for h in history) / len(history)
        indep = sum(h["mean_dist_independent"] for h in history) / len(history)
        summary.update(mean_dist_paired=paired, mean_dist_independent=indep, dist_reduction=1 - paired / indep)
    write_json(stats_out, summary)
    return summary
