"""bench/gpu.sh (issue 19's one device call) on a machine without a GPU: its dry mode runs every step's script at
tiny sizes on the CPU; the rehearsal step's real (CUDA) DAG is checked with snakemake -n; EDM's dataset zip and
tools/carry-edm are checked against independent readers. No timing is asserted anywhere."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, job_settings

pytestmark = pytest.mark.slow  # starts Snakemake, torchrun or a cluster: not in the quick run (-m "not slow")

EDM = ROOT / "third_party" / "edm"
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHON": sys.executable}


def gpu_sh(tmp_path: Path, steps: str, **env) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path / "out"
    r = subprocess.run(["bash", str(ROOT / "bench" / "gpu.sh"), "--dry"], cwd=ROOT, capture_output=True, text=True,
                       timeout=1200, env={**ENV, "OUT": str(out), "GPU_WORK": str(tmp_path / "work"),
                                          "GPU_STEPS": steps, **env})
    return r, out


def summary_rows(out: Path) -> dict[str, str]:
    """step -> its exit column in summary.md."""
    rows = re.findall(r"^\| (\d \w+) \| ([^|]+) \| \d+ \| [\w.-]+ \|$", (out / "summary.md").read_text(), re.M)
    return {step: rc.strip() for step, rc in rows}


def test_dry_mode_runs_the_cpu_steps(tmp_path):
    """Steps 1, 3, 4 and 5 in dry mode: every script runs to its table, one file per step under $OUT."""
    r, out = gpu_sh(tmp_path, "1,3,4,5")
    assert r.returncode == 0, r.stderr[-3000:]
    assert summary_rows(out) == {"1 tests": "0", "3 train": "0", "4 sample": "0", "5 pairing": "0"}
    assert sorted(p.name for p in out.iterdir()) == ["1-tests.md", "3-train.md", "4-sample.md", "5-pairing.md",
                                                      "summary.md"]
    tests = (out / "1-tests.md").read_text()
    n = int(re.search(r"(\d+) skipped", tests).group(1))
    assert n >= 8 and "passed" not in tests and "failed" not in tests  # the CUDA tests, all skipped on a CPU
    train = (out / "3-train.md").read_text()
    assert "precision fp32" in train and "precision bf16" in train and "cond True" in train
    assert len(re.findall(r"^\| tiny \| ddpmpp \| [\d.]+M \| (none|aot) \|", train, re.M)) == 6
    assert re.search(r"^\| [\d.]+ \| nan \| [\d.]+ \| [\d.]+ s \| [\d.]+ min", (out / "4-sample.md").read_text(), re.M)
    assert re.search(r"^\| 64 \| 1 \|.*\| 1/1 \|", (out / "5-pairing.md").read_text(), re.M)  # same optimum


def test_a_failed_step_is_reported_and_the_script_fails(tmp_path):
    """Step 6 without EDM's code: the step's exit is in the summary, its error in its file, gpu.sh exits non-zero."""
    r, out = gpu_sh(tmp_path, "6", EDM_DIR=str(tmp_path / "no-edm"))
    assert r.returncode == 1
    assert summary_rows(out) == {"6 edm": "1"}
    assert "no EDM code there; run tools/carry-edm first" in (out / "6-edm.md").read_text()


@pytest.mark.skipif(not (EDM / "training" / "training_loop.py").is_file(),
                    reason="EDM's code is not exported (tools/carry-edm SOURCE -> third_party/edm)")
def test_dry_edm_step_reads_our_zip_with_edms_code(tmp_path):
    r, out = gpu_sh(tmp_path, "6")
    assert r.returncode == 0, r.stderr[-3000:]
    text = (out / "6-edm.md").read_text()
    assert "EDM read 64 images (labels: False) from edm-data.zip equal to ours" in text
    assert "our loop (bf16, tiny network, CPU) logged 2 ticks" in text


def test_rehearsal_step_plans_every_stage_on_cuda(tmp_path):
    """Step 2's real command (device cuda, paper batch and pools) as snakemake -n: both paper configs resolve, and
    every stage that has a device (train, sample, discriminators, FID, trajectories) is planned on CUDA."""
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_rehearsal.py"), "--device", "cuda", "--plan",
                        "--work", str(tmp_path)], capture_output=True, text=True, timeout=600, env=ENV)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    for cond in ("uncond", "cond"):
        section = r.stdout.split(f"## cifar10-{cond}:")[1].split("##")[0]
        rows = dict(re.findall(r"^\| ([a-z-]+) \| \d+ \| ([^|]+) \|$", section, re.M))
        for stage in ("train", "sample", "train-disc", "evaluate", "fid-ref", "trajectory"):
            done, total = rows[stage].strip().split("/")
            assert done == total and int(total) > 0, (cond, stage, rows[stage])
        log = (tmp_path / cond / "snakemake.log").read_text()
        specs = [json.loads(m) for m in re.findall(r"-m aot train --data \S+ --spec '(\{.*?\})'", log)]
        assert len(specs) == 2 and all(s["batch"] == 64 and s["device"] == "cuda" for s in specs)
        assert {s["pool"] for s in specs} == {512 if cond == "uncond" else 2048}
        assert any(job_settings(ln).get("batch") == 500 for ln in log.splitlines() if "-m aot sample " in ln)


def test_edm_zip_holds_the_images_and_labels_as_edms_dataset_tool_writes_them(tmp_path):
    """Read back with zipfile, PIL and json alone: one PNG per image in folders of 1000, labels by file name."""
    from PIL import Image

    sys.path.insert(0, str(ROOT / "bench"))
    from edm_side_by_side import write_edm_zip

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(1003, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, size=1003)
    path = write_edm_zip(tmp_path / "d.zip", images, labels)
    with zipfile.ZipFile(path) as z:
        names = sorted(n for n in z.namelist() if n.endswith(".png"))
        assert names[0] == "00000/img00000000.png" and names[-1] == "00001/img00001002.png" and len(names) == 1003
        meta = dict(json.loads(z.read("dataset.json"))["labels"])
        for i in (0, 999, 1000, 1002):
            img = np.array(Image.open(io.BytesIO(z.read(names[i]))))
            assert img.shape == (32, 32, 3) and np.array_equal(img.transpose(2, 0, 1), images[i])
            assert meta[names[i]] == labels[i]
    with zipfile.ZipFile(write_edm_zip(tmp_path / "u.zip", images[:2], None)) as z:
        assert json.loads(z.read("dataset.json")) == {"labels": None}


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env=env).stdout.strip()


def test_carry_edm_exports_only_the_training_code_of_one_commit(tmp_path):
    """tools/carry-edm on a repository laid out as NVlabs/edm: the training code of the named commit (not the
    working tree, not the rest of the repository) lands in DEST with COMMIT; a repository that is not EDM is
    refused in one line and leaves the earlier export as it was."""
    src = tmp_path / "edm"
    for f in ("train.py", "dnnlib/util.py", "torch_utils/misc.py", "training/training_loop.py", "LICENSE.txt",
              "generate.py", "docs/big.png"):
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        (src / f).write_text(f"# {f}\n")
    git(src, "init", "-q")
    git(src, "add", "-A")
    git(src, "commit", "-q", "-m", "edm")
    commit = git(src, "rev-parse", "HEAD")
    (src / "train.py").write_text("# changed after the commit\n")
    dest = tmp_path / "third_party" / "edm"
    tool = [str(ROOT / "tools" / "carry-edm")]
    r = subprocess.run([*tool, str(src), str(dest)], capture_output=True, text=True, env={**os.environ,
                                                                                          "EDM_COMMIT": commit})
    assert r.returncode == 0, r.stderr
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert files == ["COMMIT", "LICENSE.txt", "dnnlib/util.py", "torch_utils/misc.py", "train.py",
                     "training/training_loop.py"]
    assert (dest / "train.py").read_text() == "# train.py\n" and (dest / "COMMIT").read_text().strip() == commit
    other = tmp_path / "other"
    other.mkdir()
    (other / "x").write_text("x")
    git(other, "init", "-q")
    git(other, "add", "-A")
    git(other, "commit", "-q", "-m", "x")
    r = subprocess.run([*tool, str(other), str(dest)], capture_output=True, text=True,
                       env={**os.environ, "EDM_COMMIT": git(other, "rev-parse", "HEAD")})
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "not NVlabs/edm" in r.stderr
    assert (dest / "COMMIT").read_text().strip() == commit
