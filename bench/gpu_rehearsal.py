"""The paper DAG on a GPU: config/cifar10-uncond.yaml and cifar10-cond.yaml through the real Snakefile with every
stage on ``--device`` (a script for bench/gpu.sh, never a test; tests/test_rehearsal.py is its CPU counterpart).

Only sizes change (``--config``), and the files a cluster downloads are replaced by local ones, as in the CPU
rehearsal: a CIFAR-10 archive in the official format with synthetic pixels, a stand-in TorchScript Inception
(tests/fakes.py: the real file's interface, not its cost), DG's ADM classifier with random weights. What stays the
paper's: NCSN++ at 56.4M parameters, the paper's per-GPU batch 64 and pools (512 uncond, 2048 per class), EDM's
augmentation, AOT pairing, 35-NFE Heun sampling at sample.batch 500, FID blocks of 500 seeds, DG discriminators
through the 47.8M-parameter ADM encoder at DG's batch 128 and guided sampling at the paper's settings.

Prints, per config, the wall time, each aot stage's job count and whether every one of its commands named the
device, the trainings' kimg/s from their logs; exits non-zero if a stage that has a device ran anywhere else.

    python bench/gpu_rehearsal.py --device cuda --work /tmp/rehearsal          # both configs, in parallel
    python bench/gpu_rehearsal.py --device cpu --dry --work /tmp/rehearsal     # CPU: tiny network, no ADM encoder
    python bench/gpu_rehearsal.py --device cuda --plan --work /tmp/rehearsal   # any machine: snakemake -n of the above
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the stand-ins the CPU rehearsal uses

from cifar_archive import write_cifar10_archive  # noqa: E402
from fakes import write_fake_inception, write_random_adm_classifier  # noqa: E402
from conftest import copy_workflow  # noqa: E402  (tests/conftest.py: the workflow copy the tests use)

from aot.core.download import sha256_file

KIMG = {"uncond": 0.512, "cond": 2.048}  # one pool of the paper's size: 8 / 32 optimizer steps of 64
DEVICE_STAGES = ("train", "sample", "train-disc", "evaluate", "fid-ref", "trajectory")  # every other stage is CPU


def overrides(cond: str, assets: dict[str, Path], device: str, dry: bool) -> list[str]:
    """Sizes and local files only; --dry: a tiny network and DG without the ADM encoder, 2 images of each kind."""
    runs = "{edm_dg: {rho: 7, steps: 18}, aot_dg: {rho: 72, steps: 15}, aot_dgaot: {rho: 72, steps: 15}}"
    if dry:
        train = (f"train={{kimg: 0.004, batch: 2, pool: {4 if cond == 'uncond' else 40}, lr_rampup_kimg: 0.002, "
                 f"tick_kimg: 0.002, state_kimg: 0.004, device: {device}, gpus: 0}}")
        n, shard, batch, fakes, steps = 2, 2, 2, 2, 2
        net = ["network={overrides: {model_channels: 16, channel_mult: [1, 2], num_blocks: 1, "
               "attn_resolutions: [16]}}"]
        runs = "{edm_dg: {rho: 7, steps: 2}, aot_dg: {rho: 72, steps: 2}, aot_dgaot: {rho: 72, steps: 2}}"
        guidance = (f"guidance={{runs: {runs}, fakes: {{num_images: {fakes}}}, extractor: none, "
                    f"extractor_weights: null, head: {{model_channels: 32, num_head_channels: 32, num_res_blocks: 1}}, "
                    f"train: {{epochs: 1, batch: 2, device: {device}}}}}")
    else:
        train = (f"train={{kimg: {KIMG[cond]}, batch: 64, lr_rampup_kimg: {KIMG[cond] / 2}, tick_kimg: 0.256, "
                 f"state_kimg: {KIMG[cond]}, device: {device}, gpus: {int(device.startswith('cuda'))}}}")
        n, shard, batch, fakes, steps = 1000, 500, 500, 500, 18
        net = []
        guidance = (f"guidance={{runs: {runs}, fakes: {{num_images: {fakes}}}, extractor_weights: "
                    f"'{assets['classifier']}', train: {{epochs: 1, batch: 128, device: {device}}}}}")
    return [
        f"dataset={{archive: '{assets['archive']}', subset: {40 if dry else 'null'}}}",
        train, *net,
        f"sample={{grid: [{{rho: 7, steps: {steps}}}], num_images: {n}, shard_size: {shard}, batch: {batch}, "
        f"device: {device}}}",
        f"evaluate={{fid_ref: dataset, inception_weights: '{assets['inception']}', "
        f"inception_sha256: {sha256_file(assets['inception'])}, fid_block: {n}, device: {device}}}",
        f"trajectory={{settings: [{{rho: 7, steps: {steps}}}], num_images: {2 if dry else 64}, "
        f"fine_steps: {4 if dry else 64}, ref_substeps: {1 if dry else 4}, ref_steps: {4 if dry else 64}, "
        f"columns: {2 if dry else 8}}}",
        guidance,
    ]


def assets_in(d: Path, dry: bool) -> dict[str, Path]:
    d.mkdir(parents=True, exist_ok=True)
    archive = d / "cifar-10-python.tar.gz"
    if not archive.exists():  # 5 x 1000 training images (enough for a per-class pool of 2048), 1000 test
        write_cifar10_archive(archive, per_batch=10 if dry else 1000, test_size=20 if dry else 1000)
    out = {"archive": archive, "inception": d / "inception-2015-12-05.pt", "classifier": d / "32x32_classifier.pt"}
    if not out["inception"].exists():
        write_fake_inception(out["inception"])
    if not dry and not out["classifier"].exists():
        write_random_adm_classifier(out["classifier"])
    return out


def stage_devices(stdout: str) -> dict[str, list[bool]]:
    """aot stage -> for each of its commands in Snakemake's -p output, whether it names the device (flag or spec)."""
    out: dict[str, list[bool]] = {}
    for m in re.finditer(r"-m aot ([a-z-]+) (.*)", stdout):
        stage, args = m.group(1), m.group(2)
        out.setdefault(stage, []).append(bool(re.search(r"--device '?cuda|\"device\": \"cuda", args)))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--work", type=Path, required=True, help="folder for the assets and the two workflow copies")
    p.add_argument("--configs", default="uncond,cond")
    p.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    p.add_argument("--gpu-jobs", type=int, default=4, help="GPU jobs at a time per config (they share the GPU)")
    p.add_argument("--dry", action="store_true", help="CPU smoke run: tiny sizes, DG without the ADM encoder")
    p.add_argument("--plan", action="store_true", help="snakemake -n only: the jobs and commands, nothing run")
    args = p.parse_args()
    if args.device.startswith("cuda") and not args.plan:
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("--device cuda requested but CUDA is not available")

    assets = assets_in(args.work / "assets", args.dry)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(":")}
    procs, t0 = {}, time.perf_counter()
    configs = args.configs.split(",")
    for cond in configs:  # both configs at once: separate copies, the GPU shared
        d = args.work / cond
        copy_workflow(d)
        cmd = [sys.executable, "-m", "snakemake", "--cores", str(max(1, args.cores // len(configs))),
               "--resources", f"gpu={args.gpu_jobs}", "-p", *(["-n"] if args.plan else []), "--configfile",
               f"config/cifar10-{cond}.yaml", "--config", *overrides(cond, assets, args.device, args.dry)]
        log = open(d / "snakemake.log", "w")
        procs[cond] = (subprocess.Popen(cmd, cwd=d, env=env, stdout=log, stderr=subprocess.STDOUT), log)
    failed = False
    for cond, (proc, log) in procs.items():
        rc = proc.wait()
        log.close()
        wall = time.perf_counter() - t0
        d = args.work / cond
        text = (d / "snakemake.log").read_text()
        what = "planned (snakemake -n)" if args.plan else f"{wall:.0f} s wall since start"
        print(f"\n## cifar10-{cond}: snakemake exit {rc}, {what} ({d / 'snakemake.log'})")
        if rc:
            failed = True
            print("\n".join(text.splitlines()[-30:]))
            continue
        stages = stage_devices(text)
        print(f"| aot stage | jobs | on {args.device} |\n|---|---|---|")
        for stage, flags in sorted(stages.items()):
            where = f"{sum(flags)}/{len(flags)}" if stage in DEVICE_STAGES else "CPU stage"
            print(f"| {stage} | {len(flags)} | {where} |")
            if args.device.startswith("cuda") and stage in DEVICE_STAGES and not all(flags):
                failed = True
        missing = [s for s in DEVICE_STAGES if s not in stages]
        if missing:
            print(f"stages that did not run: {', '.join(missing)}")
            failed = True
        if args.plan:
            continue
        R = d / "results" / f"cifar10-{cond}"
        for stats in sorted(R.glob("models/*/train.json")):
            s = json.loads(stats.read_text())
            print(f"{stats.parent.name}: {s['kimg']:g} kimg, {s['kimg_per_second_this_run']:.3f} kimg/s over the run "
                  f"(startup included), pair distance reduction {100 * s['dist_reduction']:.2f}%, "
                  f"wait for pairing {100 * s['wait_fraction']:.2f}%")
        tables = sorted(p.name for p in (d / "results" / "tables" / f"cifar10-{cond}").glob("table*.md"))
        print(f"tables written: {', '.join(tables) or 'none'}")
        failed |= len(tables) < 5
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
