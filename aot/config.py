"""Config checking: JSON schema (workflow/schemas/config.schema.yaml) + the rules a schema cannot say.

Errors are one line that names the key and the fix, raised before any job starts. This module imports no
torch, so the Snakefile can use it at parse time in well under a second.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A config key or value is wrong; the message is one line naming the key and the fix."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error (YAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                where = f"{getattr(self, 'name', '<config>')} line {key_node.start_mark.line + 1}"
                raise ConfigError(f"config error: {where}: key '{key}' is given twice in one mapping; keep one")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str | Path) -> dict:
    """A config file as YAML reads it (what Snakemake's --configfile gives), with duplicate keys refused."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config error: config file {path} does not exist; give the path of a YAML file "
                          "(shipped: config/*.yaml)")
    text = path.read_text()
    loader = _UniqueKeyLoader(text)
    loader.name = str(path)
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as e:
        raise ConfigError(f"config error: {path} is not valid YAML: {' '.join(str(e).split())}") from None
    finally:
        loader.dispose()
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config error: {path} must be a YAML mapping of config keys (see config/README.md)")
    return data


def _fill_defaults(node: Any, schema: dict) -> None:
    """Insert schema ``default`` values for missing keys, recursively (like Snakemake's validate)."""
    if not isinstance(node, dict):
        return
    for key, sub in schema.get("properties", {}).items():
        if key not in node and "default" in sub:
            node[key] = copy.deepcopy(sub["default"])
        if key in node:
            _fill_defaults(node[key], sub)
            if sub.get("type") == "array" and isinstance(node[key], list) and "items" in sub:
                for item in node[key]:
                    _fill_defaults(item, sub["items"])
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key, value in node.items():
            if key not in schema.get("properties", {}):
                _fill_defaults(value, extra)


def _where(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _validator_class():
    """Draft 2020-12 with one change: ``integer`` means a Python int, so ``steps: 18.0`` is refused here, before any
    job, instead of by the job's argument parser (JSON Schema counts 18.0 as an integer)."""
    import jsonschema

    def is_int(checker, value):
        return isinstance(value, int) and not isinstance(value, bool)

    checker = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", is_int)
    return jsonschema.validators.extend(jsonschema.Draft202012Validator, type_checker=checker)


def nonfinite_errors(node: Any, path: tuple = ()) -> list[str]:
    """Every NaN or infinite number in the config (NaN compares false with every schema bound, so it would pass)."""
    if isinstance(node, dict):
        return [e for k, v in node.items() for e in nonfinite_errors(v, (*path, k))]
    if isinstance(node, list):
        return [e for i, v in enumerate(node) for e in nonfinite_errors(v, (*path, i))]
    if isinstance(node, float) and not math.isfinite(node):
        return [f"{_where(path)}: {node} is not a finite number; give a finite value"]
    return []


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def schema_errors(config: dict, schema: dict) -> list[str]:
    validator = _validator_class()(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), str(e.absolute_path)))
    out = []
    for e in errors:
        if e.validator == "additionalProperties":
            out.append(f"{_where(e.absolute_path)}: {e.message} (remove or fix the key; see config/README.md)")
        elif e.validator == "type" and isinstance(e.instance, str) and _is_number(e.instance):
            how = ("a dot in the mantissa, e.g. 1.0e-4 for 1e-4" if any(c in e.instance.lower() for c in "e.")
                   else f"no quotes: {e.instance.strip()}")
            out.append(f"{_where(e.absolute_path)}: {e.message}: YAML read it as text; write the number with {how}")
        else:
            out.append(f"{_where(e.absolute_path)}: {e.message} (see config/README.md)")
    return out


