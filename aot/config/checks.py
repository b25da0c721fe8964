"""Config checking: the JSON schema (workflow/schemas/config.schema.yaml) with its defaults filled in, and the rules
a schema cannot say (names, sizes and seed ranges, sources, guidance, archives). Errors are one line that names the
key and the fix, raised before any job starts. Pure Python: the Snakefile runs it at parse time.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

from aot.config.experiment import (
    DATASET_CLASSES,
    DATASET_SOURCE_KEYS,
    dataset_shape,
    fill_dataset_defaults,
    guided_names,
    image_source_info,
    model_names,
)
from aot.config.yamlio import DEFAULT_SCHEMA, ConfigError, is_number, load_yaml
from aot.core.defaults import KNN_K
from aot.data.cifar10_layout import CIFAR10_BATCHES, CIFAR10_FOLDER, cifar10_batch_files
from aot.models.dg_assets import CLASSIFIERS


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


def schema_errors(config: dict, schema: dict) -> list[str]:
    validator = _validator_class()(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), str(e.absolute_path)))
    out = []
    for e in errors:
        if e.validator == "additionalProperties":
            out.append(f"{_where(e.absolute_path)}: {e.message} (remove or fix the key; see config/README.md)")
        elif e.validator == "type" and isinstance(e.instance, str) and is_number(e.instance):
            how = ("a dot in the mantissa, e.g. 1.0e-4 for 1e-4" if any(c in e.instance.lower() for c in "e.")
                   else f"no quotes: {e.instance.strip()}")
            out.append(f"{_where(e.absolute_path)}: {e.message}: YAML read it as text; write the number with {how}")
        else:
            out.append(f"{_where(e.absolute_path)}: {e.message} (see config/README.md)")
    return out


# What a config can ask for. Seeds: every seed key is 0..SEED_MAX (the schema's maximum) and so is every seed a
# range of them reaches: torch seeds its generators with 64 bits, and the training derives its streams from
# 2 * (seed * processes + rank) + 2. Images: an evaluate job holds every sample of its setting in memory (CIFAR-10:
# 3 KB an image, 3 GB at the bound; the paper's protocol is 3 x 50k), a discriminator job every generated image.
# Jobs: Snakemake builds its DAG at 1-4 ms a job on a 2-core machine (22,184 jobs: 30-80 s), before any output.
SEED_MAX = 2**31 - 1


MAX_IMAGES = 1_000_000


MAX_SAMPLING_JOBS = 10_000


def size_errors(cfg: dict) -> list[str]:
    """Seed ranges, image counts and the number of sampling jobs beyond what the workflow can run (see above)."""
    out = []
    s, g = cfg["sample"], cfg["guidance"]
    guided = guided_names(cfg)
    counts = {"sample.num_images": s["num_images"]}
    if guided:
        counts["guidance.fakes.num_images"] = g["fakes"]["num_images"]
    for key, n in counts.items():
        if n > MAX_IMAGES:
            out.append(f"{key}: {n} is more than {MAX_IMAGES:,} images, the most a config can ask for (one job holds "
                       "them all in memory: 3 GB of CIFAR-10 images at that bound; the paper's FID protocol needs "
                       "150,000); lower it")
    ranges = {"sample.seed_start": (s["seed_start"], s["num_images"])}
    if cfg["trajectory"]["settings"]:
        ranges["trajectory.seed_start"] = (cfg["trajectory"]["seed_start"], cfg["trajectory"]["num_images"])
    if guided:
        ranges["guidance.fakes.seed_start"] = (g["fakes"]["seed_start"], g["fakes"]["num_images"])
    for key, (first, n) in ranges.items():
        if first + n - 1 > SEED_MAX:
            out.append(f"{key}: seeds {first}..{first + n - 1} go past {SEED_MAX}, the largest seed (torch seeds "
                       "with 64 bits and derives further seeds from each); start lower")
    if out:
        return out
    jobs, what = sampling_jobs(cfg)
    if jobs > MAX_SAMPLING_JOBS:
        key, fix = (("sample.shard_size", "raise sample.shard_size") if s["shard_size"] else
                    ("sample.grid", "use fewer settings or arms"))
        out.append(f"{key}: the config makes {jobs:,} sampling jobs ({what}); at most {MAX_SAMPLING_JOBS:,}: "
                   f"Snakemake takes 1-4 ms a job to build its DAG, minutes before any output at that many; {fix}")
    return out


def sampling_jobs(cfg: dict) -> tuple[int, str]:
    """The number of sampling jobs (rules sample and sample_guided) of a resolved config, and how it adds up: each
    model x grid setting and each guided model in shards of sample.shard_size (common.smk: shards), and the
    generated images of each guided run's base model at the run's setting (fake_shards)."""
    s, g = cfg["sample"], cfg["guidance"]
    guided = guided_names(cfg)
    per_setting = -(-s["num_images"] // (s["shard_size"] or s["num_images"]))
    f = g["fakes"]["num_images"]
    per_fakes = -(-f // min(s["shard_size"] or f, f))
    fakes = set()
    for name in guided:
        run, cond = name.rsplit("-", 1)
        r = g["runs"][run]
        fakes.add((r["arm"], cond, r["rho"], r["steps"]))
    settings = len(model_names(cfg)) * len(s["grid"]) + len(guided)
    what = f"{per_setting:,} for each of {settings} model settings"
    if fakes:
        what += f", {per_fakes:,} for each of {len(fakes)} sets of generated images"
    return settings * per_setting + len(fakes) * per_fakes, what


def semantic_errors(cfg: dict) -> list[str]:
    """Rules across keys that the JSON schema cannot express."""
    out = size_errors(cfg)
    if out:  # nothing below is worth checking (or computing) for a config that asks for too much
        return out
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
    if t["precision"] == "tf32" and not t["device"].startswith("cuda"):
        out.append(f"train.precision: tf32 is a CUDA mode (TensorFloat-32 convolutions) but train.device "
                   f"is '{t['device']}'; use fp32 or bf16, or device: cuda")
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
            key = (arm["pairing"], arm.get("knn_k", KNN_K), arm.get("block", t["pool"]), arm.get("seed", t["seed"]))
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
    d = cfg["dataset"]
    if d.get("test_fraction") == 0 and "featnet" in e["metrics"]:
        out.append("dataset.test_fraction: 0 leaves no held-out images for the feature net's accuracy; give a "
                   "fraction such as 0.2, or use evaluate.metrics: [inception]")
    res = d.get("resolution")
    if res is not None and res & (res - 1):
        lo = 1 << (res.bit_length() - 1)
        out.append(f"dataset.resolution: {res} is not a power of two (EDM's networks halve it at every level); use "
                   f"{lo} or {2 * lo}")
    elif d["source"] == "images":
        try:
            info = image_source_info(d)
        except ValueError as err:  # ImageSourceError: one line naming the file and the fix
            return [str(err).removeprefix("config error: ")] + out
        out += _unlabeled_errors(cfg, info)
        classes = info["num_classes"]
    else:
        classes = DATASET_CLASSES
    sub = d.get("subset")
    if sub is not None and classes and sub % classes:
        out.append(f"dataset.subset: {sub} is not a multiple of the {classes} classes "
                   "(the subset takes the same number of images from each class)")
    if res is not None and res & (res - 1):
        return out + _network_errors(cfg, None)
    shape = dataset_shape(d)
    return out + _extractor_errors(cfg, shape) + _network_errors(cfg, shape["resolution"])


def _extractor_errors(cfg: dict, shape: dict) -> list[str]:
    """A pretrained guidance extractor reads images of one size: the data must have it."""
    g = cfg.get("guidance", {})
    if not g.get("runs") or not g.get("enabled", True) or g["extractor"] not in CLASSIFIERS:
        return []
    c = CLASSIFIERS[g["extractor"]]
    if (shape["channels"], shape["resolution"]) == (c.channels, c.resolution):
        return []
    fits = [name for name, o in CLASSIFIERS.items() if (o.channels, o.resolution) == (shape["channels"],
                                                                                      shape["resolution"])]
    fix = f"use extractor: {fits[0]}" if fits else "use extractor: none (the head sees the images)"
    return [f"guidance.extractor: {g['extractor']} reads {c.channels}x{c.resolution}x{c.resolution} images, the data "
            f"is {shape['channels']}x{shape['resolution']}x{shape['resolution']}; {fix}, or guidance.enabled: false"]


def _network_errors(cfg: dict, res: int | None) -> list[str]:
    """Overrides the arch's backbone does not take; more resolution levels than the images can be halved."""
    from aot.config.resolve import network_spec
    from aot.models.presets import ARCH_BACKBONES, BACKBONE_OVERRIDES

    arch = cfg["network"]["arch"]
    model_type = ARCH_BACKBONES[arch]
    out = [f"network.overrides.{k}: not an argument of {model_type} (arch {arch}); remove it"
           for k in cfg["network"].get("overrides", {}) if k not in BACKBONE_OVERRIDES[model_type]]
    if out or res is None:
        return out
    levels = len(network_spec(cfg)["channel_mult"])
    if res % 2 ** (levels - 1):
        out.append(f"network: {levels} resolution levels (channel_mult) halve {res}x{res} images "
                   f"{levels - 1} times; use at most {int(math.log2(res & -res)) + 1} levels")
    return out


