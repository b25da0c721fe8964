"""Rehearsal of EDM's 64x64 recipes at full network size, on CPU, through the real Snakefile.

The shipped config/ffhq64-uncond.yaml (SongUNet DDPM++, 61.8M parameters, dropout 0.05) and
config/imagenet64-cond.yaml (EDM's ADM / DhariwalUNet, 295.9M parameters, dropout 0.10, fp16, 1000 classes) run
unchanged except for sizes given with --config (a few images of training, tiny pools and batches, 4 samples at one
4-step setting, no trajectory, CPU, one node) and the dataset path: a synthetic zip in EDM's dataset_tool format
written by the test (constant-colour 64x64 PNGs under 00000/img00000000.png, ... with a dataset.json): 1000
labelled classes for ImageNet, two images of each so that the per-class assignment has something to pair and none
is held out; 8 images with {"labels": null} for FFHQ. FID goes through clean-fid's legacy_tensorflow path with a
stand-in TorchScript Inception against statistics of the prepared images. FFHQ also runs Discriminator Guidance, which
the shipped 64x64 configs leave off, switched on with ``guidance={enabled: true}``: the three Table 3 runs on the ADM
64x64 classifier (65.4M parameters, seeded random weights in place of guided-diffusion's 64x64_classifier.pt) at the
cosine schedule's time. ImageNet keeps it off, and its Table 3 cells must say why. What is asserted comes from the
jobs' own outputs: the saved networks, train.json, the discriminators and the tables.

Run alone: ``python -m pytest tests/test_rehearsal64.py``.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import run_shipped_config
from fakes import write_fake_inception, write_random_adm_classifier
from PIL import Image

from aot.core.checkpoint import load_checkpoint
from aot.core.download import sha256_file
from aot.models.denoiser import load_denoiser
from aot.models.networks import count_parameters

pytestmark = pytest.mark.slow

CONFIGS = {  # experiment -> what its networks must be
    "ffhq64-uncond": dict(cond="uncond", params=61_805_571, dropout=0.05, arch="ddpmpp", model_type="SongUNet",
                          label_dim=0, fp16=False, classes=0, per_class=8, pool=2, guided=True),
    "imagenet64-cond": dict(cond="cond", params=295_899_267, dropout=0.10, arch="adm", model_type="DhariwalUNet",
                            label_dim=1000, fp16=True, classes=1000, per_class=2, pool=2000, guided=False),
}


def write_dataset_zip(path: Path, classes: int, per_class: int) -> Path:
    """EDM dataset_tool.py's zip layout: ``00000/img00000000.png``, ... (1000 per folder) and ``dataset.json``.
    Image i is one random RGB colour (seeded); with classes, image i has class i % classes."""
    n = max(classes, 1) * per_class
    labels = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for i in range(n):
            colour = np.random.default_rng(i).integers(0, 256, 3).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(np.broadcast_to(colour, (64, 64, 3)).copy()).save(buf, "PNG")
            name = f"{i // 1000:05d}/img{i:08d}.png"
            z.writestr(name, buf.getvalue())
            labels.append([name, i % classes] if classes else None)
        z.writestr("dataset.json", json.dumps({"labels": labels if classes else None}))
    return path


def overrides(exp: str, assets: dict[str, Path]) -> list[str]:
    """Sizes only, plus the dataset path and a local Inception file; every other key is the shipped file's."""
    c = CONFIGS[exp]
    nodes = ", nodes: 1" if c["cond"] == "cond" else ""  # imagenet64 trains on 4 nodes
    return [
        f"dataset={{path: '{assets[exp]}'}}",
        f"train={{kimg: 0.004, batch: 2, pool: {c['pool']}, lr_rampup_kimg: 0.002, tick_kimg: 0.002, "
        f"state_kimg: 0.004, device: cpu, gpus: 0{nodes}}}",
        "sample={grid: [{rho: 7, steps: 4}], num_images: 4, shard_size: 4, batch: 2, device: cpu}",
        f"evaluate={{inception_weights: '{assets['inception']}', inception_sha256: {sha256_file(assets['inception'])}, "
        "fid_block: 4, device: cpu}",
        # No trajectory job: that stage does not depend on the resolution, and tests/test_rehearsal.py runs it at full
        # size; its CI minutes go to Discriminator Guidance at 64x64 instead.
        "trajectory={settings: []}",
    ] + ([f"guidance={{enabled: true, runs: {GUIDED_RUNS}, fakes: {{num_images: 4}}, "
          f"extractor_weights: '{assets['classifier64']}', train: {{epochs: 1, batch: 4, device: cpu}}}}"]
         if c["guided"] else [])


GUIDED_RUNS = "{" + ", ".join(f"{r}: {{steps: 4}}" for r in ("edm_dg", "aot_dg", "aot_dgaot")) + "}"  # rho 7 kept


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("assets64")
    out = {exp: write_dataset_zip(d / f"{exp}.zip", c["classes"], c["per_class"]) for exp, c in CONFIGS.items()}
    out["inception"] = write_fake_inception(d / "inception-2015-12-05.pt")
    out["classifier64"] = write_random_adm_classifier(d / "64x64_classifier.pt", extractor="adm64")
    return out


@pytest.fixture(scope="module", params=list(CONFIGS))
def rehearsal(request, assets, tmp_path_factory):
    """Copy the workflow and run the shipped 64x64 config through the real Snakefile."""
    exp = request.param
    d = tmp_path_factory.mktemp(f"rehearsal-{exp}")
    run_shipped_config(d, f"config/{exp}.yaml", overrides(exp, assets))
    return exp, d