def semantic_errors(cfg: dict) -> list[str]:
    """Rules across keys that the JSON schema cannot express."""
    out = []
    t, s = cfg["train"], cfg["sample"]
    nodes = t.get("nodes", 1)
    procs = max(1, t["gpus"]) * nodes
    if nodes > 1 and t["gpus"] < 1:
        out.append(f"train.nodes: {nodes} nodes train with train.gpus GPUs on each; set train.gpus (e.g. 8)")
    if t["batch"] % procs:
        by = f"train.gpus={t['gpus']} x train.nodes={nodes} = {procs} processes" if nodes > 1 else f"train.gpus={procs}"
        out.append(f"train.batch: {t['batch']} is not divisible by {by}")
    per_proc = t["batch"] // procs
    batch_gpu = t["batch_gpu"] or per_proc
    if per_proc % batch_gpu:
        out.append(f"train.batch_gpu: {batch_gpu} does not divide the per-process batch {per_proc}")
    if t["pool"] % per_proc:
        out.append(
            f"train.pool: {t['pool']} must be a multiple of the per-process batch {per_proc} "
            "(each pool is consumed by whole optimizer steps)"
        )
    if t["gpus"] > 0 and not t["device"].startswith("cuda"):
        out.append(f"train.device: '{t['device']}' with train.gpus={t['gpus']}; set device: cuda or gpus: 0")
    for name, arm in cfg["arms"].items():
        missing = [c for c in cfg["conditioning"] if "checkpoints" in arm and c not in arm["checkpoints"]]
        if missing:
            out.append(f"arms.{name}.checkpoints: no entry for {missing[0]}; give one per conditioning or remove it")
        if arm["pairing"] == "immiscible":
            mb = t["micro_batch"] or batch_gpu
            if t["pool"] % mb:
                out.append(f"arms.{name}: immiscible pairing needs train.micro_batch ({mb}) to divide train.pool")
        if "block" in arm:
            if arm["pairing"] not in ("aot", "aot-sq"):
                out.append(f"arms.{name}.block: only aot and aot-sq assign in blocks (pairing is "
                           f"{arm['pairing']}); remove it")
            elif t["pool"] % arm["block"]:
                out.append(f"arms.{name}.block: {arm['block']} does not divide train.pool {t['pool']}")
        if "seed" in arm and "checkpoints" in arm:
            out.append(f"arms.{name}.seed: a released checkpoint is not trained here; remove the seed")
    specs = {}  # two arms that would train the very same network
    for name, arm in cfg["arms"].items():
        if "checkpoints" not in arm:
            key = (arm["pairing"], arm.get("knn_k", 8), arm.get("block", t["pool"]), arm.get("seed", t["seed"]))
            if key in specs:
                out.append(f"arms.{name}: trains the same network as arms.{specs[key]} (same pairing, block and "
                           f"seed); give it another seed or remove it")
            specs.setdefault(key, name)
    if s["sigma_min"] >= s["sigma_max"]:
        out.append(f"sample.sigma_min: {s['sigma_min']} must be below sample.sigma_max {s['sigma_max']}")
    keys = [(g["rho"], g["steps"]) for g in s["grid"]]
    if len(set(keys)) != len(keys):
        out.append("sample.grid: repeated (rho, steps) entries; list each setting once")
    for i, g in enumerate(s["grid"]):
        if "churn" in g and g["churn"]["S_min"] >= g["churn"]["S_max"]:
            out.append(f"sample.grid.{i}.churn.S_min: {g['churn']['S_min']} must be below S_max {g['churn']['S_max']}")
    e = cfg["evaluate"]
    if e["fd_jackknife"] == 1:
        out.append("evaluate.fd_jackknife: 1 group has no spread; use 0 (off) or at least 2")
    elif "featnet" in e["metrics"] and e["fd_jackknife"] > s["num_images"] - 2:
        out.append(f"evaluate.fd_jackknife: {e['fd_jackknife']} groups need at least {e['fd_jackknife'] + 2} "
                   f"images; sample.num_images is {s['num_images']}")
    if "inception" in e["metrics"] and s["num_images"] % e["fid_block"]:
        out.append(
            f"sample.num_images: {s['num_images']} is not a multiple of evaluate.fid_block {e['fid_block']} "
            "(each FID uses a whole block of seeds)"
        )
    if s["shard_size"] and s["num_images"] % s["shard_size"]:
        out.append(f"sample.shard_size: {s['shard_size']} does not divide sample.num_images {s['num_images']}")
    tr = cfg.get("trajectory", {})
    for g in tr.get("settings", []):
        if g["steps"] < tr["columns"]:
            out.append(
                f"trajectory.columns: {tr['columns']} is more than the {g['steps']} steps of a trajectory setting"
            )
    out += _guidance_errors(cfg)
    if cfg["experiment"] == "tables":
        out.append("experiment: 'tables' is the folder of every experiment's tables (results/tables/); "
                   "pick another name")
    dataset_errors = _dataset_errors(cfg)
    out += dataset_errors or _network_errors(cfg)  # the network's size needs a valid dataset shape
    return out


