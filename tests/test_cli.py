"""`python -m aot` stages fail with one clear line and write nothing when their input is missing."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def aot(*args, cwd):
    return subprocess.run([sys.executable, "-m", "aot", *args], cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=120)


def test_import_checkpoint_offline_url_is_one_line_and_writes_nothing(tmp_path):
    # Port 9 on loopback refuses at once: the same path as a cluster node without internet.
    r = aot("import-checkpoint", "--src", "http://127.0.0.1:9/edm-cifar10-32x32-uncond-ve.pkl", "--pairing", "none",
            "--out", "out/network.pt", "--cache-dir", "cache", cwd=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: could not download")
    assert "cache/edm-cifar10-32x32-uncond-ve.pkl" in lines[0]
    assert not (tmp_path / "out").exists() and list((tmp_path / "cache").glob("*")) == []


def test_import_checkpoint_missing_local_file(tmp_path):
    r = aot("import-checkpoint", "--src", "nope.pkl", "--pairing", "aot", "--out", "n.pt", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: nope.pkl not found: download the released network and point the config's "
        "arms.<arm>.checkpoints.<cond> at it"]
    assert not (tmp_path / "n.pt").exists()


def test_missing_checkpoint_and_dataset(tmp_path):
    r = aot("sample", "--ckpt", "missing.pt", "--rho", "7", "--steps", "4", "--seeds", "0-3", "--out", "s.npz",
            cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip() == "error: checkpoint not found: missing.pt"
    r = aot("featnet", "--data", "d.npz", "--out", "f.pt", "--ref", "r.npz", "--info", "i.json", cwd=tmp_path)
    assert r.returncode == 2 and "dataset not found: d.npz" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_bad_seed_range(tmp_path):
    r = aot("sample", "--ckpt", "x.pt", "--rho", "7", "--steps", "4", "--seeds", "9-3", "--out", "s.npz",
            cwd=tmp_path)
    assert r.returncode == 2 and "seeds" in r.stderr


def test_check_config_reports_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "config/config.yaml").read_text().replace("pool: 512", "pool: 500"))
    r = aot("check-config", str(bad), cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == ("error: config error: train.pool: 500 must be a multiple of the per-process batch "
                                "128 (each pool is consumed by whole optimizer steps)")
