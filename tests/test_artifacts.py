"""Corrupt artifacts fail with one line: the file, what was expected, and the fix; never a traceback or allow_pickle.

Each artifact is written the way the project writes it, then truncated to half, overwritten with random bytes, or
replaced by a file of pickled objects (an npz with an object array; a torch pickle of a class; a Python pickle).
"""

import io
import json
import os
import pickle
import subprocess
import sys
from collections import OrderedDict
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT

from aot.__main__ import main
from aot.core.artifacts import ArtifactError, read_json, read_jsonl, read_npz, read_state
from aot.core.checkpoint import load_checkpoint, save_checkpoint, write_json
from aot.core.samples import load_samples, save_samples
from aot.eval.metrics import load_stats, save_stats

CORRUPTIONS = ("truncated", "random", "pickled")


def corrupt(path: Path, how: str, fmt: str) -> Path:
    """Damage ``path`` in place; ``fmt`` ("npz", "torch", "json") picks what a pickled impostor looks like."""
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "random":
        path.write_bytes(np.random.default_rng(0).bytes(max(len(data), 64)))
    elif fmt == "npz":  # every expected key present, but as pickled object arrays
        keys = ["images", "labels", "seeds", "meta", "mu", "sigma", "features", "mu_ref", "sigma_ref"]
        buf = io.BytesIO()
        np.savez(buf, **{k: np.array([{"x": 1}, None], dtype=object) for k in keys})
        path.write_bytes(buf.getvalue())
    elif fmt == "torch":  # a class instance: torch.load(weights_only=True) refuses it
        buf = io.BytesIO()
        torch.save({"format": "aot-checkpoint/1", "kind": "denoiser", "state_dict": Fraction(1, 3)}, buf)
        path.write_bytes(buf.getvalue())
    else:
        path.write_bytes(pickle.dumps({"model": OrderedDict(a=1)}))
    return path


def assert_one_line(msg: str, path: Path, fix=("delete", "rerun")) -> None:
    assert "\n" not in msg.strip(), msg
    assert str(path) in msg, msg
    assert all(w in msg for w in fix), msg
    assert "allow_pickle" not in msg and "Traceback" not in msg, msg


def assert_raises_one_line(fn, path: Path, fix=("delete", "rerun")) -> str:
    with pytest.raises(ArtifactError) as e:
        fn()
    assert isinstance(e.value, ValueError)
    assert_one_line(str(e.value), path, fix)
    return str(e.value)


def assert_cli_one_line(argv, path: Path, capsys) -> str:
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert_one_line(err[0], path)
    return err[0]


# ----------------------------------------------------------------------------
# Valid artifacts, written by the project's own writers.


def write_shard(path: Path, seeds=range(4)) -> Path:
    seeds = np.asarray(list(seeds), np.int64)
    rng = np.random.default_rng(int(seeds[0]))
    meta = dict(rho=7.0, steps=2, nfe=3, train=dict(pairing="aot", cond=False))
    save_samples(path, dict(images=rng.integers(0, 256, (len(seeds), 1, 8, 8), dtype=np.uint8),
                            labels=np.zeros(len(seeds), np.int64), seeds=seeds, meta=np.array(json.dumps(meta))))
    return path


def write_ckpt(path: Path, kind: str) -> Path:
    save_checkpoint(path, kind=kind, state_dict={"w": torch.zeros(3)}, ctor={"a": 1}, config={})
    return path


