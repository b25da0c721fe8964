"""Config checking: every shipped config is valid; a wrong key or value is one line naming it."""

import re
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from aot.config.checks import MAX_IMAGES, MAX_SAMPLING_JOBS, SEED_MAX, check_config, sampling_jobs
from aot.config.describe import describe_config
from aot.config.experiment import guided_names, model_names, setting_name
from aot.config.resolve import disc_spec, resolve_config
from aot.config.yamlio import (
    DEFAULT_SCHEMA,
    ConfigError,
    load_yaml,
    merge_config,
    parse_cli_config,
    typed_cli_overrides,
)

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
        (lambda c: c["guidance"].update(extractor="adm64"), "guidance.extractor_weights: extractor adm64 needs the "
                                                            "path of guided-diffusion's 64x64_classifier.pt"),
        (lambda c: c["guidance"].update(extractor="adm64", extractor_weights="x.pt"),
         "guidance.extractor: adm64 reads 3x64x64 images, the data is 1x8x8; use extractor: none"),
        (lambda c: c["guidance"].update(time_min=1.0), "guidance.time_min"),
        (lambda c: c["guidance"]["train"].update(batch=4000), "guidance.train.batch: 4000 is more than"),
        (lambda c: c["guidance"]["head"].update(channels=3), "guidance.head: Additional properties"),
        (lambda c: c["train"].update(precision="fp16"), "train.precision: 'fp16' is not one of ['fp32', 'tf32'"),
        (lambda c: c["train"].update(precision="tf32"), "train.precision: tf32 is a CUDA mode"),
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


# ----------------------------------------------------------------------------
# Typing, finiteness and duplicate keys: one rule for every entry point.


@pytest.mark.parametrize(
    "mutate, where",
    [
        (lambda c: c["sample"]["grid"][0].update(rho=float("nan")), "sample.grid.0.rho: nan is not a finite number"),
        (lambda c: c["sample"].update(sigma_max=float("inf")), "sample.sigma_max: inf is not a finite number"),
        (lambda c: c["train"].update(lr=float("inf")), "train.lr: inf is not a finite number"),
        (lambda c: c["train"].update(ema_halflife_kimg=float("nan")), "train.ema_halflife_kimg: nan"),
        (lambda c: c["guidance"]["weight"].update(cond=float("nan")), "guidance.weight.cond: nan"),
        (lambda c: c["sample"]["grid"][0].update(steps=18.0), "sample.grid.0.steps: 18.0 is not of type 'integer'"),
        (lambda c: c["sample"].update(num_images=1000.0), "sample.num_images: 1000.0 is not of type 'integer'"),
        (lambda c: c["dataset"].update(source="cifar10"), "dataset.test_fraction: not used with source cifar10"),
        (lambda c: c["dataset"].update(subset=15), "dataset.subset: 15 is not a multiple of the 10 classes"),
    ],
)
def test_nonfinite_float_for_int_and_unused_keys_are_refused(mutate, where):
    cfg = load()
    mutate(cfg)
    with pytest.raises(ConfigError) as e:
        check_config(cfg)
    assert str(e.value).startswith("config error: ") and where in str(e.value) and "\n" not in str(e.value)


def test_duplicate_yaml_key_is_an_error(tmp_path):
    f = tmp_path / "dup.yaml"
    f.write_text("experiment: a\ntrain:\n  kimg: 1\n  kimg: 2\n")
    with pytest.raises(ConfigError, match=r"dup.yaml line 4: key 'kimg' is given twice"):
        load_yaml(f)


@pytest.mark.parametrize("text", [
    "train: {<<: {kimg: 3.0}, lr: 0.001}\n",
    "experiment: a\nsample: &s {num_images: 8, batch: 4}\ntrajectory:\n  <<: *s\n  num_images: 5\n",
    "experiment: a\ndataset: &d {source: digits}\nnetwork: &n {arch: ddpmpp}\ntrain: {<<: [*d, *n], kimg: 2}\n",
])
def test_yaml_merge_keys_read_as_safe_load(tmp_path, text):
    """A merge key is YAML (safe_load reads it): the duplicate-key loader reads it the same way, a key beside the
    merge overriding the merged one."""
    f = tmp_path / "merge.yaml"
    f.write_text(text)
    assert load_yaml(f) == yaml.safe_load(text)


