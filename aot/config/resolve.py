"""Resolving a config as the workflow does (files merged in order, ``--config`` on top, checked), and the exact
specs its jobs receive. Shared by the Snakefile, ``check-config`` and ``show-config``. Pure Python (no torch), so
the Snakefile uses it at parse time in well under a second.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import yaml

from aot.config.checks import archive_errors, check_config
from aot.config.yamlio import (
    DEFAULT_SCHEMA,
    EMBEDDED_DEFAULT,
    ConfigError,
    load_yaml,
    merge_config,
    typed_cli_overrides,
)
from aot.core.defaults import KNN_K
from aot.core.names import ModelName

# ----------------------------------------------------------------------------
# Resolving a config as the workflow does, and the specs its jobs receive.



def resolve_config(configfiles: list[str | Path] | None = None, cli: dict | None = None,
                   schema_path: str | Path = DEFAULT_SCHEMA) -> dict:
    """The validated config the workflow runs for ``snakemake [--configfile F ...] [--config ...]``.

    With no config file the embedded default (config/config.yaml) is the experiment; with any, those files merged
    in order are the whole experiment (the embedded default is not loaded: none of its keys can leak into a paper
    config). ``cli`` is ``--config`` as Snakemake parsed it (:func:`parse_cli_config`); its nested scalars are read
    as YAML (:func:`typed_cli_overrides`) and merged on top. Raises ConfigError (one line) if anything is wrong,
    including a ``dataset.archive`` folder without CIFAR-10 in it (:func:`archive_errors`).
    """
    cfg: dict = {}
    for path in configfiles or [EMBEDDED_DEFAULT]:
        merge_config(cfg, load_yaml(path))
    merge_config(cfg, typed_cli_overrides(cli or {}))
    try:
        cfg = check_config(cfg, schema_path)
    except ConfigError:
        partial = _partial_file_error(cfg, [str(f) for f in configfiles], schema_path) if configfiles else None
        if partial is not None:
            raise partial from None
        raise
    errs = archive_errors(cfg)
    if errs:
        raise ConfigError(f"config error: {errs[0]}")
    return cfg


def _partial_file_error(cfg: dict, configfiles: list[str], schema_path: str | Path) -> ConfigError | None:
    """A config file missing top-level keys is most likely meant as an override of the embedded default: the error
    says that a --configfile is the whole experiment, lists every missing key and shows how to merge it over the
    default. None if no top-level key is missing."""
    missing = [k for k in load_yaml(schema_path).get("required", []) if k not in cfg]
    if not missing:
        return None
    files = ", ".join(configfiles)
    keys = f"key {missing[0]}" if len(missing) == 1 else f"keys {', '.join(missing)}"
    return ConfigError(
        f"config error: {files} {'lacks' if len(configfiles) == 1 else '(merged) lack'} the top-level {keys}: a "
        f"--configfile is the whole experiment (config/config.yaml, the embedded default, is then not read); give "
        f"them, merge over the default in order (--configfile config/config.yaml {' '.join(configfiles)}), or start "
        "from a copy of config/config.yaml")


def network_spec(cfg: dict) -> dict:
    """The network settings a train job gets: the arch's EDM preset with the config's overrides applied, every key
    explicit (so the command shows dropout 0.13, 128 channels, ... rather than an empty override)."""
    from aot.models.presets import ARCH_PRESETS

    net = cfg["network"]
    return copy.deepcopy({**ARCH_PRESETS[net["arch"]], **net.get("overrides", {})})


def train_spec(cfg: dict, model: str) -> dict:
    """The spec handed to ``python -m aot train`` for ``model`` (e.g. 'aot-cond'); its changes trigger a retrain."""
    arm_name, cond = ModelName.parse(model)
    arm, t = cfg["arms"][arm_name], cfg["train"]
    # precision only when not fp32 (as block below): every fp32 spec, and so its run dir, stays as it was
    # The process count is the launcher's; fp32 (the default) is left out so that runs made before the key keep
    # their folders.
    spec = {k: v for k, v in t.items() if k not in ("gpus", "nodes") and not (k == "precision" and v == "fp32")}
    spec.update(pairing=arm["pairing"], knn_k=arm.get("knn_k", KNN_K), cond=(cond == "cond"),
                arch=cfg["network"]["arch"], network=network_spec(cfg))
    if "seed" in arm:
        spec["seed"] = arm["seed"]
    if "block" in arm:  # only when given: every other spec (and its run dir) stays as it was
        spec["block"] = arm["block"]
    return spec


def disc_spec(cfg: dict, guided: str) -> dict:
    """The spec handed to ``python -m aot train-disc`` for a guided model (e.g. 'aot_dg-cond')."""
    run_name, cond = ModelName.parse(guided)
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
    from aot.core.checkpoint import atomic_write_text

    head = (f"# The resolved config of experiment {cfg['experiment']}: every key its jobs ran with, schema defaults "
            "filled in.\n# Written by the workflow (rule resolved_config); rerun the same experiment with "
            f"`snakemake --configfile {path}`.\n")
    if configfiles:
        head += f"# Resolved from: {', '.join(map(str, configfiles))}\n"
    atomic_write_text(path, head + yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None, width=120))
    if log is not None:
        Path(log).write_text(f"resolved {', '.join(map(str, configfiles or [])) or 'the config'} -> {path}\n")