def test_trained_networks_are_edms(rehearsal):
    exp, d = rehearsal
    c = CONFIGS[exp]
    R = d / f"results/{exp}"
    weights = {}
    for arm in ("edm", "aot"):
        net, ckpt = load_denoiser(R / f"models/{arm}-{c['cond']}/network.pt")
        assert count_parameters(net) == c["params"]
        ctor = ckpt["ctor"]
        assert ctor.get("model_type", "SongUNet") == c["model_type"]
        assert ctor["network"]["img_resolution"] == 64 and ctor["label_dim"] == c["label_dim"]
        assert ctor["network"]["dropout"] == pytest.approx(c["dropout"])
        assert bool(ctor.get("use_fp16", False)) is c["fp16"]
        spec = ckpt["config"]
        assert spec["pairing"] == ("aot" if arm == "aot" else "none") and bool(spec.get("fp16", False)) is c["fp16"]
        assert spec["arch"] == c["arch"] and spec["cond"] is (c["cond"] == "cond")
        assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())
        stats = json.loads((R / f"models/{arm}-{c['cond']}/train.json").read_text())
        assert stats["kimg"] == pytest.approx(0.004) and stats["pool"] == c["pool"]
        if arm == "aot":  # the assignment (per class for ImageNet) lowered the image-noise distance
            assert stats["mean_dist_paired"] < stats["mean_dist_independent"]
        weights[arm] = ckpt["state_dict"]
    if exp == "ffhq64-uncond":
        assert ctor["network"]["channel_mult"] == [1, 2, 2, 2] and ctor["network"]["model_channels"] == 128
    else:
        assert ctor["network"]["channel_mult"] == [1, 2, 3, 4] and ctor["network"]["model_channels"] == 192
    # Same seeds and init, different noise pairing: the two trainings took different steps.
    assert any(not torch.equal(weights["edm"][k], weights["aot"][k]) for k in weights["edm"])


def test_dataset_is_the_zip(rehearsal):
    exp, d = rehearsal
    c = CONFIGS[exp]
    info = json.loads((d / f"results/{exp}/data/dataset.json").read_text())
    n = max(c["classes"], 1) * c["per_class"]
    train, test = info["train"], info.get("test") or [0]
    assert train[1:] == [3, 64, 64] and train[0] + test[0] == n


def test_scores_are_inception_fid_and_tables_are_written(rehearsal):
    exp, d = rehearsal
    c = CONFIGS[exp]
    T = d / f"results/tables/{exp}"
    scores = pd.read_csv(T / "scores.csv")
    assert len(scores) == 2 + 3 * c["guided"]  # edm, aot at rho7-steps4 (+ the three guided models)
    assert scores["metric"].str.contains("FID").all() and scores["ours"].notna().all()
    assert (scores["samples"] == 4).all()
    for n in range(1, 6):
        assert (T / f"table{n}.md").exists()
    table3 = pd.read_csv(T / "table3.csv")
    assert len(table3) == 3  # the paper's three DG rows
    if c["guided"]:  # every row has our guided score and the unguided one of the same model and seeds (FFHQ: uncond)
        assert table3["ours_uncond"].notna().all() and table3["ours_unguided_uncond"].notna().all()
    else:  # guidance off: every cell says why, and what turning it on would run
        assert table3["ours_cond"].isna().all()
        assert table3.note.str.contains("DG published its setting for 32x32 images only").all(), table3.note
        assert table3.note.str.contains("64x64_classifier.pt").all()
    resolved = (d / f"results/{exp}/config.yaml").read_text()
    assert re.search(rf"^  arch: {c['arch']}$", resolved, re.M)


PAIRINGS = {"edm_dg": "none", "aot_dg": "none", "aot_dgaot": "aot"}  # the discriminators' noise pairing


def test_guidance_at_64x64_reads_the_adm64_classifier_at_cosine_time(rehearsal, assets):
    exp, d = rehearsal
    if not CONFIGS[exp]["guided"]:
        pytest.skip(f"{exp} keeps guidance off (its Table 3 reasons are checked with its tables)")
    R = d / f"results/{exp}"
    for run, pairing in PAIRINGS.items():
        ckpt = load_checkpoint(R / f"discriminators/{run}-uncond/discriminator.pt")
        ext, head = ckpt["ctor"]["extractor"], ckpt["ctor"]["head"]
        assert ext["image_size"] == 64 and ext["channel_mult"] == [1, 2, 3, 4]
        assert ext["attention_resolutions"] == [2, 4, 8]
        assert ckpt["ctor"]["time"] == "cosine"
        assert ckpt["ctor"]["extractor_sha256"] == sha256_file(assets["classifier64"])
        assert head["in_channels"] == 512 and head["image_size"] == 8 and head["num_classes"] is None
        assert ckpt["config"]["extractor"] == "adm64" and ckpt["config"]["pairing"] == pairing
        stats = json.loads((R / f"discriminators/{run}-uncond/train.json").read_text())
        assert stats["parameters"] == 2_883_841 and np.isfinite(stats["final_loss"])  # DG's unconditional head
        assert stats["images_per_class"] == 4  # 4 generated vs 4 of the 8 real images (as many of each)


def test_ffhq_config_takes_an_unlabeled_zip(assets):
    """config/ffhq64-uncond.yaml with only its dataset.path pointed at an unlabeled dataset_tool zip passes the
    config check (config/README.md: num_classes 0 = unlabeled)."""
    from conftest import run_aot

    r = run_aot(["show-config", "--configfile", "config/ffhq64-uncond.yaml", "--config",
                 f"dataset={{path: '{assets['ffhq64-uncond']}'}}"])
    assert r.returncode == 0, r.stderr[-2000:]