def test_yaml_merge_keys_in_a_config_file(tmp_path):
    base = yaml.safe_dump(load(), sort_keys=False).replace("train:\n", "train:\n  <<: {kimg: 3.0, seed: 4}\n", 1)
    f = tmp_path / "merge.yaml"
    f.write_text(base)
    cfg = resolve_config([f])
    assert cfg["train"]["kimg"] == 40 and cfg["train"]["seed"] == 0  # the file's own keys override the merged ones
    f.write_text(base.replace("  <<: {kimg: 3.0, seed: 4}\n", "  <<: {batch_gpu: 64}\n"))
    assert resolve_config([f])["train"]["batch_gpu"] == 64
    f.write_text("train: {<<: {kimg: 3, kimg: 4}}\n")  # inside a merged mapping a key is still given once
    with pytest.raises(ConfigError, match=r"merge.yaml line 1: key 'kimg' is given twice"):
        load_yaml(f)


def test_a_partial_config_file_names_every_missing_key_and_the_fix(tmp_path):
    """A file meant as an override of the embedded default: one line that says a config file is the whole
    experiment, lists every missing top-level key, and gives the command that merges it over the default."""
    mine = tmp_path / "my.yaml"
    mine.write_text("train: {kimg: -3}\n")
    with pytest.raises(ConfigError) as e:
        resolve_config([mine])
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"config error: {mine} lacks the top-level keys experiment, dataset, "
                                              "arms, conditioning, network, sample, evaluate: ")
    assert "a --configfile is the whole experiment" in msg and f"--configfile config/config.yaml {mine}" in msg
    assert "copy of config/config.yaml" in msg
    # As the line says: merged over the default, the file's own mistake is what is left.
    with pytest.raises(ConfigError, match=r"^config error: train.kimg: -3 is less than or equal to the minimum"):
        resolve_config([ROOT / "config/config.yaml", mine])
    other = tmp_path / "other.yaml"
    other.write_text("experiment: x\n")
    with pytest.raises(ConfigError, match=rf"{mine}, {other} \(merged\) lack the top-level keys dataset, arms, "):
        resolve_config([mine, other])
    with pytest.raises(ConfigError, match=r"lacks the top-level key evaluate: "):  # one missing key
        resolve_config([mine], parse_cli_config(["experiment=x", "dataset={source: digits}", "arms={a: {pairing: "
                                                 "none}}", "conditioning=[uncond]", "network={arch: ddpmpp}",
                                                 "sample={grid: [{rho: 7, steps: 4}], num_images: 8}"]))


@pytest.mark.parametrize("text, what", [("", "holds no config keys"), ("# only a comment\n", "holds no config keys"),
                                        ("- a\n- b\n", "not a list"), ("42\n", "not a number")])
def test_an_empty_or_list_config_file_is_named(tmp_path, text, what):
    f = tmp_path / "odd.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        resolve_config([ROOT / "config/config.yaml", f])
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"config error: {f} ") and what in msg


@pytest.mark.parametrize(
    "entries",
    [
        ["experiment=exp2", "guidance={enabled: false, weight: {cond: 1.5}}"],
        ["train={kimg: 1e-4, lr: 0.5}", "flag=true", "empty=", "ratio=0.25", "count=7"],
        ["sample={grid: [{rho: 7, steps: 18}]}", "dataset={source: cifar10, archive: 'a b.tar.gz'}"],
    ],
)
def test_cli_parser_is_snakemakes(entries):
    """check-config/show-config parse --config without Snakemake; pinned to Snakemake's own parser."""
    from snakemake.cli import parse_config

    assert parse_cli_config(entries) == parse_config(entries)


# ----------------------------------------------------------------------------
# A config file is the whole experiment; the paper configs are EDM-AOT's and DG's command lines.


@pytest.mark.parametrize("name", ["cifar10-uncond.yaml", "cifar10-cond.yaml", "cifar10-released.yaml",
                                  "digits-family.yaml", "smoke.yaml"])
def test_config_file_alone_is_the_experiment(name):
    """Nothing of config/config.yaml reaches another config: resolving a file equals validating it alone."""
    alone = check_config(load(name))
    assert resolve_config([ROOT / "config" / name]) == alone
    assert resolve_config(None) == check_config(load())  # no file: the embedded default
    if name.startswith("cifar10"):
        assert alone["network"]["overrides"] == {} and "test_fraction" not in alone["dataset"]
        assert alone["trajectory"]["fine_steps"] == 256  # schema default, not the digits' 64


