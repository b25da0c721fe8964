"""Config checking: every shipped config is valid; a wrong key or value is one line naming it."""

from pathlib import Path

import pytest
import yaml

from aot.config import (
    ConfigError,
    check_config,
    guided_names,
    merge_config,
    model_names,
    setting_name,
    typed_cli_overrides,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "config").glob("*.yaml"))


def load(name="config.yaml"):
    return yaml.safe_load((ROOT / "config" / name).read_text())


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    cfg = check_config(yaml.safe_load(path.read_text()))
    assert cfg["train"]["pool"] % cfg["train"]["batch"] == 0 or cfg["train"]["gpus"] > 1


def test_defaults_are_filled():
    cfg = check_config(load())
    assert cfg["train"]["P_mean"] == -1.2 and cfg["sample"]["sigma_max"] == 80
    assert cfg["arms"]["aot"]["knn_k"] == 8


@pytest.mark.parametrize(
    "mutate, where",
    [
        (lambda c: c["train"].update(kimgg=1), "train: Additional properties"),
        (lambda c: c["train"].update(kimg=-1), "train.kimg"),
        (lambda c: c["arms"]["aot"].update(pairing="ot"), "arms.aot.pairing"),
        (lambda c: c["sample"]["grid"].append({"rho": 7, "steps": 1}), "sample.grid.4.steps"),
        (lambda c: c["train"].update(pool=100), "train.pool"),
        (lambda c: c.update(conditioning=["both"]), "conditioning.0"),
        (lambda c: c["sample"].update(sigma_min=100.0), "sample.sigma_min"),
        (lambda c: c["network"]["overrides"].update(channels=3), "network.overrides"),
        (lambda c: c.pop("train"), "'train' is a required property"),
        (lambda c: c.setdefault("evaluate", {}).update(fd_jackknife=1), "evaluate.fd_jackknife: 1 group"),
        (lambda c: c["guidance"]["runs"]["aot_dg"].update(arm="ot"), "guidance.runs.aot_dg.arm: 'ot' is not a key"),
        (
            lambda c: c["guidance"]["runs"].update(aot={"arm": "aot", "rho": 7, "steps": 18, "pairing": "none"}),
            "guidance.runs.aot: the name is also an arm",
        ),
        (lambda c: c["guidance"]["runs"]["aot_dg"].update(pairing="knn"), "guidance.runs.aot_dg.pairing"),
        (lambda c: c["guidance"]["fakes"].update(seed_start=500), "guidance.fakes.seed_start: seeds 500.. overlap"),
        (lambda c: c["guidance"].update(extractor="adm32"), "guidance.extractor_weights: extractor adm32 needs"),
        (lambda c: c["guidance"].update(time_min=1.0), "guidance.time_min"),
        (lambda c: c["guidance"]["train"].update(batch=4000), "guidance.train.batch: 4000 is more than"),
        (lambda c: c["guidance"]["head"].update(channels=3), "guidance.head: Additional properties"),
    ],
)
def test_bad_config_is_one_clear_line(mutate, where):
    cfg = load()
    mutate(cfg)
    with pytest.raises(ConfigError) as e:
        check_config(cfg)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("config error: ") and where in msg


def test_names():
    cfg = check_config(load())
    assert model_names(cfg) == ["edm-uncond", "edm-cond", "aot-uncond", "aot-cond"]
    assert setting_name(7, 18) == "rho7-steps18" and setting_name(7.5, 3) == "rho7.5-steps3"
    assert guided_names(cfg) == [
        "edm_dg-uncond",
        "edm_dg-cond",
        "aot_dg-uncond",
        "aot_dg-cond",
        "aot_dgaot-uncond",
        "aot_dgaot-cond",
    ]
    assert guided_names(check_config({k: v for k, v in load().items() if k != "guidance"})) == []
    off = load()
    off["guidance"]["enabled"] = False
    assert guided_names(check_config(off)) == []


def snakemake_cli(entry: str) -> dict:
    """What Snakemake 9 itself makes of ``--config entry`` (its own parser, nested scalars left as strings)."""
    from snakemake.cli import parse_config

    return parse_config([entry])


def test_nested_cli_overrides_are_read_as_yaml():
    raw = snakemake_cli(
        "guidance={enabled: false, weight: {cond: 1.5}, train: {epochs: 5, lr: 1e-4}, extractor_weights: null}"
    )
    assert raw["guidance"]["enabled"] == "false"  # the problem being fixed: Snakemake keeps nested scalars as text
    typed = typed_cli_overrides(raw)
    assert typed == {
        "guidance": {
            "enabled": False,
            "weight": {"cond": 1.5},
            "train": {"epochs": 5, "lr": 1e-4},
            "extractor_weights": None,
        }
    }
    assert type(typed["guidance"]["train"]["epochs"]) is int
    # Strings stay strings, including ones YAML would mangle or cannot parse.
    raw = snakemake_cli("dataset={source: digits, root: 'data/my dir', name: '@x'}")
    assert typed_cli_overrides(raw) == raw
    grid = typed_cli_overrides(snakemake_cli("sample={grid: [{rho: 7, steps: 18}]}"))
    assert grid == {"sample": {"grid": [{"rho": 7, "steps": 18}]}}


def test_cli_override_merges_into_a_valid_config():
    cfg = load()
    merge_config(cfg, typed_cli_overrides(snakemake_cli("guidance={enabled: false, train: {epochs: 3}}")))
    out = check_config(cfg)
    assert out["guidance"]["enabled"] is False and out["guidance"]["train"]["epochs"] == 3
    assert out["guidance"]["fakes"] == load()["guidance"]["fakes"]  # siblings of a merged key are kept
    assert guided_names(out) == []
    with pytest.raises(ConfigError, match="guidance.enabled"):  # without the re-read it is rejected
        bad = load()
        merge_config(bad, snakemake_cli("guidance={enabled: false}"))
        check_config(bad)