def _dataset_errors(cfg: dict) -> list[str]:
    d = cfg["dataset"]
    missing = [k for k in DATASET_REQUIRED_KEYS.get(d["source"], ()) if k not in d]
    if missing:
        what = {"path": "the folder or .zip of the images", "resolution": "the image resolution, e.g. 64"}
        return [f"dataset.{missing[0]}: source {d['source']} needs {what[missing[0]]}; give dataset.{missing[0]}"]
    out = []
    classes = dataset_shape(d)["num_classes"]
    if "cond" in cfg["conditioning"] and classes == 0:
        out.append("conditioning: cond needs labeled images; set dataset.num_classes to the number of classes "
                   "(dataset.json labels or class subfolders) or remove cond")
    sub = d.get("subset")
    if sub is not None and classes and sub % classes:
        out.append(f"dataset.subset: {sub} is not a multiple of the {classes} classes "
                   "(the subset takes the same number of images from each class)")
    return out


def _network_errors(cfg: dict) -> list[str]:
    from aot.presets import ARCH_BACKBONES, BACKBONE_OVERRIDES

    arch = cfg["network"]["arch"]
    model_type = ARCH_BACKBONES[arch]
    out = [f"network.overrides.{k}: not an argument of {model_type} (arch {arch}); remove it"
           for k in cfg["network"].get("overrides", {}) if k not in BACKBONE_OVERRIDES[model_type]]
    levels = len(network_spec(cfg)["channel_mult"])
    res = dataset_shape(cfg["dataset"])["resolution"]
    if res % 2 ** (levels - 1):
        out.append(f"network: {levels} resolution levels (channel_mult) halve {res}x{res} images "
                   f"{levels - 1} times; use at most {int(math.log2(res & -res)) + 1} levels")
    return out


def _guidance_errors(cfg: dict) -> list[str]:
    g = cfg.get("guidance", {})
    if not g.get("runs") or not g.get("enabled", True):
        return []
    out = []
    for name, run in g["runs"].items():
        if run["arm"] not in cfg["arms"]:
            out.append(f"guidance.runs.{name}.arm: '{run['arm']}' is not a key of arms ({', '.join(cfg['arms'])})")
        if name in cfg["arms"]:
            out.append(f"guidance.runs.{name}: the name is also an arm; give the run its own name (e.g. {name}_dg)")
    if g["time_min"] >= g["time_max"]:
        out.append(f"guidance.time_min: {g['time_min']} must be below guidance.time_max {g['time_max']}")
    if g["extractor"] == "adm32" and not g["extractor_weights"]:
        out.append("guidance.extractor_weights: extractor adm32 needs the path of DG's 32x32_classifier.pt")
    if g["extractor"] == "none" and g["extractor_weights"]:
        out.append("guidance.extractor_weights: only used with extractor: adm32; remove it")
    f, s = g["fakes"], cfg["sample"]
    ranges = {"sample": (s["seed_start"], s["seed_start"] + s["num_images"])}
    tr = cfg.get("trajectory", {})
    if tr.get("settings"):
        ranges["trajectory"] = (tr["seed_start"], tr["seed_start"] + tr["num_images"])
    for what, (lo, hi) in ranges.items():
        if f["seed_start"] < hi and lo < f["seed_start"] + f["num_images"]:
            out.append(
                f"guidance.fakes.seed_start: seeds {f['seed_start']}.. overlap the {what} seeds {lo}-{hi - 1}; "
                "move them past both"
            )
    if s["shard_size"] and f["num_images"] % s["shard_size"] and f["num_images"] > s["shard_size"]:
        out.append(
            f"guidance.fakes.num_images: {f['num_images']} is not a multiple of sample.shard_size {s['shard_size']}"
        )
    if g["train"]["batch"] > 2 * f["num_images"]:
        out.append(
            f"guidance.train.batch: {g['train']['batch']} is more than the {2 * f['num_images']} real + "
            "generated training images; lower it or raise guidance.fakes.num_images"
        )
    return out