def test_cli_overrides_merge_on_top_of_the_file():
    cfg = resolve_config([ROOT / "config/cifar10-uncond.yaml"],
                         parse_cli_config(["train={kimg: 2, batch: 8}", "guidance={train: {epochs: 3}}"]))
    assert cfg["train"]["kimg"] == 2 and cfg["train"]["batch"] == 8 and cfg["train"]["pool"] == 512
    assert disc_spec(cfg, "edm_dg-uncond")["epochs"] == 3 and cfg["guidance"]["train"]["lr"] == 0.0003


# The values EDM-AOT's README command line and EDM's train.py defaults give (docs/method.md §2.3-2.4), and DG's
# train.py / README (docs/method.md §3.4-3.5). Parameter counts: EDM's NCSN++ with augment_dim 9, label_dim 0 / 10.
PAPER = {
    "uncond": dict(params=56_397_827, pool=512, epochs=60, weight=2.0, boosting=False),
    "cond": dict(params=56_400_643, pool=2048, epochs=250, weight=1.0, boosting=True),
}


@pytest.mark.parametrize("cond", ["uncond", "cond"])
def test_paper_config_resolves_to_the_paper_recipe(cond):
    p = PAPER[cond]
    d = describe_config(resolve_config([ROOT / f"config/cifar10-{cond}.yaml"]))
    assert set(d["models"]) == {f"edm-{cond}", f"aot-{cond}"}
    for model, m in d["models"].items():
        s = m["train_spec"]
        assert m["parameters"] == p["params"], model
        assert s["arch"] == "ncsnpp" and s["network"]["dropout"] == 0.13
        assert s["network"]["model_channels"] == 128 and s["network"]["channel_mult"] == [2, 2, 2]
        assert s["network"]["num_blocks"] == 4 and s["network"]["attn_resolutions"] == [16]
        assert s["augment_p"] == 0.12 and s["batch"] == 256 and m["gpus"] == 4 and s["batch_gpu"] is None
        assert s["pool"] == p["pool"] and s["lr"] == 0.001 and s["lr_rampup_kimg"] == 10_000
        assert s["ema_halflife_kimg"] == 500 and s["ema_rampup_ratio"] == 0.05 and s["kimg"] == 200_000
        assert s["pairing"] == ("aot" if model.startswith("aot") else "none") and s["cond"] == (cond == "cond")
    assert len(d["guided"]) == 3
    for g in d["guided"].values():
        s = g["disc_spec"]
        assert s["epochs"] == p["epochs"] and s["lr"] == 0.0003 and s["batch"] == 128 and s["weight_decay"] == 1e-7
        assert s["extractor"] == "adm32" and g["fake_images"] == 50_000 and g["real_images"] == 50_000
        assert g["extractor_parameters"] == 47_771_112 and g["time"] == "vp"  # DG's 32x32 classifier, VP time
        assert g["head_parameters"] == (3_395_841 if cond == "cond" else 2_883_841)
        assert g["sampler"]["weight"] == p["weight"] and g["sampler"]["boosting"] is p["boosting"]


def test_subset_is_reported():
    cfg = resolve_config([ROOT / "config/cifar10-cond.yaml"], parse_cli_config(["dataset={subset: 500}"]))
    d = describe_config(cfg)
    assert d["dataset"]["subset"] == 500 and all(g["real_images"] == 500 for g in d["guided"].values())


@pytest.mark.parametrize("mutate, where", [
    (lambda c: c.update(experiment="tables"), "experiment: 'tables' is the folder of every experiment's tables"),
    (lambda c: c["train"].update(lr=1e39), "train.lr: 1e+39 is greater than the maximum of 1000"),
    (lambda c: c["guidance"]["train"].update(lr=1e39), "guidance.train.lr: 1e+39 is greater than the maximum"),
])
def test_names_and_magnitudes_that_cannot_run(mutate, where):
    cfg = load()
    mutate(cfg)
    with pytest.raises(ConfigError, match=re.escape(where)):
        check_config(cfg)


