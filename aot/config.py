"""Config checking: JSON schema (workflow/schemas/config.schema.yaml) + the rules a schema cannot say.

Errors are one line that names the key and the fix, raised before any job starts. This module imports no
torch, so the Snakefile can use it at parse time in well under a second.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A config key or value is wrong; the message is one line naming the key and the fix."""


def load_yaml(path: str | Path) -> dict:
    with open(path) as f:
        return yaml.safe_load(f) or {}


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


def schema_errors(config: dict, schema: dict) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), str(e.absolute_path)))
    out = []
    for e in errors:
        if e.validator == "additionalProperties":
            out.append(f"{_where(e.absolute_path)}: {e.message} (remove or fix the key; see config/README.md)")
        else:
            out.append(f"{_where(e.absolute_path)}: {e.message} (see config/README.md)")
    return out


def semantic_errors(cfg: dict) -> list[str]:
    """Rules across keys that the JSON schema cannot express."""
    out = []
    t, s = cfg["train"], cfg["sample"]
    procs = max(1, t["gpus"])
    if t["batch"] % procs:
        out.append(f"train.batch: {t['batch']} is not divisible by train.gpus={procs}")
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
    if s["sigma_min"] >= s["sigma_max"]:
        out.append(f"sample.sigma_min: {s['sigma_min']} must be below sample.sigma_max {s['sigma_max']}")
    keys = [(g["rho"], g["steps"]) for g in s["grid"]]
    if len(set(keys)) != len(keys):
        out.append("sample.grid: repeated (rho, steps) entries; list each setting once")
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
    if cfg["dataset"]["source"] != "cifar10" and cfg["dataset"].get("archive"):
        out.append("dataset.archive: only used with source: cifar10; remove it")
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
    errs = schema_errors(cfg, schema)
    if not errs:
        _fill_defaults(cfg, schema)
        errs = schema_errors(cfg, schema) or semantic_errors(cfg)
    if errs:
        more = f" (+{len(errs) - 1} more)" if len(errs) > 1 else ""
        raise ConfigError(f"config error: {errs[0]}{more}")
    return cfg


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


def setting_name(rho: float, steps: int) -> str:
    """Sampler setting as a path component, e.g. rho7-steps18 (rho 7.5 -> rho7.5)."""
    return f"rho{rho:g}-steps{steps}"
