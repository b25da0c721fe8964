"""``python -m aot <stage> ...``: one subcommand per workflow rule. Run ``python -m aot <stage> -h`` for options."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from aot.cli.stages import (
    cmd_check_config,
    cmd_digits_png,
    cmd_evaluate,
    cmd_featnet,
    cmd_fetch_dg_classifier,
    cmd_fetch_inception,
    cmd_fid_ref,
    cmd_figures,
    cmd_grid,
    cmd_import,
    cmd_prepare,
    cmd_replicates,
    cmd_sample,
    cmd_show_config,
    cmd_tables,
    cmd_train,
    cmd_train_disc,
    cmd_trajectory,
)
from aot.core.defaults import SIGMA_MAX, SIGMA_MIN, TEST_FRACTION
from aot.models.dg_assets import CLASSIFIERS


def _seed_range(text: str) -> range:
    """'0-999' -> range(0, 1000) (inclusive, as EDM's --seeds)."""
    try:
        lo, hi = (int(v) for v in text.split("-"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must look like 0-999, got {text!r}") from None
    if hi < lo:
        raise argparse.ArgumentTypeError(f"seeds: {hi} < {lo}")
    return range(lo, hi + 1)


class _Setting(argparse.Action):
    """The flag of a config-level setting, which ``--settings`` may set instead (its dest is the JSON key). Stores as
    argparse's store (store_true: nargs=0, const=True) and records that the flag was given, so that a key given both
    ways is refused."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)
        namespace._flags = getattr(namespace, "_flags", frozenset()) | {self.dest}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m aot", description=__doc__)
    sub = p.add_subparsers(dest="stage", required=True, metavar="STAGE")
    settable: dict[argparse.ArgumentParser, dict[str, argparse.Action]] = {}

    def stage(name, fn, help):
        s = sub.add_parser(name, help=help, description=help)
        s.set_defaults(fn=fn)
        return s

    def setting(s, *flags, required=False, action=None, **kw):
        """A flag of a config-level setting (the workflow passes these in --settings). ``required``: as a flag or
        in --settings, checked by :func:`apply_settings`."""
        if action == "store_true":
            kw.update(nargs=0, const=True, default=False)
        if required:
            kw["help"] = (kw["help"] + "; " if "help" in kw else "") + "required (the flag or the key in --settings)"
        a = s.add_argument(*flags, action=_Setting, **kw)
        a.needed = required
        settable.setdefault(s, {})[a.dest] = a

    s = stage("prepare", cmd_prepare, "Write a dataset in the project's npz format (+ a JSON with its sha256).")
    setting(s, "--source", required=True, choices=["digits", "cifar10", "synthetic", "images"])
    s.add_argument("--archive", default=None, help="cifar10: local cifar-10-python.tar.gz or folder (else download)")
    s.add_argument("--path", type=Path, default=None,
                   help="images: a folder or .zip of images (EDM dataset_tool.py output, or one subfolder per class)")
    setting(s, "--resolution", type=int, default=None,
               help="images: center-crop and LANCZOS-resize every image to RxR (default: their own size)")
    setting(s, "--test-fraction", type=float, default=TEST_FRACTION)
    setting(s, "--split-seed", type=int, default=0)
    setting(s, "--subset", type=int, default=None,
               help="keep N training images, N/num_classes per class (dataset.subset; default: all)")
    setting(s, "--subset-seed", type=int, default=0, help="seed of the per-class draw of --subset")
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
    setting(s, "--epochs", type=int, default=30)
    setting(s, "--batch-size", type=int, default=128)
    setting(s, "--lr", type=float, default=1e-3)
    setting(s, "--seed", type=int, default=0)

    s = stage("sample", cmd_sample, "Heun sampling of a seed range at one (rho, steps): deterministic, or EDM's "
              "stochastic sampler with --S-churn.")
    s.add_argument("--ckpt", required=True, type=Path)
    s.add_argument("--rho", required=True, type=float)
    s.add_argument("--steps", required=True, type=int)
    s.add_argument("--seeds", required=True, type=_seed_range, help="inclusive range, e.g. 0-999")
    setting(s, "--batch", type=int, default=500)
    setting(s, "--sigma-min", type=float, default=SIGMA_MIN)
    setting(s, "--sigma-max", type=float, default=SIGMA_MAX)
    setting(s, "--device", default="cpu")
    s.add_argument("--out", required=True, type=Path)
    s.add_argument("--grid", type=Path, default=None, help="also write a PNG grid of the first images")
    s.add_argument("--disc", type=Path, default=None, help="Discriminator Guidance: discriminator checkpoint")
    setting(s, "--dg-weight", type=float, default=0.0, help="DG weight on the Euler evaluation (DG: 2 uncond)")
    setting(s, "--dg-weight-2nd", type=float, default=0.0, help="DG weight on the 2nd order correction")
    setting(s, "--dg-time-min", type=float, default=0.01, help="no guidance below this VP time")
    setting(s, "--dg-time-max", type=float, default=1.0, help="no guidance above this VP time")
    setting(s, "--dg-boosting", action="store_true", help="DG's boosting (its conditional CIFAR-10 setting)")
    setting(s, "--S-churn", type=float, default=0.0, help="EDM's stochastic sampler: S_churn (0 = deterministic)")
    setting(s, "--S-min", type=float, default=0.0, help="re-noise only where sigma >= S_min")
    setting(s, "--S-max", type=float, default=float("inf"), help="... and sigma <= S_max")
    setting(s, "--S-noise", type=float, default=1.0, help="scale of the re-noising draws")

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
    setting(s, "--metrics", nargs="+", default=["featnet"], choices=["featnet", "inception"])
    s.add_argument("--model", default="")
    s.add_argument("--featnet", type=Path, help="featnet: the feature net checkpoint")
    s.add_argument("--ref", type=Path, help="featnet: reference features of the training split")
    setting(s, "--kid-subsets", type=int, default=100)
    setting(s, "--kid-subset-size", type=int, default=1000)
    setting(s, "--fd-jackknife", type=int, default=50,
               help="featnet: jackknife groups for the FD's standard deviation (0 = off)")
    s.add_argument("--features-out", type=Path, default=None,
                   help="featnet: also write the samples' features, seeds and the reference stats (npz)")
    s.add_argument("--fid-ref", type=Path, help="inception: reference statistics npz (mu, sigma)")
    s.add_argument("--inception-weights", default=None, help="inception: local inception-2015-12-05.pt")
    setting(s, "--inception-sha256", default=None,
               help="inception: trusted sha256 of --inception-weights (else only the official file is loaded)")
    setting(s, "--fid-block", type=int, default=50000, help="inception: images per FID")
    setting(s, "--device", default="cpu")

    s = stage("fid-ref", cmd_fid_ref, "Inception reference statistics (clean-fid CIFAR-10, an npz, or the dataset).")
    setting(s, "--source", required=True, help="cifar10 | dataset | path to an npz with mu, sigma")
    s.add_argument("--data", type=Path, default=None, help="the prepared dataset (with --source dataset)")
    s.add_argument("--inception-weights", default=None)
    setting(s, "--inception-sha256", default=None, help="trusted sha256 of --inception-weights")
    setting(s, "--device", default="cpu")
    s.add_argument("--out", required=True, type=Path)

    s = stage("trajectory", cmd_trajectory, "Straightness, curvature and truncation error of Heun trajectories.")
    s.add_argument("--ckpt", required=True, type=Path)
    s.add_argument("--rho", required=True, type=float)
    s.add_argument("--steps", required=True, type=int)
    s.add_argument("--seeds", required=True, type=_seed_range)
    setting(s, "--grid-rows", type=int, default=4)
    setting(s, "--columns", type=int, default=11)
    setting(s, "--fine-steps", type=int, default=256)
    setting(s, "--ref-substeps", type=int, default=64)
    setting(s, "--ref-steps", type=int, default=512)
    setting(s, "--sigma-min", type=float, default=SIGMA_MIN)
    setting(s, "--sigma-max", type=float, default=SIGMA_MAX)
    setting(s, "--device", default="cpu")
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

    s = stage("fetch-dg-classifier", cmd_fetch_dg_classifier, "Download the frozen ADM classifier Discriminator "
              "Guidance reads features from (adm32: DG's 32x32_classifier.pt from Google Drive, with gdown; adm64: "
              "guided-diffusion's 64x64_classifier.pt), verify it loads into aot.models.adm's classifier, and write it "
              "and <out>.sha256; a valid file already at --out is kept.")
    s.add_argument("--out", required=True, type=Path, help="destination (the config's guidance.extractor_weights)")
    s.add_argument("--extractor", default="adm32", choices=list(CLASSIFIERS), help="the config's guidance.extractor")
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
    for s, actions in settable.items():
        s.add_argument("--settings", metavar="JSON", default=None,
                       help="the stage's settings at once, as one JSON object keyed by their flags' dest names "
                            f"({', '.join(actions)}), each as its flag would read it; a key is given here or as its "
                            "flag, not both (the workflow passes them this way)")
        s.set_defaults(_setting_actions=actions)
    return p


def _json_object(pairs: list) -> dict:
    keys = [k for k, _ in pairs]
    if dup := next((k for k in keys if keys.count(k) > 1), None):
        raise ValueError(f"--settings: key {dup} is given twice")
    return dict(pairs)


def _setting_value(action: argparse.Action, key: str, value):
    """The JSON ``value`` of settings key ``key`` as its flag would read it: true/false for an on/off flag, a list
    for a flag of several values, each item a JSON number for a numeric flag (an integer for an int flag) or a string
    otherwise, then converted by the flag's own type (so a float flag gets a float, and refuses what it refuses) and
    checked against its choices. Raises ValueError naming the key."""
    if action.nargs == 0:
        if not isinstance(value, bool):
            raise ValueError(f"--settings: {key} must be true or false, not {json.dumps(value)}")
        return value
    several = action.nargs in ("+", "*")
    items = value if several and isinstance(value, list) else [value]
    kind = {int: "an integer", float: "a number"}.get(action.type, "a string")
    if several and (not isinstance(value, list) or action.nargs == "+" and not value):
        raise ValueError(f"--settings: {key} must be a non-empty list, not {json.dumps(value)}")
    out = []
    for item in items:
        if action.type in (int, float):  # a JSON number (bool is not one); an int flag refuses 3.0 as it refuses "3.0"
            ok = isinstance(item, (int, float)) and not isinstance(item, bool)
            ok = ok and (action.type is float or isinstance(item, int))
        else:
            ok = isinstance(item, str)
        if not ok:
            raise ValueError(f"--settings: {key} must be {kind}{' each' if several else ''}, not {json.dumps(item)}")
        try:
            v = action.type(str(item)) if action.type else item
        except (TypeError, ValueError, argparse.ArgumentTypeError) as e:
            raise ValueError(f"--settings: {key}: {e}") from None
        if action.choices is not None and v not in action.choices:
            raise ValueError(f"--settings: {key}: {v!r} is not one of {', '.join(map(str, action.choices))}")
        out.append(v)
    return out if several else out[0]


def apply_settings(a: argparse.Namespace) -> argparse.Namespace:
    """Set the keys of ``--settings JSON`` on the parsed arguments ``a`` (:func:`_setting_value`), then check that
    the required settings are there; ``a`` itself is returned. Raises ValueError (one line naming the key) for a key
    the stage does not take, one also given as its flag, or a value of the wrong type."""
    actions = getattr(a, "_setting_actions", None)
    if actions is None:
        return a
    if a.settings is not None:
        try:
            given = json.loads(a.settings, object_pairs_hook=_json_object)
        except json.JSONDecodeError as e:
            raise ValueError(f"--settings: not JSON ({e})") from None
        if not isinstance(given, dict):
            raise ValueError(f"--settings: not a JSON object of settings, but {json.dumps(given)}")
        for key, value in given.items():
            if key not in actions:
                raise ValueError(f"--settings: unknown key {key!r} (python -m aot {a.stage} takes "
                                 f"{', '.join(actions)})")
            if key in getattr(a, "_flags", ()):
                raise ValueError(f"--settings: {key} is given as its flag {actions[key].option_strings[0]} too; "
                                 "give it once")
            setattr(a, key, _setting_value(actions[key], key, value))
    for key, action in actions.items():
        if action.needed and getattr(a, key) is None:
            raise ValueError(f"{a.stage} needs {action.option_strings[0]} (or {key} in --settings)")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    from aot.config.yamlio import ConfigError

    if hasattr(a, "configfile"):
        a.configfile = [*a.configs, *a.configfile]

    try:
        apply_settings(a)
        a.fn(a)
    except (ConfigError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0