def check_config(config: dict, schema_path: str | Path = DEFAULT_SCHEMA) -> dict:
    """Validate ``config`` and return a copy with defaults filled in; raise ConfigError (one line) if wrong."""
    schema = load_yaml(schema_path)
    cfg = copy.deepcopy(config)
    errs = nonfinite_errors(cfg) or schema_errors(cfg, schema) or unused_key_errors(cfg)
    if not errs:
        _fill_defaults(cfg, schema)
        _fill_dataset_defaults(cfg["dataset"])
        errs = schema_errors(cfg, schema) or semantic_errors(cfg)
    if errs:
        more = f" (+{len(errs) - 1} more)" if len(errs) > 1 else ""
        raise ConfigError(f"config error: {errs[0]}{more}")
    return cfg


# Image shape and classes of each built-in dataset source (what the networks are built for), known before any data
# exists; an ``images`` source declares them (dataset.resolution, channels, num_classes), see dataset_shape.
SOURCE_SHAPES = {"digits": dict(channels=1, resolution=8), "cifar10": dict(channels=3, resolution=32),
                 "synthetic": dict(channels=3, resolution=32)}
DATASET_CLASSES = 10  # every built-in source has 10 classes

# Keys of ``dataset`` that only some sources read, with their defaults there (CIFAR-10 has an official split).
DATASET_SOURCE_KEYS = {
    "digits": {"test_fraction": 0.2, "split_seed": 0},
    "synthetic": {"split_seed": 0},
    "cifar10": {"archive": None},
    "images": {"channels": 3, "num_classes": 0},
}
DATASET_REQUIRED_KEYS = {"images": ("path", "resolution")}  # no default: the source cannot be read without them
_SOURCE_ONLY_KEYS = ("test_fraction", "split_seed", "archive", "path", "resolution", "channels", "num_classes")


def dataset_shape(d: dict) -> dict:
    """``channels``, ``resolution`` and ``num_classes`` that the networks of (checked) dataset config ``d`` are
    built for, known before any data is read."""
    if d["source"] == "images":
        return dict(channels=d["channels"], resolution=d["resolution"], num_classes=d["num_classes"])
    return dict(SOURCE_SHAPES[d["source"]], num_classes=DATASET_CLASSES)


def unused_key_errors(cfg: dict) -> list[str]:
    """Keys a source never reads, given anyway: refused rather than silently ignored (before defaults are filled)."""
    d = cfg.get("dataset", {})
    used = {*DATASET_SOURCE_KEYS.get(d.get("source"), {}), *DATASET_REQUIRED_KEYS.get(d.get("source"), ())}
    out = []
    for key in _SOURCE_ONLY_KEYS:
        if key in d and key not in used and not (key == "archive" and d[key] is None):
            why = {"cifar10": "CIFAR-10's official test_batch is the held-out split"}.get(d["source"], "not read")
            out.append(f"dataset.{key}: not used with source {d['source']} ({why}); remove it")
    return out


def _fill_dataset_defaults(d: dict) -> None:
    for key, value in DATASET_SOURCE_KEYS.get(d["source"], {}).items():
        d.setdefault(key, value)


