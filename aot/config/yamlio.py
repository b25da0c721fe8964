"""Reading configs: YAML files (a key given twice in one mapping refused; merge keys as PyYAML reads them),
Snakemake's ``--config`` entries with their nested scalars read as YAML, and merging in order. Pure Python.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
EMBEDDED_DEFAULT = REPO / "config" / "config.yaml"  # the experiment when no --configfile is given


class ConfigError(ValueError):
    """A config key or value is wrong; the message is one line naming the key and the fix."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error (YAML keeps the last).

    Merge keys (``<<: {kimg: 3}`` or ``<<: *anchor``) read as ``yaml.safe_load`` reads them: a key given beside the
    merge overrides the merged one, as YAML allows; each merged mapping's own keys must be unique too."""

    def construct_mapping(self, node, deep=False):
        self._check_unique(node, deep)
        return super().construct_mapping(node, deep=deep)

    def _check_unique(self, node: yaml.MappingNode, deep: bool) -> None:
        seen = set()
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                merged = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for m in merged:
                    if isinstance(m, yaml.MappingNode):  # anything else: flatten_mapping's own error
                        self._check_unique(m, deep)
                continue
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                where = f"{getattr(self, 'name', '<config>')} line {key_node.start_mark.line + 1}"
                raise ConfigError(f"config error: {where}: key '{key}' is given twice in one mapping; keep one")
            seen.add(key)


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
    if data is None:  # Snakemake's --configfile refuses such a file too
        raise ConfigError(f"config error: {path} holds no config keys (it is empty or only comments); a config file "
                          "is a YAML mapping of config keys (see config/README.md)")
    if not isinstance(data, dict):
        raise ConfigError(f"config error: {path} must be a YAML mapping of config keys, not a "
                          f"{_yaml_kind(data)} (see config/README.md)")
    return data


def _yaml_kind(value: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(type(value), "scalar")


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


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
