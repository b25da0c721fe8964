"""Sampling and FID-block throughput at paper size (a script, never a test).

Times the pipeline's own sampling stage (aot.generate.generate: one generator per seed, deterministic Heun) on
EDM's CIFAR-10 NCSN++ (random weights: the cost does not depend on them) at the paper's headline 35 NFE (rho 7,
18 steps) and at the sample rule's batch, then Inception-v3 pool features of the generated images at 299x299, and
the FID of one block against reference statistics; the FID-50k block time is extrapolated from the measured rates:

    block = 50000 / (sampling images/s) + 50000 / (feature images/s) + FID (stats + matrix square root, measured at
    the full 50000 x 2048)

The real Inception weights (clean-fid's TorchScript, 92 MB, downloaded on first use) cannot be assumed on a GPU host
without internet: with ``--inception`` the file given is timed (what an evaluate job runs); without it torchvision's
Inception-v3 with random weights (the same architecture and input size) stands in, and the output says which.

    python bench/sample_throughput.py --device cuda                        # 2000 images, batch 500
    python bench/sample_throughput.py --device cuda --cond --images 4000
    python bench/sample_throughput.py --dry                                # CPU: tiny network, 8 images
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from aot.core.checkpoint import save_checkpoint
from aot.eval.metrics import frechet_distance, gaussian_stats
from aot.models.networks import count_parameters
from aot.sampling.generate import generate
from aot.sampling.samplers import nfe
from aot.training.loop import build_denoiser
from aot.training.spec import TrainSpec

BLOCK = 50000  # FID-50k
TINY_NET = dict(model_channels=16, channel_mult=[1, 2], channel_mult_emb=1, num_blocks=1, attn_resolutions=[16],
                dropout=0.13)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_denoiser(path: Path, *, cond: bool, network: dict | None) -> int:
    """A denoiser checkpoint with the paper's NCSN++ (or ``network``) and seeded random weights; its parameter count."""
    spec = TrainSpec(arch="ncsnpp", cond=cond, augment_p=0.12, network=network or {})
    torch.manual_seed(0)
    net, ctor = build_denoiser(spec, {"num_classes": 10}, 32, 3)
    save_checkpoint(path, kind="denoiser", state_dict=net.state_dict(), ctor=ctor, config=vars(spec),
                    extra={"kimg": 0.0, "dataset": {"num_classes": 10}})
    return count_parameters(net)


class TorchvisionInception:
    """Inception-v3 pool features (2048) at 299x299 with random weights: the FID network's architecture and input,
    for timing only (never for a score)."""

    def __init__(self, device: torch.device, batch: int):
        from torchvision.models import inception_v3

        torch.manual_seed(0)
        self.model = inception_v3(weights=None, aux_logits=False, init_weights=False).eval().to(device)
        self.model.fc = torch.nn.Identity()
        self.device, self.batch = device, batch

    @torch.no_grad()
    def __call__(self, images: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(images), self.batch):
            x = torch.from_numpy(images[i : i + self.batch]).to(self.device).to(torch.float32)
            x = F.interpolate(x / 127.5 - 1, size=(299, 299), mode="bilinear", align_corners=False)
            out.append(self.model(x).cpu().numpy())
        return np.concatenate(out).astype(np.float64)


def timed(fn, device: torch.device):
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--cond", action="store_true", help="class-conditional network")
    p.add_argument("--images", type=int, default=2000, help="images timed (after one warm-up batch)")
    p.add_argument("--batch", type=int, default=500, help="images per forward pass (the configs' sample.batch)")
    p.add_argument("--rho", type=float, default=7.0)
    p.add_argument("--steps", type=int, default=18, help="Heun steps (NFE = 2 steps - 1; 18 -> 35)")
    p.add_argument("--inception", type=Path, default=None, help="clean-fid's inception-2015-12-05.pt, if at hand")
    p.add_argument("--inception-sha256", default=None, help="its trusted sha256 (else its .sha256 sidecar)")
    p.add_argument("--feature-batch", type=int, default=200, help="images per Inception pass (evaluate's batch)")
    p.add_argument("--dry", action="store_true", help="CPU smoke run: tiny network, 2 images, 2 steps, 64-d FID")
    args = p.parse_args()
    if args.dry:
        args.device, args.images, args.batch, args.feature_batch, args.steps = "cpu", 2, 2, 2, 2
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but CUDA is not available")

    with tempfile.TemporaryDirectory() as d:
        ckpt = Path(d) / "network.pt"
        params = random_denoiser(ckpt, cond=args.cond, network=TINY_NET if args.dry else None)
        kw = dict(rho=args.rho, steps=args.steps, batch=args.batch, device=args.device, progress=False)
        generate(ckpt, seeds=range(10**6, 10**6 + args.batch), **kw)  # warm-up: cuDNN autotuning, allocator
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        samples, t_sample = timed(lambda: generate(ckpt, seeds=range(args.images), **kw), device)
    images = samples["images"]
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")

    if args.inception is not None:
        from aot.eval.fid import InceptionFeatures

        features = InceptionFeatures(args.inception, device=args.device, batch_size=args.feature_batch,
                                     sha256=args.inception_sha256)
        which = f"clean-fid's TorchScript Inception ({args.inception.name})"
    else:
        features = TorchvisionInception(device, args.feature_batch)
        which = "torchvision Inception-v3, random weights (the same architecture; the real file was not given)"
    features(images[: args.feature_batch])  # warm-up
    feats, t_feat = timed(lambda: features(images), device)

    # FID of a full block: stats of 50000 x 2048 features and the Frechet distance, on synthetic features
    # (--dry: 64 x 64, which only checks the path).
    rng = np.random.default_rng(0)
    n_fid, dim = (64, 64) if args.dry else (BLOCK, feats.shape[1])
    big = rng.standard_normal((n_fid, dim)) * 0.1 + feats.mean(0)[:dim]
    mu_ref, sigma_ref = gaussian_stats(rng.standard_normal((n_fid, dim)) * 0.1)
    t0 = time.perf_counter()
    frechet_distance(*gaussian_stats(big), mu_ref, sigma_ref)
    t_fid = time.perf_counter() - t0

    img_s, feat_s = args.images / t_sample, args.images / t_feat
    block_s = BLOCK / img_s + BLOCK / feat_s + t_fid
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"# {'DRY RUN (sizes too small to mean anything); ' if args.dry else ''}{args.device} ({name}), "
          f"torch {torch.__version__}; NCSN++ {params / 1e6:.2f}M parameters "
          f"({'cond' if args.cond else 'uncond'}, random weights); Heun rho {args.rho:g}, {args.steps} steps "
          f"= {nfe(args.steps)} NFE; {args.images} images timed in batches of {args.batch}; features: {which}")
    print("| sampling images/s | peak GPU GiB (sampling) | feature images/s | FID stats + sqrtm (50k x 2048) | "
          "FID-50k block (extrapolated) |")
    print("|---|---|---|---|---|")
    print(f"| {img_s:.1f} | {peak:.2f} | {feat_s:.1f} | {t_fid:.1f} s | {block_s / 60:.1f} min "
          f"({BLOCK / img_s / 60:.1f} sampling + {BLOCK / feat_s / 60:.1f} features + {t_fid / 60:.2f} FID) |")


if __name__ == "__main__":
    main()