def write_features(path: Path) -> Path:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    np.savez(buf, features=rng.normal(size=(8, 3)).astype(np.float32), seeds=np.arange(8), mu_ref=np.zeros(3),
             sigma_ref=np.eye(3), feature_net=np.array("featnet-v1"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return path


def metric(model="aot-uncond", pairing="aot"):
    return dict(model=model, pairing=pairing, rho=7, steps=18, nfe=35, num_images=8, seed_first=0, seed_last=7,
                cond=False, scores={"featnet": dict(metric="FD (featnet-v1)", value=1.0, value_std=0.1, kid=0.01)})


# ----------------------------------------------------------------------------
# Loaders.


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_sample_shard(tmp_path, how):
    good = write_shard(tmp_path / "seeds0-3.npz")
    assert load_samples([good])[0].shape == (4, 1, 8, 8)
    bad = corrupt(write_shard(tmp_path / "seeds4-7.npz", range(4, 8)), how, "npz")
    msg = assert_raises_one_line(lambda: load_samples([good, bad]), bad)
    assert "sample shard" in msg and "snakemake -R sample sample_guided" in msg
    if how != "pickled":  # numpy's guess for a file without a zip header is "pickled data": not passed on
        assert "pickle" not in msg


def test_sample_shard_missing_key_says_what_it_expected(tmp_path):
    p = tmp_path / "seeds0-3.npz"
    save_samples(p, dict(images=np.zeros((2, 1, 8, 8), np.uint8)))
    msg = assert_raises_one_line(lambda: load_samples([p]), p)
    assert "expected images, labels, seeds, meta" in msg


@pytest.mark.parametrize("kind,rule", [("denoiser", "train import_checkpoint"),
                                       ("discriminator", "train_discriminator"), ("featnet", "featnet")])
@pytest.mark.parametrize("how", CORRUPTIONS)
def test_checkpoint(tmp_path, kind, rule, how):
    p = write_ckpt(tmp_path / f"{kind}.pt", kind)
    assert load_checkpoint(p, kind=kind)["ctor"] == {"a": 1}
    corrupt(p, how, "torch")
    msg = assert_raises_one_line(lambda: load_checkpoint(p, kind=kind), p)
    assert f"{kind} checkpoint" in msg and f"snakemake -R {rule})" in msg


def test_checkpoint_of_the_wrong_kind_or_not_ours(tmp_path):
    p = write_ckpt(tmp_path / "network.pt", "featnet")
    assert "expected 'denoiser'" in assert_raises_one_line(lambda: load_checkpoint(p, kind="denoiser"), p)
    torch.save({"net": torch.zeros(2)}, p)
    assert "not an aot checkpoint" in assert_raises_one_line(lambda: load_checkpoint(p, kind="denoiser"), p)


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_stats(tmp_path, how):
    p = tmp_path / "ref_stats.npz"
    save_stats(p, np.zeros(3), np.eye(3), num_images=8)
    assert load_stats(p)[2] == {"num_images": 8}
    corrupt(p, how, "npz")
    assert "snakemake -R fid_ref)" in assert_raises_one_line(lambda: load_stats(p), p)


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_training_state_says_delete_to_restart(tmp_path, how):
    p = tmp_path / "run" / "training-state.pt"
    p.parent.mkdir()
    torch.save(dict(net={"w": torch.zeros(2)}, cur_nimg=64, history="[]"), p)
    assert read_state(p)["cur_nimg"] == 64
    corrupt(p, how, "torch")
    msg = assert_raises_one_line(lambda: read_state(p), p, fix=("delete", "restart"))
    assert "training state" in msg


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_json_and_jsonl(tmp_path, how):
    p = tmp_path / "train.json"
    write_json(p, {"model": "aot-uncond", "ticks": []})
    assert read_json(p, kind="training summary", rule="train", keys=["model"])["model"] == "aot-uncond"
    corrupt(p, how, "json")
    assert "snakemake -R train)" in assert_raises_one_line(lambda: read_json(p, kind="training summary",
                                                                              rule="train"), p)
    log = tmp_path / "log.jsonl"
    log.write_text('{"kimg": 1}\n{"kimg": 2, "loss": 0.5}\n')
    assert read_jsonl(log) == [{"kimg": 1}, {"kimg": 2, "loss": 0.5}]
    corrupt(log, how, "json")
    assert_raises_one_line(lambda: read_jsonl(log), log)


def test_json_of_the_wrong_shape(tmp_path):
    p = tmp_path / "m.json"
    p.write_text("[1, 2]\n")
    assert "expected a JSON object, found a array" in assert_raises_one_line(lambda: read_json(p), p)
    p.write_text("{}\n")
    assert "missing key 'scores'" in assert_raises_one_line(lambda: read_json(p, keys=["scores"]), p)


def test_bare_npy_is_refused(tmp_path):
    p = tmp_path / "f.npz"
    with open(p, "wb") as f:
        np.save(f, np.zeros(3))
    assert "not a zip archive" in assert_raises_one_line(lambda: read_npz(p, ["features"]), p)


def test_dataset(tmp_path):
    from aot.data.datasets import load_dataset, save_dataset
    from aot.data.sources import synthetic_dataset

    p = tmp_path / "dataset.npz"
    save_dataset(p, synthetic_dataset(n_train=16, n_test=8, channels=1, resolution=8))
    corrupt(p, "truncated", "npz")
    assert "snakemake -R prepare_dataset)" in assert_raises_one_line(lambda: load_dataset(p), p)


def test_missing_file_stays_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        load_samples([tmp_path / "missing.npz"])
    with pytest.raises(FileNotFoundError, match="missing.json"):
        read_json(tmp_path / "missing.json")


# ----------------------------------------------------------------------------
# The stages that read them: exit 2 with one stderr line naming the file.


def test_cli_sample_corrupt_network_subprocess(tmp_path):
    bad = corrupt(write_ckpt(tmp_path / "network.pt", "denoiser"), "pickled", "torch")
    r = subprocess.run([sys.executable, "-m", "aot", "sample", "--ckpt", str(bad), "--rho", "7", "--steps", "2",
                        "--seeds", "0-1", "--out", str(tmp_path / "s.npz")], cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert_one_line(lines[0], bad)
    assert not (tmp_path / "s.npz").exists()


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_cli_evaluate_corrupt_samples(tmp_path, capsys, how):
    bad = corrupt(write_shard(tmp_path / "seeds0-3.npz"), how, "npz")
    assert_cli_one_line(["evaluate", "--samples", bad, "--out", tmp_path / "m.json"], bad, capsys)
    assert not (tmp_path / "m.json").exists()


def test_cli_evaluate_corrupt_featnet_and_fid_ref(tmp_path, capsys):
    shard = write_shard(tmp_path / "seeds0-3.npz")
    featnet = corrupt(write_ckpt(tmp_path / "featnet.pt", "featnet"), "truncated", "torch")
    msg = assert_cli_one_line(["evaluate", "--samples", shard, "--out", tmp_path / "m.json", "--metrics", "featnet",
                               "--featnet", featnet, "--ref", tmp_path / "ref.npz"], featnet, capsys)
    assert "snakemake -R featnet)" in msg
    ref = tmp_path / "ref_stats.npz"
    save_stats(ref, np.zeros(3), np.eye(3))
    corrupt(ref, "pickled", "npz")
    msg = assert_cli_one_line(["evaluate", "--samples", shard, "--out", tmp_path / "m.json", "--metrics",
                               "inception", "--fid-ref", ref], ref, capsys)
    assert "snakemake -R fid_ref)" in msg


def test_cli_grid_corrupt_samples(tmp_path, capsys):
    bad = corrupt(write_shard(tmp_path / "seeds0-3.npz"), "random", "npz")
    assert_cli_one_line(["grid", "--samples", bad, "--out", tmp_path / "g.png"], bad, capsys)


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_cli_tables_corrupt_metrics(tmp_path, capsys, how):
    bad = tmp_path / "metrics" / "aot-uncond" / "rho7-steps18.json"
    write_json(bad, metric())
    corrupt(bad, how, "json")
    msg = assert_cli_one_line(["tables", "--metrics", bad, "--out-dir", tmp_path / "tables"], bad, capsys)
    assert "metrics JSON" in msg and "snakemake -R evaluate)" in msg


@pytest.mark.parametrize("stage", ["tables", "figures"])
def test_cli_tables_and_figures_metrics_without_scores(tmp_path, capsys, stage):
    bad = tmp_path / "m.json"
    write_json(bad, {k: v for k, v in metric().items() if k != "scores"})
    assert "missing key 'scores'" in assert_cli_one_line([stage, "--metrics", bad, "--out-dir", tmp_path / "o"], bad,
                                                         capsys)


@pytest.mark.parametrize("what,rule", [("stats", "train"), ("trajectory", "trajectory"),
                                       ("disc-stats", "train_discriminator"), ("features", "evaluate")])
def test_cli_tables_corrupt_inputs(tmp_path, capsys, what, rule):
    good = tmp_path / "metrics.json"
    write_json(good, metric())
    if what == "features":
        bad = corrupt(write_features(tmp_path / "metrics" / "aot-uncond" / "rho7-steps18.features.npz"), "pickled",
                      "npz")
    else:
        bad = tmp_path / f"{what}.json"
        write_json(bad, {"model": "aot-uncond"})
        corrupt(bad, "truncated", "json")
    msg = assert_cli_one_line(["tables", "--metrics", good, f"--{what}", bad, "--out-dir", tmp_path / "tables"], bad,
                              capsys)
    assert f"snakemake -R {rule})" in msg


@pytest.mark.parametrize("what", ["stats", "trajectory"])
def test_cli_figures_corrupt_inputs(tmp_path, capsys, what):
    good = tmp_path / "metrics.json"
    write_json(good, metric())
    bad = tmp_path / f"{what}.json"
    bad.write_bytes(np.random.default_rng(1).bytes(100))
    assert_cli_one_line(["figures", "--metrics", good, f"--{what}", bad, "--out-dir", tmp_path / "fig"], bad, capsys)


def test_corrupt_training_state_says_to_restart(tmp_path):
    from aot.training.runstate import restore

    p = tmp_path / "training-state.pt"
    p.write_bytes(b"PK\x03\x04 not really a zip")
    msg = assert_raises_one_line(lambda: restore(p, p, 0, "cpu", net=None, ema=None, opt=None, sampler=None,
                                                 noise_gen=None, sigma_gen=None), p, fix=("delete",))
    assert "delete it to restart that run from scratch" in msg


def test_corrupt_training_log_and_trajectory_metrics(tmp_path):
    from aot.eval.trajectory import load_metrics_json
    from aot.training.runlog import truncate_log

    log = tmp_path / "log.jsonl"
    log.write_text('{"kimg": 0.5, "loss": 1.0}\n{"kimg": 1.0, "lo')  # cut mid-line by a kill
    msg = assert_raises_one_line(lambda: truncate_log(log, 1.0), log, fix=("delete",))
    assert "training-state.pt and log.jsonl" in msg
    traj = tmp_path / "rho7-steps18.json"
    traj.write_text('{"metrics": {"straightness": 0.1}}')  # no meta: a file from something else
    msg = assert_raises_one_line(lambda: load_metrics_json(traj), traj)
    assert "snakemake -R trajectory" in msg
