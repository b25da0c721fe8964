"""The stage functions behind ``python -m aot <stage>``: each turns its parsed arguments into one call of the
science in the subpackages (imported when the stage runs, so ``-h`` and the config checks stay fast)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from aot.core.download import download


def _threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def cmd_prepare(a) -> None:
    from aot.core.checkpoint import write_json
    from aot.data.datasets import class_subset, save_dataset
    from aot.data.sources import SOURCES

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
    from aot.data.sources import write_digits_pngs

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
        src = download(src, a.cache_dir)
    elif not Path(src).is_file():
        raise FileNotFoundError(f"{src} not found: download the released network and point the config's "
                                "arms.<arm>.checkpoints.<cond> at it")
    summary = import_edm_checkpoint(src, a.out, key=a.key, config={"pairing": a.pairing})
    print(json.dumps(summary, default=str), file=sys.stderr)


def cmd_fetch_dg_classifier(a) -> None:
    from aot.models.dg_assets import fetch_dg_classifier

    print(json.dumps(fetch_dg_classifier(a.out, extractor=a.extractor, quiet=not a.progress)), file=sys.stderr)


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