@pytest.mark.parametrize("mutate, where", [
    (lambda c: c["arms"]["aot"].update(block=100), "arms.aot.block: 100 does not divide train.pool 512"),
    (lambda c: c["arms"]["edm"].update(block=8), "arms.edm.block: only aot and aot-sq assign in blocks"),
    (lambda c: c["arms"]["aot"].update(block=0), "arms.aot.block: 0 is less than the minimum of 1"),
    (lambda c: c["arms"]["aot"].update(seed=-1), "arms.aot.seed: -1 is less than the minimum of 0"),
    (lambda c: c["arms"]["aot"].update(seed=1.0), "arms.aot.seed"),
    (lambda c: c["arms"].update(aot2={"pairing": "aot", "block": 512}),
     "arms.aot2: trains the same network as arms.aot (same pairing, block and seed)"),
    (lambda c: c["arms"].update(edm1={"pairing": "none", "seed": 0}), "arms.edm1: trains the same network as arms.edm"),
])
def test_coupling_arms_are_checked(mutate, where):
    cfg = load()
    mutate(cfg)
    with pytest.raises(ConfigError, match=re.escape(where)):
        check_config(cfg)


def test_coupling_study_config_resolves_to_its_sweep():
    """config/digits-coupling.yaml: N in {8, 32, 128, 512} and the family, 3 training seeds each, as separate arms;
    the seed-0 EDM and AOT arms train exactly the embedded default's networks (same spec)."""
    from aot.config.resolve import train_spec

    cfg = resolve_config([ROOT / "config/digits-coupling.yaml"], {})
    default = resolve_config([ROOT / "config/config.yaml"], {})
    specs = {m: train_spec(cfg, m) for m in model_names(cfg)}
    assert len(specs) == 7 * 3 * 2
    sweep = {}
    for m, s in specs.items():
        if m.endswith("-uncond"):
            sweep.setdefault((s["pairing"], s.get("block", s["pool"]) if s["pairing"].startswith("aot") else None),
                             []).append(s["seed"])
    assert sweep == {("none", None): [0, 1, 2], ("aot", 8): [0, 1, 2], ("aot", 32): [0, 1, 2],
                     ("aot", 128): [0, 1, 2], ("aot", 512): [0, 1, 2], ("aot-sq", 512): [0, 1, 2],
                     ("knn", None): [0, 1, 2]}
    for m in ("edm-uncond", "edm-cond", "aot-uncond", "aot-cond"):
        arm, cond = m.split("-")
        assert specs[f"{'aot512' if arm == 'aot' else arm}-{cond}"] == train_spec(default, m)
    assert "block" not in specs["aot512-uncond"] and specs["aot8s2-cond"]["block"] == 8
    assert {(g["rho"], g["steps"]) for g in cfg["sample"]["grid"]} == {(7, 18), (27, 8)}  # 35 and 15 NFE
    assert cfg["sample"]["num_images"] == default["sample"]["num_images"] and not cfg["guidance"]["enabled"]


def test_cifar10_coupling_study_is_the_paper_recipe_with_the_sweep():
    """config/cifar10-coupling.yaml (not run here): every training is config/cifar10-uncond.yaml's EDM-AOT recipe
    except for the coupling (block) and the seed; 21 trainings, 35 and 15 NFE, one Inception FID-50k each."""
    from aot.config.resolve import train_spec

    cfg = resolve_config([ROOT / "config/cifar10-coupling.yaml"], {})
    paper = resolve_config([ROOT / "config/cifar10-uncond.yaml"], {})
    specs = {m: train_spec(cfg, m) for m in model_names(cfg)}
    assert len(specs) == 21 and all(m.endswith("-uncond") for m in specs)
    reference = {"edm": train_spec(paper, "edm-uncond"), "aot": train_spec(paper, "aot-uncond")}
    for m, s in specs.items():
        base = dict(reference["edm" if s["pairing"] == "none" else "aot"], pairing=s["pairing"])
        extra = {k: s[k] for k in ("block", "knn_k", "seed") if k in s}
        assert s == {**base, **extra}, m
    assert sorted({s.get("block", 512) for s in specs.values() if s["pairing"] == "aot"}) == [8, 32, 128, 512]
    assert sorted(s["seed"] for s in specs.values() if s["pairing"] == "aot-sq") == [0, 1, 2]
    assert cfg["evaluate"]["metrics"] == ["inception"] and cfg["sample"]["num_images"] == 50000
    assert {(g["rho"], g["steps"]) for g in cfg["sample"]["grid"]} == {(7, 18), (27, 8)}