def _unlabeled_errors(cfg: dict, info: dict) -> list[str]:
    """An unlabeled image source has one class: no conditional model, no classifier feature net."""
    if info["labeled"]:
        return []
    path, out = cfg["dataset"]["path"], []
    if "cond" in cfg["conditioning"]:
        out.append(f"conditioning: cond needs class labels and {path} has none (no dataset.json labels, no class "
                   "subfolders); use conditioning: [uncond], or put each class's images in a subfolder of its own")
    if "featnet" in cfg["evaluate"]["metrics"]:
        out.append(f"evaluate.metrics: featnet is a classifier trained on the class labels and {path} has none; use "
                   "metrics: [inception] (FID against the prepared images), or label the images (class subfolders "
                   "or dataset.json)")
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
    if g["extractor"] in CLASSIFIERS and not g["extractor_weights"]:
        c = CLASSIFIERS[g["extractor"]]
        out.append(f"guidance.extractor_weights: extractor {g['extractor']} needs the path of {c.publisher} {c.file} "
                   "(the workflow downloads it there)")
    if g["extractor"] == "none" and g["extractor_weights"]:
        out.append(f"guidance.extractor_weights: only used with extractor: {' or '.join(CLASSIFIERS)}; remove it")
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
        if cfg["dataset"]["source"] == "images":  # the FID reference of one's own images is those images
            cfg["evaluate"].setdefault("fid_ref", "dataset")
        _fill_defaults(cfg, schema)
        fill_dataset_defaults(cfg["dataset"])
        errs = schema_errors(cfg, schema) or semantic_errors(cfg)
    if errs:
        more = f" (+{len(errs) - 1} more)" if len(errs) > 1 else ""
        raise ConfigError(f"config error: {errs[0]}{more}")
    return cfg