def typed_cli_overrides(overrides: dict) -> dict:
    """Snakemake ``--config`` values read as a config file would read them.

    Snakemake types a top-level ``--config key=value`` (int, float, bool), but reads a nested one such as
    ``guidance={enabled: false, train: {epochs: 5}}`` with YAML's BaseLoader, which leaves every scalar a string,
    so the schema would reject ``'false'`` and ``'5'``. Each string leaf is re-read with ``yaml.safe_load``
    (``false`` -> False, ``5`` -> 5, ``null`` -> None); a string that YAML keeps a string but Python reads as a
    number (``1e-4``) becomes that number; anything else (``digits``, a path) stays as typed.

    Returns a new nested dict/list structure; merge it over the config with ``merge_config``.
    """
    if isinstance(overrides, dict):
        return {key: typed_cli_overrides(value) for key, value in overrides.items()}
    if isinstance(overrides, list):
        return [typed_cli_overrides(value) for value in overrides]
    if not isinstance(overrides, str) or not overrides.strip():
        return overrides
    try:
        value = yaml.safe_load(overrides)
    except yaml.YAMLError:
        return overrides
    if isinstance(value, (dict, list)):  # BaseLoader already split the structure; a leaf stays a leaf
        return overrides
    if isinstance(value, str):
        for number in (int, float):
            try:
                return number(overrides)
            except ValueError:
                pass
        return overrides
    return value


def merge_config(config: dict, overrides: dict) -> None:
    """Merge ``overrides`` into ``config`` in place as Snakemake does: mappings recursively, anything else replaced."""
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            merge_config(config[key], value)
        else:
            config[key] = copy.deepcopy(value)


def model_names(cfg: dict, *, imported: bool | None = None) -> list[str]:
    """Models: one per arm and conditioning, e.g. 'aot-cond'. ``imported`` True/False keeps only the arms
    whose networks are imported from released checkpoints / trained here."""
    return [
        f"{arm}-{cond}"
        for arm, a in cfg["arms"].items()
        for cond in cfg["conditioning"]
        if imported is None or imported == ("checkpoints" in a)
    ]


def guided_names(cfg: dict) -> list[str]:
    """Guided models: one per Discriminator Guidance run and conditioning, e.g. 'aot_dg-cond'."""
    g = cfg.get("guidance", {})
    if not g.get("enabled", True):
        return []
    return [f"{run}-{cond}" for run in g.get("runs", {}) for cond in cfg["conditioning"]]


def setting_name(rho: float, steps: int, churn: dict | None = None) -> str:
    """Sampler setting as a path component, e.g. rho7-steps18 (rho 7.5 -> rho7.5); EDM's stochastic sampler adds its
    S_churn, e.g. rho7-steps256-churn40 (a grid holds each (rho, steps) once, so the name is unique)."""
    return f"rho{rho:g}-steps{steps}" + (f"-churn{churn['S_churn']:g}" if churn else "")


# ----------------------------------------------------------------------------
# Resolving a config as the workflow does, and the specs its jobs receive.

EMBEDDED_DEFAULT = REPO / "config" / "config.yaml"


def parse_cli_config(entries: list[str]) -> dict:
    """``--config key=value ...`` as Snakemake 9 parses it (snakemake.cli.parse_config): each value is tried as int,
    float, bool, then YAML's BaseLoader (nested mappings with every scalar a string), else kept as text; ``key=``
    is None. Written here so that ``check-config`` and ``show-config`` need no Snakemake import; a test pins it to
    Snakemake's own parser."""
    import re

    def as_bool(v: str) -> bool:
        if v == "True":
            return True
        if v == "False":
            return False
        raise ValueError(v)

    def base_yaml(v: str):
        return yaml.load(v, Loader=yaml.loader.BaseLoader)

    out: dict = {}
    for entry in entries:
        key, sep, val = entry.partition("=")
        if not sep or not re.fullmatch(r"[a-zA-Z_][\w-]*\w", key):
            raise ConfigError(f"config error: --config {entry!r}: give name=value pairs, e.g. experiment=digits")
        value = None
        if val != "":
            for parse in (int, float, as_bool, base_yaml, str):
                try:
                    value = parse(val)
                except Exception:  # as Snakemake: the first parser that succeeds wins
                    continue
                if not callable(value):
                    break
        merge_config(out, {key: value})
    return out