# ----------------------------------------------------------------------------
# What a config can ask for: seed ranges, image counts, sampling jobs.


def seed_keys(schema: dict, path: tuple = ()):
    """(dotted path, subschema) of every schema key whose name holds 'seed' ('*' is any name of a mapping)."""
    for key, sub in schema.get("properties", {}).items():
        if "seed" in key:
            yield ".".join((*path, key)), sub
        yield from seed_keys(sub, (*path, key))
    if isinstance(schema.get("additionalProperties"), dict):
        yield from seed_keys(schema["additionalProperties"], (*path, "*"))


SEED_KEYS = dict(seed_keys(load_yaml(DEFAULT_SCHEMA)))


def test_every_seed_key_has_a_range():
    assert set(SEED_KEYS) == {"dataset.split_seed", "dataset.subset_seed", "arms.*.seed", "train.seed",
                              "sample.seed_start", "evaluate.featnet.seed", "trajectory.seed_start",
                              "guidance.fakes.seed_start", "guidance.train.seed"}
    assert all(sub["type"] == "integer" and sub["minimum"] == 0 and sub["maximum"] == SEED_MAX == 2**31 - 1
               for sub in SEED_KEYS.values())


@pytest.mark.parametrize("key", sorted(SEED_KEYS))
def test_a_seed_past_the_range_is_refused(key):
    """The issue's train.seed 99999999999999999999999 passed the dry run, then torch.manual_seed overflowed."""
    cfg = load()
    *parents, last = [("aot" if p == "*" else p) for p in key.split(".")]
    node = cfg
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = 99999999999999999999999
    if key == "dataset.subset_seed":
        cfg["dataset"]["subset"] = 100
    with pytest.raises(ConfigError) as e:
        check_config(cfg)
    where = key.replace("*", "aot")
    assert str(e.value) == (f"config error: {where}: 99999999999999999999999 is greater than the maximum of "
                            f"{SEED_MAX} (see config/README.md)")
    node[last] = SEED_MAX - 5000000 if key == "guidance.fakes.seed_start" else SEED_MAX - 10**6
    if key in ("sample.seed_start", "trajectory.seed_start"):
        node[last] = 10**9  # away from the other seed ranges
    check_config(cfg)  # within the range


@pytest.mark.parametrize("key, first", [("sample", 2**31 - 999), ("trajectory", 2**31 - 31),
                                        ("guidance.fakes", 2**31 - 1499)])
def test_a_seed_range_must_end_within_the_range(key, first):
    cfg = load()
    node = cfg
    for part in key.split("."):
        node = node[part]
    node["seed_start"] = first
    with pytest.raises(ConfigError) as e:
        check_config(cfg)
    n = node["num_images"]
    assert str(e.value) == (f"config error: {key}.seed_start: seeds {first}..{first + n - 1} go past {SEED_MAX}, the "
                            "largest seed (torch seeds with 64 bits and derives further seeds from each); start lower")
    node["seed_start"] = first - 1
    check_config(cfg)


def test_a_huge_sample_count_is_refused_at_once():
    """The issue's sample count: 10^8 images in shards of 500 (seeds moved so that they are valid) kept snakemake -n
    busy for minutes without a word; now one line names the bound and why."""
    moved = ["guidance={fakes: {seed_start: 900000000}}", "trajectory={seed_start: 800000000}"]
    with pytest.raises(ConfigError) as e:
        resolve_config(None, parse_cli_config(["sample={num_images: 100000000, shard_size: 500}", *moved]))
    assert str(e.value).startswith(f"config error: sample.num_images: 100000000 is more than {MAX_IMAGES:,} images, "
                                   "the most a config can ask for (one job holds them all in memory")
    cfg = resolve_config(None, parse_cli_config(["sample={num_images: 1000000, shard_size: 10000}", *moved]))
    assert sampling_jobs(cfg)[0] == 22 * 100 + 4  # 4 models x 4 settings + 6 guided; 4 sets of 1500 fakes
    with pytest.raises(ConfigError) as e:
        resolve_config(None, parse_cli_config(["sample={num_images: 1000000, shard_size: 50}", *moved]))
    assert str(e.value) == (
        "config error: sample.shard_size: the config makes 440,120 sampling jobs (20,000 for each of 22 model "
        "settings, 30 for each of 4 sets of generated images); at most 10,000: Snakemake takes 1-4 ms a job to build "
        "its DAG, minutes before any output at that many; raise sample.shard_size")
    with pytest.raises(ConfigError, match=r"guidance.fakes.num_images: 2000000 is more than 1,000,000 images"):
        resolve_config(None, parse_cli_config(["guidance={fakes: {num_images: 2000000}}"]))
    resolve_config(None, parse_cli_config(["guidance={enabled: false, fakes: {num_images: 2000000}}"]))  # unused


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_are_well_within_the_bounds(path):
    jobs, _ = sampling_jobs(check_config(yaml.safe_load(path.read_text())))
    assert jobs <= MAX_SAMPLING_JOBS // 20, jobs


