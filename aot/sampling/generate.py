"""The sampling stage: a trained denoiser + a (rho, steps) setting + a seed range -> an npz of uint8 images.

Output format (``.npz``): ``images`` uint8 (N, C, H, W), ``labels`` int64 (N,) (-1 when unconditional),
``seeds`` int64 (N,), ``meta`` 0-d str (JSON: rho, steps, NFE, sigma range, checkpoint). Image i depends only on
seed i (one generator per seed), so any seed range can be split into shards and sampled anywhere.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from aot.core.defaults import SIGMA_MAX, SIGMA_MIN
from aot.data.datasets import to_uint8
from aot.sampling.samplers import (
    edm_churn_gammas,
    heun_sample,
    karras_sigmas,
    nfe,
    seed_generators,
    seeded_latents,
)


def generate(
    ckpt_path: str | Path,
    *,
    rho: float,
    steps: int,
    seeds: range,
    batch: int = 500,
    sigma_min: float = SIGMA_MIN,
    sigma_max: float = SIGMA_MAX,
    device: str = "cpu",
    progress: bool = True,
    disc_path: str | Path | None = None,
    dg_weight: float = 0.0,
    dg_weight_2nd: float = 0.0,
    dg_time_min: float = 0.01,
    dg_time_max: float = 1.0,
    dg_boosting: bool = False,
    churn: dict | None = None,
) -> dict[str, np.ndarray]:
    """Sample ``seeds`` with Heun at (rho, steps); with ``disc_path``, under Discriminator Guidance (docs/method.md §3.5):
    weight ``dg_weight`` on the Euler evaluation, ``dg_weight_2nd`` on the 2nd order correction (DG: 0), and with
    ``dg_boosting`` DG's boosting (``guidance.boosted_heun_sample``; its churn noise comes from each seed's stream).
    ``churn`` = {S_churn, S_min, S_max, S_noise} is EDM's stochastic sampler (Algorithm 2; EDM's ImageNet-64
    setting): before each step with S_min <= sigma_i <= S_max the sample is re-noised to sigma_i (1 + gamma) with
    gamma = min(S_churn / steps, sqrt(2) - 1) and noise S_noise * N(0, I) drawn from each seed's stream."""
    from aot.core.numerics import DivergenceError
    from aot.models.denoiser import load_denoiser

    net, ckpt = load_denoiser(ckpt_path, device=device)
    denoise, denoise_2nd, guidance = net, net, None
    if disc_path is not None:
        from aot.models.discriminator import load_discriminator
        from aot.sampling.guidance import boosted_heun_sample, with_discriminator

        disc, disc_ckpt = load_discriminator(disc_path, device=device)
        window = dict(time_min=dg_time_min, time_max=dg_time_max)
        denoise = with_discriminator(net, disc, dg_weight, **window)
        denoise_2nd = with_discriminator(net, disc, dg_weight_2nd, **window)
        guidance = dict(discriminator=str(disc_path), weight=dg_weight, weight_2nd=dg_weight_2nd, **window,
                        boosting=dg_boosting, discriminator_config=disc_ckpt["config"])
    elif dg_boosting:
        raise ValueError("dg_boosting needs a discriminator (disc_path)")
    if churn is not None and dg_boosting:
        raise ValueError("churn and dg_boosting both re-noise the samples; use one")
    arch = ckpt["ctor"]["network"]
    shape = (arch["in_channels"], arch["img_resolution"], arch["img_resolution"])
    sigmas = karras_sigmas(steps, sigma_min, sigma_max, rho)
    gammas = None if churn is None else edm_churn_gammas(sigmas, churn["S_churn"], churn["S_min"], churn["S_max"])
    seeds = list(seeds)
    chunks = [seeds[i : i + batch] for i in range(0, len(seeds), batch)]
    images, labels = [], []
    it = chunks
    if progress:
        from tqdm import tqdm

        it = tqdm(chunks, desc=f"sample rho={rho:g} steps={steps}", unit="batch", file=sys.stderr,
                  mininterval=1.0 if sys.stderr.isatty() else 30.0)
    for chunk in it:
        gens = seed_generators(chunk, device)
        z, y = seeded_latents(chunk, shape, num_classes=net.label_dim, device=device, generators=gens)
        def randn(gens=gens):
            return torch.stack([torch.randn(shape, generator=g, device=device) for g in gens])

        if dg_boosting:
            x = boosted_heun_sample(net, disc, z, sigmas, y, randn, weight=dg_weight, weight_2nd=dg_weight_2nd,
                                    **window)
        elif churn is not None:
            def gamma(i, z=z):  # the same gamma for every sample of the step
                return torch.full((len(z),), gammas[i], dtype=torch.float64)

            x = heun_sample(denoise, z, sigmas, y, denoise_2nd=denoise_2nd, churn=gamma,
                            randn=lambda: churn["S_noise"] * randn())
        else:
            x = heun_sample(denoise, z, sigmas, y, denoise_2nd=denoise_2nd)
        x = x.to(torch.float32)
        bad = ~x.flatten(1).isfinite().all(1)  # before the uint8 conversion, which would hide NaN
        if bad.any():
            if progress:
                it.close()
            first = [chunk[i] for i in bad.nonzero().flatten()[:5].tolist()]
            how = f"rho={rho:g}, steps={steps}" + (
                f", guided by {disc_path} (weight {dg_weight:g}, 2nd order {dg_weight_2nd:g})" if guidance else "")
            raise DivergenceError(
                f"{ckpt_path}: sampling at {how} gave non-finite images for {int(bad.sum())} of {len(chunk)} seeds "
                f"in {chunk[0]}-{chunk[-1]} (first: {', '.join(map(str, first))}); check that the model (and "
                "discriminator) trained without diverging and that the guidance weight is finite; no samples written")
        images.append(to_uint8(x))
        labels.append(y.cpu().numpy() if y is not None else np.full(len(chunk), -1, np.int64))
    meta = dict(rho=rho, steps=steps, nfe=nfe(steps), sigma_min=sigma_min, sigma_max=sigma_max,
                seed_first=seeds[0], seed_last=seeds[-1], num_images=len(seeds), checkpoint=str(ckpt_path),
                train=ckpt["config"], **({"guidance": guidance} if guidance else {}),
                **({"churn": dict(churn)} if churn is not None else {}))
    return dict(images=np.concatenate(images), labels=np.concatenate(labels).astype(np.int64),
                seeds=np.array(seeds, dtype=np.int64), meta=np.array(json.dumps(meta, sort_keys=True)))


