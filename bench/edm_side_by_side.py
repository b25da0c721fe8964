"""Training throughput: EDM's own training loop (NVlabs/edm train.py) against ours, side by side on one GPU.

Both train EDM's CIFAR-10 NCSN++ (56.4M parameters, dropout 0.13, augmentation p = 0.12 with its 9 labels, Adam at
lr 1e-3 ramped over 10 Mimg, EMA half-life 0.5 Mimg) at the same batch on the same synthetic 32x32 images: EDM reads
them from a dataset zip in its own format (written here: ``00000/img00000000.png`` ... and ``dataset.json`` with the
labels, what EDM's dataset_tool.py writes), ours from the prepared-dataset npz. Each loop runs in its own process;
its throughput is 1 / (mean sec/kimg) over its ticks of 1 kimg after the warm-up ones (EDM: from its stats.jsonl,
unrounded; ours: the run's log.jsonl). The ratio ours/EDM is what counts; a script, never a test.

EDM's code is not part of this project: ``tools/carry-edm`` exports it into the git-ignored third_party/edm.

    python bench/edm_side_by_side.py --edm third_party/edm --kimg 6                    # uncond
    python bench/edm_side_by_side.py --edm third_party/edm --kimg 6 --cond             # per-class AOT, pool 2048
    python bench/edm_side_by_side.py --edm third_party/edm --runs fp32:none,bf16:aot --edm-fp16
    python bench/edm_side_by_side.py --edm third_party/edm --dry                       # CPU: data + commands only

``--dry`` (no GPU: EDM's loop needs CUDA and NCCL) writes the zip, reads it back with EDM's own ImageFolderDataset
and checks it holds exactly our images and labels, parses EDM's command line with EDM's own click command (every
option and value valid), and runs our loop at a tiny size on the CPU.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TINY_NET = dict(model_channels=16, channel_mult=[1, 2], channel_mult_emb=1, num_blocks=1, attn_resolutions=[16],
                dropout=0.13)  # --dry only: a few CPU steps of our loop


def write_edm_zip(path: Path, images: np.ndarray, labels: np.ndarray | None) -> Path:
    """uint8 (N, C, H, W) images as EDM's dataset zip: one PNG per image in folders of 1000, ``dataset.json``
    ``{"labels": [[name, label], ...]}`` (null without labels), as EDM's dataset_tool.py writes them."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    names = [f"{i // 1000:05d}/img{i:08d}.png" for i in range(len(images))]
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        for name, img in zip(names, images, strict=True):
            buf = io.BytesIO()
            hwc = img.transpose(1, 2, 0)
            Image.fromarray(hwc[:, :, 0] if hwc.shape[2] == 1 else hwc).save(buf, format="png", compress_level=0)
            z.writestr(name, buf.getvalue())
        meta = {"labels": [[n, int(y)] for n, y in zip(names, labels, strict=True)] if labels is not None else None}
        z.writestr("dataset.json", json.dumps(meta))
    return path


def edm_command(edm: Path, *, data: Path, outdir: Path, cond: bool, batch: int, kimg: int, fp16: bool,
                seed: int) -> list[str]:
    """EDM's train.py for CIFAR-10 NCSN++ (its defaults: lr 10e-4, EMA 0.5 Mimg, dropout 0.13, augment 0.12) on one
    process; one tick per kimg, no snapshots or state dumps before the end."""
    return [sys.executable, str(edm / "train.py"), f"--outdir={outdir}", f"--data={data}", f"--cond={int(cond)}",
            "--arch=ncsnpp", "--precond=edm", f"--batch={batch}", f"--duration={kimg / 1000}", "--lr=10e-4",
            "--ema=0.5", "--dropout=0.13", "--augment=0.12", f"--fp16={int(fp16)}", "--tick=1", "--snap=100000",
            "--dump=100000", f"--seed={seed}", "--nosubdir"]


def our_spec(*, cond: bool, pairing: str, batch: int, pool: int, kimg: float, precision: str, device: str,
             seed: int, network: dict | None = None) -> dict:
    """Our train spec of the same run: the paper configs' NCSN++ recipe at this batch, one process."""
    from aot.models.presets import ARCH_PRESETS

    return dict(pairing=pairing, cond=cond, arch="ncsnpp", network=network or dict(ARCH_PRESETS["ncsnpp"]),
                kimg=kimg, batch=batch, pool=pool, augment_p=0.12, lr=1e-3, lr_rampup_kimg=10000,
                ema_halflife_kimg=500, ema_rampup_ratio=0.05, seed=seed, tick_kimg=1, state_kimg=1e9,
                device=device, precision=precision)


