"""Seeded sample sets (aot.sampling.generate): image i depends only on seed i, whatever the batch size or the
shard split, unguided, class-conditional and under Discriminator Guidance with DG's boosting (whose churn noise
comes from each seed's own stream). This is what lets the workflow split one FID-50k set into shard jobs."""

from dataclasses import asdict

import numpy as np
import pytest
import torch
from conftest import TINY_NET, tiny_spec

from aot.core.checkpoint import save_checkpoint
from aot.core.samples import load_samples, save_samples
from aot.data.datasets import Dataset
from aot.sampling.generate import generate
from aot.training.discriminator import DiscSpec, train_discriminator
from aot.training.loop import build_denoiser

SEEDS = range(3, 14)  # 11 seeds: batches of 4 leave a ragged last batch


@pytest.fixture(scope="module")
def denoisers(tmp_path_factory):
    """Untrained tiny denoisers on 1x8x8 images, unconditional and 10-class conditional (random init, seed 0)."""
    out = {}
    for cond in (False, True):
        torch.manual_seed(0)
        spec = tiny_spec(cond=cond, network=dict(TINY_NET, dropout=0.0))
        net, ctor = build_denoiser(spec, {"num_classes": 10}, resolution=8, channels=1)
        path = tmp_path_factory.mktemp("net") / f"{'cond' if cond else 'uncond'}.pt"
        save_checkpoint(path, kind="denoiser", state_dict=net.state_dict(), ctor=ctor, config=asdict(spec))
        out[cond] = path
    return out


@pytest.fixture(scope="module")
def discriminator(tmp_path_factory):
    """A one-epoch DG discriminator (no extractor) on random 1x8x8 images: enough to guide and to boost."""
    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, size=(64, 1, 8, 8), dtype=np.uint8)
    labels = rng.integers(0, 10, size=64).astype(np.int64)
    ds = Dataset(real, labels, real[:4], labels[:4], {"num_classes": 10, "name": "toy"})
    d = tmp_path_factory.mktemp("disc")
    spec = DiscSpec.from_dict(dict(epochs=1, batch=32, seed=0, head={"model_channels": 32, "num_head_channels": 32,
                                                                      "num_res_blocks": 1}))
    train_discriminator(spec, ds, rng.integers(0, 256, size=(64, 1, 8, 8), dtype=np.uint8), labels, out=d / "d.pt",
                        stats_out=d / "d.json", state_dir=d / "state", progress=False)
    return d / "d.pt"


def sample(ckpt, seeds, batch, **kw):
    return generate(ckpt, rho=7.0, steps=4, seeds=seeds, batch=batch, progress=False, **kw)


@pytest.mark.parametrize("cond", [False, True], ids=["uncond", "cond"])
def test_samples_do_not_depend_on_the_batch_size(denoisers, cond):
    whole = sample(denoisers[cond], SEEDS, batch=len(SEEDS))
    for batch in (1, 4):
        parts = sample(denoisers[cond], SEEDS, batch=batch)
        np.testing.assert_array_equal(parts["seeds"], np.array(SEEDS))
        np.testing.assert_array_equal(parts["labels"], whole["labels"])
        np.testing.assert_array_equal(parts["images"], whole["images"])
    assert (whole["labels"] >= 0).all() if cond else (whole["labels"] == -1).all()
    assert len(np.unique(whole["images"].reshape(len(SEEDS), -1), axis=0)) == len(SEEDS)  # seeds differ


def test_shards_concatenate_to_the_whole_set(denoisers, tmp_path):
    whole = sample(denoisers[True], SEEDS, batch=5)
    shards = [range(3, 7), range(7, 8), range(8, 14)]
    paths = []
    for i, seeds in enumerate(shards):
        paths.append(tmp_path / f"seeds{i}.npz")
        save_samples(paths[-1], sample(denoisers[True], seeds, batch=3))
    images, labels, seeds, metas = load_samples(paths)
    np.testing.assert_array_equal(seeds, np.array(SEEDS))
    np.testing.assert_array_equal(labels, whole["labels"])
    np.testing.assert_array_equal(images, whole["images"])
    assert [m["seed_first"] for m in metas] == [3, 7, 8]


def test_guided_boosted_samples_do_not_depend_on_the_batch_size(denoisers, discriminator):
    kw = dict(disc_path=discriminator, dg_weight=2.0, dg_boosting=True)
    whole = sample(denoisers[True], SEEDS, batch=len(SEEDS), **kw)
    parts = sample(denoisers[True], SEEDS, batch=4, **kw)
    np.testing.assert_array_equal(parts["images"], whole["images"])
    plain = sample(denoisers[True], SEEDS, batch=4)
    assert not np.array_equal(plain["images"], whole["images"])  # the guidance did act