def test_precision_reaches_the_train_spec_only_when_not_fp32():
    """train.precision: fp32 (the default) leaves every train spec as it was before the key existed (so no retrain
    and the same run folder); bf16 and tf32 reach the spec, and TrainSpec gives each its own run folder."""
    from aot.config.resolve import train_spec
    from aot.training.spec import TrainSpec

    paper = resolve_config([ROOT / "config/cifar10-uncond.yaml"], {})
    assert paper["train"]["precision"] == "fp32" and "precision" not in train_spec(paper, "aot-uncond")
    specs = {p: train_spec(resolve_config([ROOT / "config/cifar10-uncond.yaml"], {"train": {"precision": p}}),
                           "aot-uncond") for p in ("fp32", "tf32", "bf16")}
    assert specs["fp32"] == train_spec(paper, "aot-uncond")
    for p in ("tf32", "bf16"):
        assert specs[p] == {**specs["fp32"], "precision": p}
    digests = {p: TrainSpec.from_dict(s).digest() for p, s in specs.items()}
    assert len(set(digests.values())) == 3
    assert digests["fp32"] == TrainSpec.from_dict({**specs["fp32"], "precision": "fp32"}).digest()


# EDM's 64x64 recipes: NVlabs/edm README's training table rows (the configs cite them value by value) and EDM's own
# parameter counts for the same constructor arguments (tests/test_networks.py EDM_PARAMS_64 says how they were
# counted: NVlabs/edm 008a4e5's EDMPrecond on the meta device). ImageNet: --augment=0, so augment_dim 0.
EDM64 = {
    "ffhq64-uncond": dict(cond="uncond", arch="ddpmpp", params=61_805_571, cres=[1, 2, 2, 2], dropout=0.05,
                          augment_p=0.15, augment_dim=9, label_dim=0, batch=256, lr=0.0002, kimg=200_000,
                          ema=500, tick=50, fp16=False, gpus=8),
    "afhqv2-64-uncond": dict(cond="uncond", arch="ddpmpp", params=61_805_571, cres=[1, 2, 2, 2], dropout=0.25,
                             augment_p=0.15, augment_dim=9, label_dim=0, batch=256, lr=0.0002, kimg=200_000,
                             ema=500, tick=50, fp16=False, gpus=8),
    "imagenet64-cond": dict(cond="cond", arch="adm", params=295_899_267, cres=[1, 2, 3, 4], dropout=0.10,
                            augment_p=0, augment_dim=0, label_dim=1000, batch=4096, lr=0.0001, kimg=2_500_000,
                            ema=50_000, tick=200, fp16=True, gpus=8, nodes=4),  # [README] 4 nodes x 8 A100s
}