def steady_rate(sec_per_kimg: list[float], warmup: int) -> float:
    """kimg/s over the ticks after the first ``warmup``: 1 / mean(sec/kimg)."""
    steady = sec_per_kimg[warmup:]
    if not steady:
        raise SystemExit(f"only {len(sec_per_kimg)} ticks, none after the {warmup} warm-up ones: raise --kimg")
    return 1 / statistics.mean(steady)


def edm_ticks(run_dir: Path) -> tuple[list[float], float]:
    """sec/kimg of every tick EDM logged after its first (tick 0 is a single step) and its peak GPU memory (GiB)."""
    rows = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines() if line.strip()]
    return ([r["Timing/sec_per_kimg"]["mean"] for r in rows[1:]],
            max(r["Resources/peak_gpu_mem_gb"]["mean"] for r in rows))


def our_ticks(run_dir: Path) -> list[float]:
    """sec/kimg of every tick of our run (its log.jsonl)."""
    (log,) = run_dir.glob("*/log.jsonl")
    return [1 / json.loads(line)["kimg_per_s"] for line in log.read_text().splitlines() if line.strip()]


def run(cmd: list[str], log: Path, env: dict) -> None:
    with open(log, "w") as f:
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    if r.returncode:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        raise SystemExit(f"{cmd[1]} exited {r.returncode}; the end of {log}:\n{tail}")