def resolve_config(configfiles: list[str | Path] | None = None, cli: dict | None = None,
                   schema_path: str | Path = DEFAULT_SCHEMA) -> dict:
    """The validated config the workflow runs for ``snakemake [--configfile F ...] [--config ...]``.

    With no config file the embedded default (config/config.yaml) is the experiment; with any, those files merged
    in order are the whole experiment (the embedded default is not loaded: none of its keys can leak into a paper
    config). ``cli`` is ``--config`` as Snakemake parsed it (:func:`parse_cli_config`); its nested scalars are read
    as YAML (:func:`typed_cli_overrides`) and merged on top. Raises ConfigError (one line) if anything is wrong.
    """
    cfg: dict = {}
    for path in configfiles or [EMBEDDED_DEFAULT]:
        merge_config(cfg, load_yaml(path))
    merge_config(cfg, typed_cli_overrides(cli or {}))
    return check_config(cfg, schema_path)


def network_spec(cfg: dict) -> dict:
    """The network settings a train job gets: the arch's EDM preset with the config's overrides applied, every key
    explicit (so the command shows dropout 0.13, 128 channels, ... rather than an empty override)."""
    from aot.presets import ARCH_PRESETS

    net = cfg["network"]
    return copy.deepcopy({**ARCH_PRESETS[net["arch"]], **net.get("overrides", {})})


def train_spec(cfg: dict, model: str) -> dict:
    """The spec handed to ``python -m aot train`` for ``model`` (e.g. 'aot-cond'); its changes trigger a retrain."""
    arm_name, cond = model.rsplit("-", 1)
    arm, t = cfg["arms"][arm_name], cfg["train"]
    spec = {k: v for k, v in t.items() if k not in ("gpus", "nodes")}  # the process count is the launcher's
    spec.update(pairing=arm["pairing"], knn_k=arm.get("knn_k", 8), cond=(cond == "cond"),
                arch=cfg["network"]["arch"], network=network_spec(cfg))
    if "seed" in arm:
        spec["seed"] = arm["seed"]
    if "block" in arm:  # only when given: every other spec (and its run dir) stays as it was
        spec["block"] = arm["block"]
    return spec


def disc_spec(cfg: dict, guided: str) -> dict:
    """The spec handed to ``python -m aot train-disc`` for a guided model (e.g. 'aot_dg-cond')."""
    run_name, cond = guided.rsplit("-", 1)
    g = cfg["guidance"]
    epochs = g["train"]["epochs"]
    return dict(g["train"], epochs=epochs[cond] if isinstance(epochs, dict) else epochs, cond=(cond == "cond"),
                pairing=g["runs"][run_name]["pairing"], extractor=g["extractor"],
                extractor_weights=g["extractor_weights"] or "", head=g["head"])


def spec_json(spec: dict) -> str:
    return json.dumps(spec, sort_keys=True)


def write_resolved_config(cfg: dict, path: str | Path, log: str | Path | None = None, *,
                          configfiles: list | None = None) -> None:
    """Write the resolved config as YAML (atomically). The file is itself a complete config: ``snakemake
    --configfile <it>`` runs the same experiment (a test checks that it resolves to the same dict)."""
    from aot.checkpoint import atomic_write_text

    head = (f"# The resolved config of experiment {cfg['experiment']}: every key its jobs ran with, schema defaults "
            "filled in.\n# Written by the workflow (rule resolved_config); rerun the same experiment with "
            f"`snakemake --configfile {path}`.\n")
    if configfiles:
        head += f"# Resolved from: {', '.join(map(str, configfiles))}\n"
    atomic_write_text(path, head + yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None, width=120))
    if log is not None:
        Path(log).write_text(f"resolved {', '.join(map(str, configfiles or [])) or 'the config'} -> {path}\n")


