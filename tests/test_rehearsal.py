"""Rehearsal of the paper DAG at full network size, on CPU, end to end.

The shipped config/cifar10-uncond.yaml and cifar10-cond.yaml run unchanged except for sizes given with --config
(a few images of training, tiny pools and batches, 4 samples at one 4-step setting, one discriminator epoch, CPU).
Everything else is the paper's: CIFAR-10 read from an archive in the official format (synthetic pixels, written
by the test), NCSN++ at EDM's 56.4M parameters with dropout 0.13 and augmentation, AOT pairing, Discriminator
Guidance through DG's ADM encoder (47.8M parameters, random weights in place of 32x32_classifier.pt), guided
sampling with boosting for the conditional model, Inception FID through clean-fid's legacy_tensorflow path (a
stand-in TorchScript file in place of inception-2015-12-05.pt) against statistics of the prepared dataset, and
Tables 1-5. What is asserted comes from the jobs' own outputs: the saved networks, their logs and the tables.

Run alone: ``python -m pytest tests/test_rehearsal.py`` (about 10 minutes on 2 CPU cores).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import torch
from cifar_archive import write_cifar10_archive
from conftest import job_settings, run_shipped_config
from fakes import write_fake_inception, write_random_adm_classifier

from aot.core.checkpoint import load_checkpoint
from aot.core.download import sha256_file
from aot.models.denoiser import load_denoiser
from aot.models.networks import count_parameters

pytestmark = pytest.mark.slow

PARAMS = {"uncond": 56_397_827, "cond": 56_400_643}  # EDM's NCSN++ with augment_dim 9 (label_dim 0 / 10)
POOL = {"uncond": 4, "cond": 40}  # multiples of the per-process batch of 2; cond: 4 images of each class


def size_overrides(cond: str, assets: dict[str, Path]) -> list[str]:
    """Sizes only (plus local files for what a cluster downloads): every other key is the shipped file's. The lr
    ramp is scaled with the length (10 Mimg of 200 Mimg -> 2 of 4 images), so the two steps do move the weights."""
    pool = POOL[cond]
    runs = "{" + ", ".join(f"{r}: {{rho: 27, steps: 4}}" for r in ("edm_dg", "aot_dg", "aot_dgaot")) + "}"
    return [
        f"dataset={{archive: '{assets['archive']}', subset: 40}}",
        f"train={{kimg: 0.004, batch: 2, pool: {pool}, lr_rampup_kimg: 0.002, tick_kimg: 0.002, state_kimg: 0.004, "
        "device: cpu, gpus: 0}",
        "sample={grid: [{rho: 27, steps: 4}], num_images: 4, shard_size: 2, batch: 2, device: cpu}",
        f"evaluate={{fid_ref: dataset, inception_weights: '{assets['inception']}', "
        f"inception_sha256: {sha256_file(assets['inception'])}, fid_block: 4, device: cpu}}",
        "trajectory={settings: [{rho: 27, steps: 4}], num_images: 1, fine_steps: 4, ref_substeps: 1, ref_steps: 4, "
        "columns: 4}",
        f"guidance={{runs: {runs}, fakes: {{num_images: 4}}, extractor_weights: '{assets['classifier']}', "
        "train: {epochs: 1, batch: 4, device: cpu}}",
    ]


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("assets")
    write_cifar10_archive(d / "cifar-10-python.tar.gz", per_batch=10, test_size=20)  # 50 train, 5 per class
    return {"archive": d / "cifar-10-python.tar.gz",
            "inception": write_fake_inception(d / "inception-2015-12-05.pt"),
            "classifier": write_random_adm_classifier(d / "32x32_classifier.pt")}


@pytest.fixture(scope="module", params=["uncond", "cond"])
def rehearsal(request, assets, tmp_path_factory):
    """Copy the workflow and run the shipped paper config through the real Snakefile."""
    cond = request.param
    d = tmp_path_factory.mktemp(f"rehearsal-{cond}")
    return cond, d, run_shipped_config(d, f"config/cifar10-{cond}.yaml", size_overrides(cond, assets))


def test_trained_networks_are_the_papers(rehearsal):
    cond, d, _ = rehearsal
    R = d / f"results/cifar10-{cond}"
    weights = {}
    for arm in ("edm", "aot"):
        net, ckpt = load_denoiser(R / f"models/{arm}-{cond}/network.pt")
        assert count_parameters(net) == PARAMS[cond]
        ctor = ckpt["ctor"]["network"]
        assert ctor["dropout"] == 0.13 and ctor["augment_dim"] == 9 and ctor["model_channels"] == 128
        assert ctor["embedding_type"] == "fourier" and ctor["encoder_type"] == "residual"
        assert ctor["attn_resolutions"] == [16] and ctor["label_dim"] == (10 if cond == "cond" else 0)
        spec = ckpt["config"]
        assert spec["pairing"] == ("aot" if arm == "aot" else "none") and spec["augment_p"] == 0.12
        assert spec["lr"] == 0.001 and spec["ema_halflife_kimg"] == 500 and spec["lr_rampup_kimg"] == 0.002
        assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())
        stats = json.loads((R / f"models/{arm}-{cond}/train.json").read_text())
        assert stats["kimg"] == pytest.approx(0.004) and stats["pool"] == POOL[cond]
        if arm == "aot":  # the assignment lowered the image-noise distance of the pools it trained on
            assert stats["mean_dist_paired"] < stats["mean_dist_independent"]
        weights[arm] = ckpt["state_dict"]
    # Same seeds and init, different noise pairing: the two trainings took different steps.
    assert any(not torch.equal(weights["edm"][k], weights["aot"][k]) for k in weights["edm"])


def test_dataset_is_the_archive_subset(rehearsal):
    cond, d, _ = rehearsal
    info = json.loads((d / f"results/cifar10-{cond}/data/dataset.json").read_text())
    assert info["train"] == [40, 3, 32, 32] and info["test"] == [20, 3, 32, 32]
    assert info["meta"]["name"] == "cifar10" and info["meta"]["subset"] == 40


def test_discriminators_use_the_adm_encoder(rehearsal, assets):
    cond, d, out = rehearsal
    R = d / f"results/cifar10-{cond}"
    from aot.core.download import sha256_file

    for run in ("edm_dg", "aot_dg", "aot_dgaot"):
        ckpt = load_checkpoint(R / f"discriminators/{run}-{cond}/discriminator.pt")
        assert ckpt["ctor"]["extractor"]["model_channels"] == 128
        assert ckpt["ctor"]["extractor_sha256"] == sha256_file(assets["classifier"])
        assert ckpt["config"]["epochs"] == 1 and ckpt["config"]["lr"] == 0.0003  # epochs: a size override
    # Guided sampling ran with the config's weight and boosting (DG's README: w 2 uncond, w 1 + boosting cond).
    guided = [line for line in out.splitlines() if "python -m aot sample" in line and "--disc" in line]
    assert len(guided) == 3 * 2  # 3 runs x 2 shards of 2 seeds
    weight, boosting = (2.0, False) if cond == "uncond" else (1.0, True)
    assert all(job_settings(g)["dg_weight"] == weight and job_settings(g)["dg_boosting"] is boosting for g in guided)


def test_scores_are_inception_fid_and_tables_are_written(rehearsal):
    cond, d, _ = rehearsal
    T = d / f"results/tables/cifar10-{cond}"
    scores = pd.read_csv(T / "scores.csv")
    assert len(scores) == 2 + 3  # edm, aot at rho27-steps4 + three guided models
    assert scores["metric"].str.contains("FID").all() and scores["ours"].notna().all()
    assert (scores["samples"] == 4).all()
    for n in range(1, 6):
        assert (T / f"table{n}.md").read_text().strip()
    # Table 5 (NFE 7, rho 27) has our numbers for both arms; the paper's column is untouched.
    t5 = pd.read_csv(T / "table5.csv")
    ours = t5[t5["model"].str.endswith(f" {cond}") & (t5["NFE"] == 7)]
    assert len(ours) == 2 and (ours["rho"] == 27).all()
    assert ours["ours"].notna().all() and ours["paper_fid"].notna().all()
    t3 = pd.read_csv(T / "table3.csv")
    assert t3[f"ours_{cond}"].notna().all() and t3[f"ours_unguided_{cond}"].notna().all()
    resolved = (d / f"results/cifar10-{cond}/config.yaml").read_text()
    assert re.search(r"^  arch: ncsnpp$", resolved, re.M) and "overrides: {}" in resolved
