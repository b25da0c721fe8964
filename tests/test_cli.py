"""`python -m aot` stages fail with one clear line and write nothing when their input is missing."""

import subprocess
import sys

import pytest
from conftest import ENV, ROOT


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


def test_check_config_merges_files_as_snakemake_does(tmp_path):
    """A later file's mapping merges into the earlier one's (Snakemake's --configfile), it does not replace it:
    here the default's 1500 fakes stay, so a batch of 3100 is too large; replacing the whole guidance section
    would have fallen back to the schema's 50000 fakes and passed."""
    extra = tmp_path / "extra.yaml"
    extra.write_text("guidance:\n  train:\n    batch: 3100\n")
    r = aot("check-config", str(ROOT / "config/config.yaml"), str(extra), cwd=tmp_path)
    assert r.returncode == 2 and "guidance.train.batch: 3100 is more than the 3000" in r.stderr, r.stderr
    extra.write_text("guidance:\n  enabled: false\n")
    r = aot("check-config", str(ROOT / "config/config.yaml"), str(extra), cwd=tmp_path)
    assert r.returncode == 0, r.stderr


def test_replicates_tables_across_training_runs(tmp_path):
    import pandas as pd

    def run(name, ours, diff):
        d = tmp_path / "tables" / name
        d.mkdir(parents=True)
        base = dict(arm="aot", pairing="aot", conditioning="cond", rho=7, steps=18, NFE=35, guidance="none",
                    disc_pairing=None, metric="FD (featnet-v1)", seeds="0-999")
        pd.DataFrame([dict(base, ours=ours, ours_std=0.5), dict(base, arm="edm", pairing="none", ours=3.0,
                                                                  ours_std=0.4)]).to_csv(d / "scores.csv", index=False)
        pd.DataFrame([dict(conditioning="cond", rho=7, steps=18, NFE=35, model="aot", baseline="edm",
                           difference=diff, difference_std=0.2)]).to_csv(d / "comparisons.csv", index=False)
        return str(d)

    dirs = [run("digits", 3.5, 0.5), run("digits-seed1", 2.9, -0.1), run("digits-seed2", 3.2, 0.2)]
    r = aot("replicates", *dirs, "--out-dir", str(tmp_path / "out"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    s = pd.read_csv(tmp_path / "out/scores.csv").set_index("arm")
    assert s.loc["aot", "runs"] == 3 and s.loc["aot", "mean"] == pytest.approx(3.2)
    assert s.loc["aot", "std_across_runs"] == pytest.approx(0.3)  # sqrt(((0.3)^2 + 0.3^2 + 0) / 2)
    assert s.loc["aot", "mean_std_within_run"] == pytest.approx(0.5) and s.loc["edm", "std_across_runs"] == 0
    assert list(s.loc["aot", ["ours_digits", "ours_digits-seed1", "ours_digits-seed2"]]) == [3.5, 2.9, 3.2]
    c = pd.read_csv(tmp_path / "out/comparisons.csv").iloc[0]
    assert c["mean"] == pytest.approx(0.2) and c["std_across_runs"] == pytest.approx(0.3) and c["runs"] == 3
    r = aot("replicates", dirs[0], "--out-dir", str(tmp_path / "out2"), cwd=tmp_path)
    assert r.returncode == 2 and "at least 2" in r.stderr


def test_check_config_reports_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "config/config.yaml").read_text().replace("pool: 512", "pool: 500"))
    r = aot("check-config", str(bad), cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == ("error: config error: train.pool: 500 must be a multiple of the per-process batch "
                                "128 (each pool is consumed by whole optimizer steps)")


@pytest.mark.parametrize("name, head", [
    ("ffhq64-uncond", "ddpmpp, 61,805,571 parameters (label_dim 0, augment_dim 9), dropout 0.05, pairing"),
    ("afhqv2-64-uncond", "ddpmpp, 61,805,571 parameters (label_dim 0, augment_dim 9), dropout 0.25, pairing"),
    ("imagenet64-cond", "adm, 295,899,267 parameters (label_dim 1000, augment_dim 0), dropout 0.1, "
                        "fp16 (loss scaling 100), pairing"),
    ("imagenet64-cond", "pool 8192, batch 4096 on 32 process(es), 4 nodes x 8 GPUs, 2500 Mimg"),
])
def test_show_config_prints_edms_64x64_networks(tmp_path, name, head):
    """EDM's parameter counts for the same constructor arguments (tests/test_networks.py EDM_PARAMS_64), printed
    before any image exists (the images are not read: the config declares their shape)."""
    r = aot("show-config", "--configfile", str(ROOT / f"config/{name}.yaml"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].startswith(f"experiment {name}: images (3x64x64, ")
    heads = [line for line in r.stdout.splitlines() if line.startswith("model ")]
    assert len(heads) == 2 and all(head in h for h in heads), heads
    assert list(tmp_path.iterdir()) == []


def test_show_config_prints_the_paper_networks(tmp_path):
    r = aot("show-config", "--configfile", str(ROOT / "config/cifar10-cond.yaml"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    heads = [line for line in r.stdout.splitlines() if line.startswith("model ")]
    assert len(heads) == 2 and all("ncsnpp, 56,400,643 parameters" in h and "dropout 0.13" in h for h in heads)
    assert r.stdout.count("python -m aot train --spec '") == 2 and r.stdout.count("250 epochs") == 3
    r = aot("show-config", "--configfile", str(ROOT / "config/cifar10-uncond.yaml"), "--config", "train={kimg: .nan}",
            cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip() == "error: config error: train.kimg: nan is not a finite number; " \
        "give a finite value"
    assert list(tmp_path.iterdir()) == []  # nothing written, nothing run