def dry(args, ds, work: Path, env: dict) -> None:
    """No GPU: the same data and commands, checked with EDM's own code; our loop at a tiny size on the CPU."""
    sys.path.insert(0, str(args.edm))
    from train import main as edm_main  # EDM's click command
    from training.dataset import ImageFolderDataset

    zip_path = write_edm_zip(work / "edm-data.zip", ds.train_images, ds.train_labels if args.cond else None)
    edm_ds = ImageFolderDataset(path=str(zip_path), use_labels=args.cond, cache=False)
    assert len(edm_ds) == len(ds.train_images) and edm_ds.resolution == 32 and edm_ds.num_channels == 3
    for i in (0, 1, len(edm_ds) - 1):
        image, label = edm_ds[i]
        assert np.array_equal(image, ds.train_images[i]), f"image {i} differs in EDM's reading of the zip"
        if args.cond:
            assert int(np.argmax(label)) == ds.train_labels[i] and label.shape == (10,)
    cmd = edm_command(args.edm, data=zip_path, outdir=work / "edm", cond=args.cond, batch=args.batch,
                      kimg=int(args.kimg), fp16=False, seed=args.seed)
    ctx = edm_main.make_context("train.py", cmd[2:])  # raises on an unknown option or a bad value
    assert ctx.params["arch"] == "ncsnpp" and ctx.params["batch"] == args.batch and ctx.params["nosubdir"]
    print(f"dry: EDM read {len(edm_ds)} images (labels: {args.cond}) from {zip_path.name} equal to ours; "
          f"its train.py accepts: {' '.join(cmd[2:])}")
    for precision in dict.fromkeys(p for p, _ in args.runs):
        spec = our_spec(cond=args.cond, pairing="aot", batch=4, pool=8, kimg=0.016, precision=precision,
                        device="cpu", seed=args.seed, network=TINY_NET)
        spec["tick_kimg"] = 0.008
        d = work / f"ours-{precision}"
        run([sys.executable, "-m", "aot", "train", "--data", str(work / "ds.npz"), "--spec", json.dumps(spec),
             "--run-dir", str(d / "runs"), "--out", str(d / "net.pt"), "--stats", str(d / "stats.json"),
             "--no-progress"], work / f"ours-{precision}.log", env)
        print(f"dry: our loop ({precision}, tiny network, CPU) logged {len(our_ticks(d / 'runs'))} ticks")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--edm", type=Path, default=ROOT / "third_party" / "edm", help="EDM's code (tools/carry-edm)")
    p.add_argument("--kimg", type=int, default=6, help="length of every run in kimg (ticks of 1 kimg)")
    p.add_argument("--warmup", type=int, default=1, help="ticks left out at the start of each run")
    p.add_argument("--batch", type=int, default=64, help="batch per step (the paper: 64 per GPU)")
    p.add_argument("--pool", type=int, default=None, help="our AOT pool (default 512, 2048 with --cond)")
    p.add_argument("--cond", action="store_true", help="class-conditional (ours: per-class AOT pairing)")
    p.add_argument("--runs", default="fp32:none,fp32:aot,bf16:aot",
                   help="our runs, precision:pairing (train.precision: fp32 | tf32 | bf16; pairing: none | aot)")
    p.add_argument("--edm-fp16", action="store_true", help="also run EDM's own mixed precision (--fp16=1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, default=None, help="folder for data, runs and logs (default: a temp dir)")
    p.add_argument("--dry", action="store_true", help="CPU: check data and commands, tiny run of ours")
    args = p.parse_args()
    args.runs = [tuple(r.split(":")) for r in args.runs.split(",")]
    if not all(len(r) == 2 and r[0] in ("fp32", "tf32", "bf16") and r[1] in ("none", "aot") for r in args.runs):
        raise SystemExit(f"--runs: give precision:pairing pairs, e.g. fp32:none,bf16:aot (got {args.runs})")
    args.pool = args.pool or (2048 if args.cond else 512)
    if not (args.edm / "training" / "training_loop.py").is_file():
        raise SystemExit(f"--edm {args.edm}: no EDM code there; run tools/carry-edm first")

    import torch

    from aot.data.datasets import save_dataset
    from aot.data.sources import synthetic_dataset

    work = args.work or Path(tempfile.mkdtemp(prefix="edm-side-by-side-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(":"),
           "PYTHONUNBUFFERED": "1"}
    ds = synthetic_dataset(n_train=64 if args.dry else max(4096, 2 * args.pool), n_test=16, seed=args.seed)
    save_dataset(work / "ds.npz", ds)
    if args.dry:
        return dry(args, ds, work, env)
    if not torch.cuda.is_available():
        raise SystemExit("EDM's training loop needs CUDA; use --dry on a machine without a GPU")

    zip_path = write_edm_zip(work / "edm-data.zip", ds.train_images, ds.train_labels if args.cond else None)
    rows = []
    edm_runs = [False, True] if args.edm_fp16 else [False]
    for fp16 in edm_runs:
        d = work / f"edm-{'fp16' if fp16 else 'fp32'}"
        run(edm_command(args.edm, data=zip_path, outdir=d, cond=args.cond, batch=args.batch, kimg=args.kimg,
                        fp16=fp16, seed=args.seed), work / f"{d.name}.log", env)
        ticks, peak = edm_ticks(d)
        rows.append(dict(loop="EDM train.py", precision="fp16 (EDM --fp16)" if fp16 else "fp32", pairing="none",
                         kimg_s=steady_rate(ticks, args.warmup), ticks=len(ticks), peak=f"{peak:.2f}"))
    for precision, pairing in args.runs:
        d = work / f"ours-{precision}-{pairing}"
        spec = our_spec(cond=args.cond, pairing=pairing, batch=args.batch, pool=args.pool, kimg=args.kimg,
                        precision=precision, device="cuda", seed=args.seed)
        run([sys.executable, "-m", "aot", "train", "--data", str(work / "ds.npz"), "--spec", json.dumps(spec),
             "--run-dir", str(d / "runs"), "--out", str(d / "net.pt"), "--stats", str(d / "stats.json"),
             "--no-progress"], work / f"{d.name}.log", env)
        ticks = our_ticks(d / "runs")
        rows.append(dict(loop="ours (aot train)", precision=precision, pairing=pairing,
                         kimg_s=steady_rate(ticks, args.warmup), ticks=len(ticks), peak=""))
    base = rows[0]["kimg_s"]
    commit = (args.edm / "COMMIT").read_text()[:7] if (args.edm / "COMMIT").is_file() else "(commit unknown)"
    print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}, NVlabs/edm {commit}; "
          f"NCSN++ {'cond' if args.cond else 'uncond'}, batch {args.batch}, our pool {args.pool}, "
          f"{args.kimg} kimg per run, {args.warmup} warm-up tick(s) left out; work dir {work}")
    print("| loop | precision | pairing | kimg/s | / EDM fp32 | ticks | EDM peak GiB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['loop']} | {r['precision']} | {r['pairing']} | {r['kimg_s']:.3f} | {r['kimg_s'] / base:.3f} | "
              f"{r['ticks']} | {r['peak']} |")


if __name__ == "__main__":
    main()