def describe_config(cfg: dict) -> dict:
    """What each job of the resolved config would run, without running anything: per trained model the train spec
    and its network's parameter count, per guided model the discriminator spec and the guided-sampling settings.
    Networks are built on torch's ``meta`` device (shapes only), so this takes about a second even for NCSN++."""
    import torch

    from aot.networks import count_parameters
    from aot.train import TrainSpec, build_denoiser

    shape = dataset_shape(cfg["dataset"])
    out: dict = {"experiment": cfg["experiment"], "dataset": dict(cfg["dataset"], **shape),
                 "models": {}, "guided": {}}
    for model in model_names(cfg):
        arm = cfg["arms"][model.rsplit("-", 1)[0]]
        if "checkpoints" in arm:
            out["models"][model] = {"import": arm["checkpoints"][model.rsplit("-", 1)[1]], "pairing": arm["pairing"]}
            continue
        spec = train_spec(cfg, model)
        with torch.device("meta"):
            net, ctor = build_denoiser(TrainSpec.from_dict(spec), {"num_classes": shape["num_classes"]},
                                       shape["resolution"], shape["channels"])
        out["models"][model] = {"train_spec": spec, "parameters": count_parameters(net),
                                "backbone": ctor.get("model_type", "SongUNet"), "label_dim": ctor["label_dim"],
                                "augment_dim": ctor["network"]["augment_dim"], "gpus": cfg["train"]["gpus"],
                                "nodes": cfg["train"].get("nodes", 1)}
    g = cfg["guidance"]
    for guided in guided_names(cfg):
        run_name, cond = guided.rsplit("-", 1)
        run = g["runs"][run_name]
        out["guided"][guided] = {
            "base_model": f"{run['arm']}-{cond}", "disc_spec": disc_spec(cfg, guided),
            "sampler": {"rho": run["rho"], "steps": run["steps"], "nfe": 2 * run["steps"] - 1,
                        "weight": g["weight"][cond], "weight_2nd": g["weight_2nd"], "boosting": g["boosting"][cond],
                        "time_min": g["time_min"], "time_max": g["time_max"]},
            "fake_images": g["fakes"]["num_images"],
            "real_images": cfg["dataset"]["subset"] or {"cifar10": 50000}.get(cfg["dataset"]["source"], "all"),
        }
    return out


def format_description(d: dict) -> str:
    """``describe_config`` as the text ``python -m aot show-config`` prints."""
    ds = d["dataset"]
    classes = f"{ds['num_classes']} classes" if ds["num_classes"] else "unlabeled"
    lines = [f"experiment {d['experiment']}: {ds['source']} ({ds['channels']}x{ds['resolution']}x{ds['resolution']}, "
             f"{classes}" + (f", subset {ds['subset']}" if ds.get("subset") else "") + ")"]
    for model, m in d["models"].items():
        if "import" in m:
            lines.append(f"\nmodel {model}: imported from {m['import']} (pairing {m['pairing']})")
            continue
        s = m["train_spec"]
        lines.append(f"\nmodel {model}: {s['arch']}, {m['parameters']:,} parameters (label_dim {m['label_dim']}, "
                     f"augment_dim {m['augment_dim']}), dropout {s['network']['dropout']}, "
                     + (f"fp16 (loss scaling {s.get('loss_scaling', 1):g}), " if s.get("fp16") else "")
                     + f"pairing {s['pairing']}, "
                     f"pool {s['pool']}, batch {s['batch']} on {max(m['gpus'], 1) * m['nodes']} process(es), "
                     + (f"{m['nodes']} nodes x {m['gpus']} GPUs, " if m["nodes"] > 1 else "") +
                     f"{s['kimg'] / 1000:g} Mimg")
        lines.append(f"  python -m aot train --spec '{spec_json(s)}'")
    for guided, g in d["guided"].items():
        s, smp = g["disc_spec"], g["sampler"]
        lines.append(f"\nguided {guided}: discriminator on {g['real_images']} real + {g['fake_images']} generated "
                     f"images of {g['base_model']}, {s['epochs']} epochs, batch {s['batch']}, lr {s['lr']}, "
                     f"pairing {s['pairing']}; sampling rho {smp['rho']:g}, {smp['steps']} steps ({smp['nfe']} NFE), "
                     f"weight {smp['weight']:g}, boosting {'on' if smp['boosting'] else 'off'}")
        lines.append(f"  python -m aot train-disc --spec '{spec_json(s)}'")
    return "\n".join(lines)