@pytest.mark.parametrize("name", list(EDM64))
def test_64x64_configs_resolve_to_edms_recipes(name):
    from aot.config.resolve import train_spec

    e = EDM64[name]
    cfg = resolve_config([ROOT / f"config/{name}.yaml"])
    d = describe_config(cfg)
    assert d["dataset"]["source"] == "images" and d["dataset"]["resolution"] == 64 and d["dataset"]["channels"] == 3
    assert set(d["models"]) == {f"edm-{e['cond']}", f"aot-{e['cond']}"}
    for model, m in d["models"].items():
        s = m["train_spec"]
        assert m["parameters"] == e["params"], model
        assert m["backbone"] == ("DhariwalUNet" if e["arch"] == "adm" else "SongUNet")
        assert m["label_dim"] == e["label_dim"] and m["augment_dim"] == e["augment_dim"]
        assert s["arch"] == e["arch"] and s["network"]["channel_mult"] == e["cres"]
        assert s["network"]["dropout"] == e["dropout"] and s["augment_p"] == e["augment_p"]
        assert s["batch"] == e["batch"] and s["lr"] == e["lr"] and s["kimg"] == e["kimg"]
        assert s["ema_halflife_kimg"] == e["ema"] and s["tick_kimg"] == e["tick"] and m["gpus"] == e["gpus"]
        assert m["nodes"] == e.get("nodes", 1) and "nodes" not in s and "gpus" not in s
        assert s.get("fp16", False) is e["fp16"] and s.get("loss_scaling", 1) == (100 if e["fp16"] else 1)
        assert s["pairing"] == ("aot" if model.startswith("aot") else "none")
        assert s["pool"] % (s["batch"] // (m["gpus"] * m["nodes"])) == 0
    grid = {(g["rho"], g["steps"]) for g in cfg["sample"]["grid"]}
    assert (7, 40) in grid and min(steps for _, steps in grid) == 8  # EDM's 40 steps (79 NFE) + the low-NFE grid
    stochastic = [g for g in cfg["sample"]["grid"] if "churn" in g]
    if e["cond"] == "cond":  # [README]: ImageNet-64 with stochastic sampling, 256 steps (511 NFE)
        assert stochastic == [{"rho": 7, "steps": 256,
                               "churn": {"S_churn": 40, "S_min": 0.05, "S_max": 50, "S_noise": 1.003}}]
        assert setting_name(7, 256, stochastic[0]["churn"]) == "rho7-steps256-churn40"
    else:  # [README]: deterministic for FFHQ and AFHQv2
        assert stochastic == []
    assert cfg["evaluate"]["fid_ref"] == "dataset" and cfg["sample"]["num_images"] == 150_000
    assert not d["guided"] and not cfg["guidance"]["enabled"]  # DG is off by default at 64x64 ...
    # ... and switched on, it reads guided-diffusion's 64x64 classifier at the cosine schedule's time.
    on = describe_config(resolve_config([ROOT / f"config/{name}.yaml"], parse_cli_config(["guidance={enabled: true}"])))
    assert set(on["guided"]) == {f"{r}-{e['cond']}" for r in ("edm_dg", "aot_dg", "aot_dgaot")}
    for g in on["guided"].values():
        assert g["disc_spec"]["extractor"] == "adm64" and g["time"] == "cosine"
        assert g["disc_spec"]["extractor_weights"] == "resources/dg/64x64_classifier.pt"
        assert g["extractor_parameters"] == 65_438_568  # DG's load_classifier(None, 64) (tests/test_adm.py)
        assert g["head_parameters"] == (3_395_841 if e["cond"] == "cond" else 2_883_841)  # DG's head
        assert (g["sampler"]["rho"], g["sampler"]["steps"]) == (7, 40)
    # The coupling study's block axis: an arm assigning over groups of 32 pool images resolves here too.
    block = resolve_config([ROOT / f"config/{name}.yaml"],
                           parse_cli_config(["arms={aot32: {pairing: aot, block: 32}}"]))
    assert train_spec(block, f"aot32-{e['cond']}")["block"] == 32
    # EDM's released network as one more arm, as the config's comment gives it: imported, not trained.
    line = next(x for x in (ROOT / f"config/{name}.yaml").read_text().splitlines() if "# edmrel: " in x)
    released = resolve_config([ROOT / f"config/{name}.yaml"], parse_cli_config([f"arms={{{line.split('# ', 1)[1]}}}"]))
    assert model_names(released, imported=True) == [f"edmrel-{e['cond']}"]
    url = released["arms"]["edmrel"]["checkpoints"][e["cond"]]
    assert url.startswith("https://nvlabs-fi-cdn.nvidia.com/edm/pretrained/edm-") and "64x64" in url


@pytest.mark.parametrize("mutate, where", [
    (lambda c: c["dataset"].pop("path"), "dataset.path: source images needs the folder or .zip of images"),
    (lambda c: c["dataset"].pop("resolution"), "dataset.resolution: datasets/imagenet-64x64.zip does not exist yet, so the images' shape must be declared"),
    (lambda c: c["dataset"].update(resolution=48), "dataset.resolution: 48 is not a power of two"),
    (lambda c: c["dataset"].update(num_classes=0), "conditioning: cond needs class labels and datasets/imagenet-64x64.zip has none"),
    (lambda c: c["dataset"].update(source="cifar10"), "dataset.path: not used with source cifar10"),
    (lambda c: c["dataset"].update(archive="x.tar.gz"), "dataset.archive: not used with source images"),
    (lambda c: c["dataset"].update(subset=1500), "dataset.subset: 1500 is not a multiple of the 1000 classes"),
    (lambda c: c["network"]["overrides"].update(encoder_type="residual"),
     "network.overrides.encoder_type: not an argument of DhariwalUNet (arch adm); remove it"),
    (lambda c: c["network"]["overrides"].update(channel_mult=[1, 2, 2, 2, 2, 2, 2, 2]),
     "network: 8 resolution levels (channel_mult) halve 64x64 images 7 times; use at most 7 levels"),
    (lambda c: c["train"].update(fp16="yes"), "train.fp16: 'yes' is not of type 'boolean'"),
    (lambda c: c["train"].update(loss_scaling=0), "train.loss_scaling: 0 is less than or equal to the minimum of 0"),
    (lambda c: c["sample"]["grid"][0]["churn"].update(S_min=60), "sample.grid.0.churn.S_min: 60 must be below S_max"),
    (lambda c: c["train"].update(gpus=0, device="cpu"), "train.nodes: 4 nodes train with train.gpus GPUs on each"),
    (lambda c: c["train"].update(nodes=3), "train.batch: 4096 is not divisible by train.gpus=8 x train.nodes=3 = 24"),
    (lambda c: c["train"].update(nodes=0), "train.nodes: 0 is less than the minimum of 1"),
    (lambda c: c["sample"]["grid"][0]["churn"].pop("S_noise"), "sample.grid.0.churn: 'S_noise' is a required property"),
    (lambda c: c["sample"]["grid"][0]["churn"].update(S_churn=float("nan")), "sample.grid.0.churn.S_churn: nan is not"),
])
def test_images_source_and_adm_network_are_checked(mutate, where):
    cfg = yaml.safe_load((ROOT / "config/imagenet64-cond.yaml").read_text())
    mutate(cfg)
    with pytest.raises(ConfigError) as e:
        check_config(cfg)
    assert str(e.value).startswith("config error: ") and where in str(e.value) and "\n" not in str(e.value)


def test_fp16_reaches_the_spec_only_when_given():
    """Every earlier config's train spec (and so its printed command and run directory) is unchanged."""
    from aot.config.resolve import train_spec

    for name in ("config.yaml", "cifar10-uncond.yaml", "ffhq64-uncond.yaml"):
        cfg = resolve_config([ROOT / "config" / name])
        for m in model_names(cfg):
            assert not {"fp16", "loss_scaling"} & set(train_spec(cfg, m)), (name, m)
    cfg = resolve_config([ROOT / "config/imagenet64-cond.yaml"])
    assert {k: train_spec(cfg, "aot-cond")[k] for k in ("fp16", "loss_scaling")} == {"fp16": True, "loss_scaling": 100}


def test_one_home_for_shared_defaults():
    """sigma_min / sigma_max, test_fraction and knn_k: the schema's defaults are EDM's / ours as aot.core.defaults
    holds them, and no other module of aot writes the number again."""
    from aot.core.defaults import KNN_K, SIGMA_MAX, SIGMA_MIN, TEST_FRACTION

    schema = load_yaml(DEFAULT_SCHEMA)["properties"]
    sample = schema["sample"]["properties"]
    assert (sample["sigma_min"]["default"], sample["sigma_max"]["default"]) == (SIGMA_MIN, SIGMA_MAX) == (0.002, 80.0)
    assert check_config(load())["dataset"]["test_fraction"] == TEST_FRACTION == 0.2
    assert resolve_config(None, {})["arms"]["aot"].get("knn_k", KNN_K) == KNN_K == 8
    for number in ("0.002", "80.0", "test_fraction: float = 0.2", "knn_k: int = 8", '"knn_k", 8'):
        homes = [p.relative_to(ROOT) for p in (ROOT / "aot").rglob("*.py") if number in p.read_text()]
        assert homes in ([], [Path("aot/core/defaults.py")]), (number, homes)