def unused_key_errors(cfg: dict) -> list[str]:
    """Keys a source never reads, given anyway: refused rather than silently ignored (before defaults are filled)."""
    d = cfg.get("dataset", {})
    used = DATASET_SOURCE_KEYS.get(d.get("source"), {})
    out = []
    for key in ("test_fraction", "split_seed", "archive", "path", "resolution", "channels", "num_classes"):
        if key in d and key not in used and not (key in ("archive", "resolution") and d[key] is None):
            why = {"cifar10": "CIFAR-10's official test_batch is the held-out split"}.get(d["source"], "not read")
            if key in ("path", "resolution", "channels", "num_classes"):
                why = "only source images reads it"
            out.append(f"dataset.{key}: not used with source {d['source']} ({why}); remove it")
    if d.get("source") == "images" and d.get("path") is None:
        out.append("dataset.path: source images needs the folder or .zip of images; set dataset.path (e.g. "
                   "dataset={source: images, path: my_images/})")
    return out


def archive_errors(cfg: dict) -> list[str]:
    """A dataset.archive folder without CIFAR-10's batches (a file is checked by the job that reads it)."""
    archive = cfg["dataset"].get("archive")
    if cfg["dataset"]["source"] != "cifar10" or not archive or not Path(archive).is_dir():
        return []
    try:
        missing = [n for n in CIFAR10_BATCHES if n not in cifar10_batch_files(archive)]
    except OSError as e:
        return [f"dataset.archive: {archive}: the folder cannot be read ({e.strerror}); point it at "
                "cifar-10-python.tar.gz or the folder it extracts to"]
    if missing:
        return [f"dataset.archive: {archive} is a folder without CIFAR-10 (no {', '.join(missing)} in it or in a "
                f"folder right below it, such as {CIFAR10_FOLDER}/); point it at cifar-10-python.tar.gz or the "
                "folder it extracts to, or set it to null to download"]
    return []
