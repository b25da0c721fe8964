"""``python -m aot <stage> ...``: one subcommand per workflow rule. Run ``python -m aot <stage> -h`` for options."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _seed_range(text: str) -> range:
    """'0-999' -> range(0, 1000) (inclusive, as EDM's --seeds)."""
    try:
        lo, hi = (int(v) for v in text.split("-"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must look like 0-999, got {text!r}") from None
    if hi < lo:
        raise argparse.ArgumentTypeError(f"seeds: {hi} < {lo}")
    return range(lo, hi + 1)


def _threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def cmd_prepare(a) -> None:
    from aot.core.checkpoint import write_json
    from aot.data.datasets import SOURCES, class_subset, save_dataset

    # Each source takes only its own options (the workflow passes --test-fraction/--split-seed only where used).
    kwargs = {"digits": dict(test_fraction=a.test_fraction, seed=a.split_seed),
              "cifar10": dict(archive=a.archive),
              "synthetic": dict(seed=a.split_seed),
              "images": dict(path=a.path, resolution=a.resolution, test_fraction=a.test_fraction,
                             seed=a.split_seed)}[a.source]
    if a.source == "images" and a.path is None:
        raise ValueError("prepare --source images needs --path (a folder or .zip of images)")
    ds = SOURCES[a.source](**kwargs)
    if a.subset is not None:
        ds = class_subset(ds, a.subset, a.subset_seed)
    sha = save_dataset(a.out, ds)
    info = dict(path=str(a.out), sha256=sha, train=list(ds.train_images.shape), test=list(ds.test_images.shape),
                meta=ds.meta)
    write_json(a.info, info)
    print(json.dumps(info), file=sys.stderr)


def cmd_digits_png(a) -> None:
    from aot.data.datasets import write_digits_pngs

    print(json.dumps(write_digits_pngs(a.out)), file=sys.stderr)


def cmd_train(a) -> None:
    from aot.data.datasets import load_dataset
    from aot.training.loop import train
    from aot.training.spec import TrainSpec

    _threads(a.threads)
    spec = TrainSpec.from_dict(json.loads(a.spec))
    summary = train(spec, load_dataset(a.data), run_dir=a.run_dir, out=a.out, stats_out=a.stats,
                    progress=not a.no_progress, model_name=a.model)
    print(json.dumps(summary), file=sys.stderr)


def cmd_featnet(a) -> None:
    from aot.core.checkpoint import write_json
    from aot.eval.scoring import fit_featnet

    _threads(a.threads)
    info = fit_featnet(a.data, a.out, a.ref, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, seed=a.seed,
                       progress=not a.no_progress)
    write_json(a.info, info)
    print(json.dumps(info), file=sys.stderr)


def cmd_sample(a) -> None:
    from aot.core.samples import save_grid, save_samples
    from aot.sampling.generate import generate

    _threads(a.threads)
    if (a.dg_weight or a.dg_weight_2nd or a.dg_boosting) and a.disc is None:
        raise ValueError("--dg-weight needs --disc (a discriminator checkpoint from `python -m aot train-disc`)")
    arrays = generate(a.ckpt, rho=a.rho, steps=a.steps, seeds=a.seeds, batch=a.batch, sigma_min=a.sigma_min,
                      sigma_max=a.sigma_max, device=a.device, progress=not a.no_progress, disc_path=a.disc,
                      dg_weight=a.dg_weight, dg_weight_2nd=a.dg_weight_2nd, dg_time_min=a.dg_time_min,
                      dg_time_max=a.dg_time_max, dg_boosting=a.dg_boosting,
                      churn=dict(S_churn=a.S_churn, S_min=a.S_min, S_max=a.S_max, S_noise=a.S_noise)
                      if a.S_churn else None)
    save_samples(a.out, arrays)
    if a.grid:
        save_grid(a.grid, arrays["images"])


def cmd_train_disc(a) -> None:
    from aot.core.samples import load_samples
    from aot.data.datasets import load_dataset
    from aot.training.discriminator import DiscSpec, train_discriminator

    _threads(a.threads)
    spec = DiscSpec.from_dict(json.loads(a.spec))
    fake_images, fake_labels, _, _ = load_samples(a.fake)
    summary = train_discriminator(spec, load_dataset(a.data), fake_images, fake_labels, out=a.out,
                                  stats_out=a.stats, state_dir=a.state_dir, progress=not a.no_progress,
                                  model_name=a.model)
    print(json.dumps({k: v for k, v in summary.items() if k != "history"}), file=sys.stderr)


def cmd_evaluate(a) -> None:
    from aot.eval.scoring import score

    _threads(a.threads)
    res = score(a.samples, a.out, metrics=a.metrics, model=a.model, featnet=a.featnet, ref=a.ref,
                kid_subsets=a.kid_subsets, kid_subset_size=a.kid_subset_size, fd_jackknife=a.fd_jackknife,
                features_out=a.features_out,
                fid_ref=a.fid_ref,
                inception_weights=a.inception_weights, inception_sha256=a.inception_sha256, fid_block=a.fid_block,
                device=a.device)
    print(json.dumps(res), file=sys.stderr)


def cmd_fid_ref(a) -> None:
    from aot.eval.scoring import fid_reference

    _threads(a.threads)
    print(json.dumps(fid_reference(a.source, a.out, dataset=a.data, weights=a.inception_weights,
                                   device=a.device, sha256=a.inception_sha256)), file=sys.stderr)


def cmd_trajectory(a) -> None:
    from aot.eval.trajectory import trajectory_stage

    _threads(a.threads)
    trajectory_stage(a.ckpt, a.out, a.grid, rho=a.rho, steps=a.steps, seeds=a.seeds, grid_rows=a.grid_rows,
                     columns=a.columns, fine_steps=a.fine_steps, ref_substeps=a.ref_substeps,
                     ref_steps=a.ref_steps, sigma_min=a.sigma_min, sigma_max=a.sigma_max, device=a.device,
                     model=a.model)


def cmd_grid(a) -> None:
    from aot.core.samples import load_samples, save_grid

    images = load_samples([a.samples])[0]
    save_grid(a.out, images, nrow=a.nrow)


def cmd_tables(a) -> None:
    import yaml

    from aot.report.tables import write_tables

    config = None
    if a.config is not None:
        config = yaml.safe_load(a.config.read_text())
        if not isinstance(config, dict):
            raise ValueError(f"tables --config {a.config}: not a YAML mapping (the resolved experiment config)")
    write_tables(a.metrics, a.stats, a.out_dir, a.trajectory, a.disc_stats, a.features, config=config)


def cmd_figures(a) -> None:
    from aot.report.figures import write_figures

    write_figures(a.metrics, a.stats, a.trajectory, a.out_dir, coupling_csv=a.coupling)


def cmd_import(a) -> None:
    from aot.models.released import import_edm_checkpoint

    src = str(a.src)
    if src.startswith(("http://", "https://")):
        src = _download(src, a.cache_dir)
    elif not Path(src).is_file():
        raise FileNotFoundError(f"{src} not found: download the released network and point the config's "
                                "arms.<arm>.checkpoints.<cond> at it")
    summary = import_edm_checkpoint(src, a.out, key=a.key, config={"pairing": a.pairing})
    print(json.dumps(summary, default=str), file=sys.stderr)


def _download(url: str, cache_dir: Path) -> str:
    """Fetch ``url`` once into ``cache_dir`` (atomic); offline, one line says what to do instead."""
    dest = Path(cache_dir) / url.rstrip("/").rsplit("/", 1)[-1]
    if dest.is_file():
        return str(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    try:
        from torch.hub import download_url_to_file

        download_url_to_file(url, str(tmp), progress=sys.stderr.isatty())
    except Exception as e:  # offline clusters: say which file and where to put it
        tmp.unlink(missing_ok=True)
        raise FileNotFoundError(f"could not download {url} ({type(e).__name__}); fetch it by hand and put it at "
                                f"{dest}, or set the config's checkpoint entry to its local path") from None
    tmp.replace(dest)
    return str(dest)


def cmd_fetch_dg_classifier(a) -> None:
    from aot.models.dg_assets import fetch_dg_classifier

    print(json.dumps(fetch_dg_classifier(a.out, quiet=not a.progress)), file=sys.stderr)


def cmd_fetch_inception(a) -> None:
    from aot.eval.fid import fetch_inception

    print(json.dumps(fetch_inception(a.out)), file=sys.stderr)


def cmd_replicates(a) -> None:
    from aot.report.replicates import write_replicates

    write_replicates(a.tables, a.out_dir)
    print(f"wrote {a.out_dir}/scores.md", file=sys.stderr)


def _resolve(a) -> dict:
    from aot.config.resolve import resolve_config
    from aot.config.yamlio import parse_cli_config

    return resolve_config(a.configfile, parse_cli_config(a.config))


def cmd_check_config(a) -> None:
    _resolve(a)
    print(f"config OK: {', '.join(map(str, a.configfile)) or 'config/config.yaml (the embedded default)'}")


def cmd_show_config(a) -> None:
    from aot.config.describe import describe_config, format_description

    d = describe_config(_resolve(a))
    print(json.dumps(d, indent=1) if a.json else format_description(d))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m aot", description=__doc__)
    sub = p.add_subparsers(dest="stage", required=True, metavar="STAGE")

    def stage(name, fn, help):
        s = sub.add_parser(name, help=help, description=help)
        s.set_defaults(fn=fn)
        return s

    s = stage("prepare", cmd_prepare, "Write a dataset in the project's npz format (+ a JSON with its sha256).")
    s.add_argument("--source", required=True, choices=["digits", "cifar10", "synthetic", "images"])
    s.add_argument("--archive", default=None, help="cifar10: local cifar-10-python.tar.gz or folder (else download)")
    s.add_argument("--path", type=Path, default=None,
                   help="images: a folder or .zip of images (EDM dataset_tool.py output, or one subfolder per class)")
    s.add_argument("--resolution", type=int, default=None,
                   help="images: center-crop and LANCZOS-resize every image to RxR (default: their own size)")
    s.add_argument("--test-fraction", type=float, default=0.2)
    s.add_argument("--split-seed", type=int, default=0)
    s.add_argument("--subset", type=int, default=None,
                   help="keep N training images, N/num_classes per class (dataset.subset; default: all)")
    s.add_argument("--subset-seed", type=int, default=0, help="seed of the per-class draw of --subset")
    s.add_argument("--out", required=True, type=Path)
    s.add_argument("--info", required=True, type=Path)

    s = stage("digits-png", cmd_digits_png, "Write scikit-learn's digits as an image source in EDM's dataset_tool.py "
              "layout (8x8 grayscale PNGs and dataset.json labels): a folder, or a zip if --out ends in .zip.")
    s.add_argument("--out", required=True, type=Path, help="destination folder or .zip (must not exist)")

    s = stage("train", cmd_train, "Train one EDM model (pairing method in the spec); resumes from --run-dir.")
    s.add_argument("--data", required=True, type=Path)
    s.add_argument("--spec", required=True, help="JSON of aot.training.spec.TrainSpec fields")
    s.add_argument("--run-dir", required=True, type=Path, help="resumable state (kept across reruns)")
    s.add_argument("--out", required=True, type=Path, help="final EMA network (.pt)")
    s.add_argument("--stats", required=True, type=Path, help="training summary (.json)")
    s.add_argument("--model", default="", help="name recorded in the summary, e.g. aot-cond")

    s = stage("featnet", cmd_featnet, "Train the feature net for FD/KID and write reference features.")
    s.add_argument("--data", required=True, type=Path)
    s.add_argument("--out", required=True, type=Path)
    s.add_argument("--ref", required=True, type=Path)
    s.add_argument("--info", required=True, type=Path)
    s.add_argument("--epochs", type=int, default=30)
    s.add_argument("--batch-size", type=int, default=128)
    s.add_argument("--lr", type=float, default=1e-3)
    s.add_argument("--seed", type=int, default=0)

    s = stage("sample", cmd_sample, "Heun sampling of a seed range at one (rho, steps): deterministic, or EDM's "
              "stochastic sampler with --S-churn.")
    s.add_argument("--ckpt", required=True, type=Path)
    s.add_argument("--rho", required=True, type=float)
    s.add_argument("--steps", required=True, type=int)
    s.add_argument("--seeds", required=True, type=_seed_range, help="inclusive range, e.g. 0-999")
    s.add_argument("--batch", type=int, default=500)
    s.add_argument("--sigma-min", type=float, default=0.002)
    s.add_argument("--sigma-max", type=float, default=80.0)
    s.add_argument("--device", default="cpu")
    s.add_argument("--out", required=True, type=Path)
    s.add_argument("--grid", type=Path, default=None, help="also write a PNG grid of the first images")
    s.add_argument("--disc", type=Path, default=None, help="Discriminator Guidance: discriminator checkpoint")
    s.add_argument("--dg-weight", type=float, default=0.0, help="DG weight on the Euler evaluation (DG: 2 uncond)")
    s.add_argument("--dg-weight-2nd", type=float, default=0.0, help="DG weight on the 2nd order correction")
    s.add_argument("--dg-time-min", type=float, default=0.01, help="no guidance below this VP time")
    s.add_argument("--dg-time-max", type=float, default=1.0, help="no guidance above this VP time")
    s.add_argument("--dg-boosting", action="store_true", help="DG's boosting (its conditional CIFAR-10 setting)")
    s.add_argument("--S-churn", type=float, default=0.0, help="EDM's stochastic sampler: S_churn (0 = deterministic)")
    s.add_argument("--S-min", type=float, default=0.0, help="re-noise only where sigma >= S_min")
    s.add_argument("--S-max", type=float, default=float("inf"), help="... and sigma <= S_max")
    s.add_argument("--S-noise", type=float, default=1.0, help="scale of the re-noising draws")

    s = stage("train-disc", cmd_train_disc, "Train a Discriminator Guidance discriminator (real vs generated "
              "images, VP-diffused; optionally AOT-paired noise); resumes from --state-dir.")
    s.add_argument("--data", required=True, type=Path, help="the prepared dataset (its training split is real)")
    s.add_argument("--fake", required=True, nargs="+", type=Path, help="sample shards of the score model")
    s.add_argument("--spec", required=True, help="JSON of aot.training.discriminator.DiscSpec fields")
    s.add_argument("--state-dir", required=True, type=Path, help="resumable state (kept across reruns)")
    s.add_argument("--out", required=True, type=Path, help="discriminator checkpoint (.pt)")
    s.add_argument("--stats", required=True, type=Path, help="training summary (.json)")
    s.add_argument("--model", default="", help="name recorded in the summary, e.g. aot_dg-cond")

    s = stage("evaluate", cmd_evaluate, "Score sample shards: FD/KID in the feature net's space and/or Inception FID.")
    s.add_argument("--samples", required=True, nargs="+", type=Path)
    s.add_argument("--out", required=True, type=Path)
    s.add_argument("--metrics", nargs="+", default=["featnet"], choices=["featnet", "inception"])
    s.add_argument("--model", default="")
    s.add_argument("--featnet", type=Path, help="featnet: the feature net checkpoint")
    s.add_argument("--ref", type=Path, help="featnet: reference features of the training split")
    s.add_argument("--kid-subsets", type=int, default=100)
    s.add_argument("--kid-subset-size", type=int, default=1000)
    s.add_argument("--fd-jackknife", type=int, default=50,
                   help="featnet: jackknife groups for the FD's standard deviation (0 = off)")
    s.add_argument("--features-out", type=Path, default=None,
                   help="featnet: also write the samples' features, seeds and the reference stats (npz)")
    s.add_argument("--fid-ref", type=Path, help="inception: reference statistics npz (mu, sigma)")
    s.add_argument("--inception-weights", default=None, help="inception: local inception-2015-12-05.pt")
    s.add_argument("--inception-sha256", default=None,
                   help="inception: trusted sha256 of --inception-weights (else only the official file is loaded)")
    s.add_argument("--fid-block", type=int, default=50000, help="inception: images per FID")
    s.add_argument("--device", default="cpu")

    s = stage("fid-ref", cmd_fid_ref, "Inception reference statistics (clean-fid CIFAR-10, an npz, or the dataset).")
    s.add_argument("--source", required=True, help="cifar10 | dataset | path to an npz with mu, sigma")
    s.add_argument("--data", type=Path, default=None, help="the prepared dataset (with --source dataset)")
    s.add_argument("--inception-weights", default=None)
    s.add_argument("--inception-sha256", default=None, help="trusted sha256 of --inception-weights")
    s.add_argument("--device", default="cpu")
    s.add_argument("--out", required=True, type=Path)

    s = stage("trajectory", cmd_trajectory, "Straightness, curvature and truncation error of Heun trajectories.")
    s.add_argument("--ckpt", required=True, type=Path)
    s.add_argument("--rho", required=True, type=float)
    s.add_argument("--steps", required=True, type=int)
    s.add_argument("--seeds", required=True, type=_seed_range)
    s.add_argument("--grid-rows", type=int, default=4)
    s.add_argument("--columns", type=int, default=11)
    s.add_argument("--fine-steps", type=int, default=256)
    s.add_argument("--ref-substeps", type=int, default=64)
    s.add_argument("--ref-steps", type=int, default=512)
    s.add_argument("--sigma-min", type=float, default=0.002)
    s.add_argument("--sigma-max", type=float, default=80.0)
    s.add_argument("--device", default="cpu")
    s.add_argument("--model", default="")
    s.add_argument("--out", required=True, type=Path)
    s.add_argument("--grid", required=True, type=Path)

    s = stage("grid", cmd_grid, "A PNG grid of the first images of a sample shard.")
    s.add_argument("--samples", required=True, type=Path)
    s.add_argument("--out", required=True, type=Path)
    s.add_argument("--nrow", type=int, default=16)

    s = stage("tables", cmd_tables, "Comparison tables (CSV + Markdown) with the paper's numbers beside ours.")
    s.add_argument("--metrics", required=True, nargs="+", type=Path)
    s.add_argument("--stats", nargs="*", type=Path, default=[])
    s.add_argument("--trajectory", nargs="*", type=Path, default=[])
    s.add_argument("--disc-stats", nargs="*", type=Path, default=[], help="discriminator training summaries")
    s.add_argument("--features", nargs="*", type=Path, default=[],
                   help="evaluate's --features-out files, for the paired comparisons table")
    s.add_argument("--config", type=Path, default=None,
                   help="the resolved experiment config (YAML, e.g. results/<exp>/config.yaml): lets every missing "
                        "cell say which key left it out")
    s.add_argument("--out-dir", required=True, type=Path)

    s = stage("figures", cmd_figures, "Score vs NFE and rho, loss curves, trajectory metrics (PNG).")
    s.add_argument("--metrics", required=True, nargs="+", type=Path)
    s.add_argument("--stats", nargs="*", type=Path, default=[])
    s.add_argument("--trajectory", nargs="*", type=Path, default=[])
    s.add_argument("--coupling", type=Path, default=None, metavar="CSV",
                   help="the tables stage's coupling.csv: also write coupling.png and coupling-straightness.png")
    s.add_argument("--out-dir", required=True, type=Path)

    s = stage("import-checkpoint", cmd_import, "Import a released EDM / EDM-AOT network pickle as a plain "
              "state-dict checkpoint, without running any code from the file.")
    s.add_argument("--src", required=True, help="local .pkl or an http(s) URL (downloaded once into --cache-dir)")
    s.add_argument("--out", required=True, type=Path)
    s.add_argument("--pairing", required=True, help="how the network was trained: none (EDM) or aot (EDM-AOT)")
    s.add_argument("--key", default="ema", help="which network of the pickle")
    s.add_argument("--cache-dir", type=Path, default=Path("resources/checkpoints"))

    s = stage("fetch-dg-classifier", cmd_fetch_dg_classifier, "Download DG's frozen ADM 32x32 classifier "
              "(32x32_classifier.pt, Google Drive) with gdown, verify it loads into aot.models.adm's classifier, and write "
              "it and <out>.sha256; a valid file already at --out is kept.")
    s.add_argument("--out", required=True, type=Path, help="destination (the config's guidance.extractor_weights)")
    s.add_argument("--progress", action="store_true", help="show gdown's progress on stderr")

    s = stage("fetch-inception", cmd_fetch_inception, "Download clean-fid's TF-Inception weights "
              "(inception-2015-12-05.pt) to --out unless present, and check that it is the official file (its size and "
              "sha256, aot.eval.fid.INCEPTION_SHA256) without loading it.")
    s.add_argument("--out", required=True, type=Path, help="destination, e.g. resources/inception-2015-12-05.pt")

    s = stage("replicates", cmd_replicates, "Scores and paired comparisons of one experiment trained several times "
              "(other train.seed), with the spread across training runs.")
    s.add_argument("tables", nargs="+", type=Path, help="results/tables/<experiment> folders, one per training run")
    s.add_argument("--out-dir", required=True, type=Path)

    for name, fn, text in (
            ("check-config", cmd_check_config, "Validate a config as the workflow resolves it."),
            ("show-config", cmd_show_config, "Print what each training and discriminator job of a config would run "
             "(resolved spec, network parameter count), without running anything.")):
        s = stage(name, fn, text + " As Snakemake: the --configfile files alone (later ones merge into earlier ones), "
                  "config/config.yaml when none is given, then --config on top.")
        s.add_argument("configs", nargs="*", type=Path, help="config files (same as --configfile)")
        s.add_argument("--configfile", nargs="+", type=Path, default=[], help="config files, as Snakemake's flag")
        s.add_argument("--config", nargs="+", default=[], metavar="KEY=VALUE", help="overrides, as Snakemake's flag")
        if name == "show-config":
            s.add_argument("--json", action="store_true", help="machine-readable output")

    for name in ("prepare", "train", "train-disc", "featnet", "sample", "evaluate", "fid-ref", "trajectory", "tables",
                 "grid"):
        s = sub.choices[name]
        s.add_argument("--threads", type=int, default=None, help="torch CPU threads")
        s.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    from aot.config.yamlio import ConfigError

    if hasattr(a, "configfile"):
        a.configfile = [*a.configs, *a.configfile]

    try:
        a.fn(a)
    except (ConfigError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0

