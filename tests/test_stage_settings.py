"""The settings each stage reads from the config (aot.config.stages), passed as ``--settings JSON``: what each
resolver gives for the smoke config and a paper config, that every shipped config's settings are taken by its
stage's parser as the flags would be, and the one-line errors of a bad ``--settings``."""

import json

import pytest
from conftest import ROOT, run_aot

from aot.cli.main import apply_settings, parser
from aot.config import stages
from aot.config.experiment import guided_names, model_names, setting_name
from aot.config.resolve import resolve_config, spec_json

SMOKE = resolve_config([ROOT / "config/smoke.yaml"])
PAPER = resolve_config([ROOT / "config/cifar10-uncond.yaml"])
CONFIGS = sorted((ROOT / "config").glob("*.yaml"))
SAMPLE = ["sample", "--ckpt", "x.pt", "--rho", "7", "--steps", "4", "--seeds", "0-3", "--out", "s.npz"]
SAMPLER = dict(sigma_min=0.002, sigma_max=80)
PARSER = parser()  # built once: a parser is reused across parse_args calls


def parsed(argv: list[str]) -> dict:
    """The arguments a stage runs with: ``argv`` parsed and its --settings applied."""
    a = apply_settings(PARSER.parse_args(argv))
    return {k: v for k, v in vars(a).items() if not k.startswith("_") and k not in ("fn", "settings")}


def test_smoke_settings():
    assert stages.prepare_settings(SMOKE) == dict(source="digits", test_fraction=0.2, split_seed=0)
    assert stages.featnet_settings(SMOKE) == dict(epochs=2, batch_size=128, lr=0.001, seed=0)
    assert stages.sample_settings(SMOKE, "aot-cond", "rho7-steps4") == dict(batch=64, device="cpu", **SAMPLER)
    guided = dict(batch=64, device="cpu", dg_weight_2nd=0.0, dg_time_min=0.01, dg_time_max=1.0, **SAMPLER)
    assert stages.sample_settings(SMOKE, "aot_dg-uncond", "rho90-steps3") == dict(
        guided, dg_weight=2.0, dg_boosting=False)
    assert stages.sample_settings(SMOKE, "aot_dgaot-cond", "rho90-steps3") == dict(
        guided, dg_weight=1.0, dg_boosting=True)
    assert stages.trajectory_settings(SMOKE) == dict(fine_steps=8, ref_substeps=2, ref_steps=8, grid_rows=2,
                                                     columns=4, device="cpu", **SAMPLER)
    assert stages.evaluate_settings(SMOKE) == dict(metrics=["featnet"], device="cpu", kid_subsets=10,
                                                   kid_subset_size=32, fd_jackknife=8)


def test_paper_settings():
    """config/cifar10-uncond.yaml: CIFAR-10 has its official split (no split keys), Inception FID on the GPU (no
    featnet keys), the DG runs' unconditional weight 2 without boosting."""
    assert stages.prepare_settings(PAPER) == dict(source="cifar10")
    assert stages.sample_settings(PAPER, "aot-uncond", "rho7-steps18") == dict(batch=500, device="cuda", **SAMPLER)
    assert stages.sample_settings(PAPER, "edm_dg-uncond", "rho7-steps18") == dict(
        batch=500, device="cuda", dg_weight=2.0, dg_weight_2nd=0.0, dg_time_min=0.01, dg_time_max=1.0,
        dg_boosting=False, **SAMPLER)
    assert stages.trajectory_settings(PAPER) == dict(fine_steps=256, ref_substeps=64, ref_steps=512, grid_rows=4,
                                                     columns=8, device="cuda", **SAMPLER)
    assert stages.evaluate_settings(PAPER) == dict(metrics=["inception"], device="cuda", fid_block=50000)
    assert stages.fid_ref_settings(PAPER) == dict(source="cifar10", device="cuda")


def test_churn_subset_and_trusted_inception(tmp_path):
    """EDM's stochastic sampler keys only at a churn setting; the subset keys only with a subset; the trusted sha256
    only where an Inception file of one's own is loaded."""
    cfg = resolve_config([ROOT / "config/imagenet64-cond.yaml"])
    churn = dict(S_churn=40, S_min=0.05, S_max=50, S_noise=1.003)
    assert stages.sample_settings(cfg, "aot-cond", "rho7-steps256-churn40") == dict(
        batch=128, device="cuda", **SAMPLER, **churn)
    assert "S_churn" not in stages.sample_settings(cfg, "aot-cond", "rho7-steps18")
    sha = "ab" * 32
    extra = tmp_path / "extra.yaml"
    extra.write_text(json.dumps({"dataset": {"subset": 100, "subset_seed": 3}, "evaluate": {
        "metrics": ["inception"], "fid_ref": "dataset", "inception_weights": "w.pt", "inception_sha256": sha,
        "fid_block": 2}}))  # JSON is YAML
    cfg = resolve_config([ROOT / "config/smoke.yaml", extra])
    assert stages.prepare_settings(cfg) == dict(source="digits", test_fraction=0.2, split_seed=0, subset=100,
                                                subset_seed=3)
    assert stages.evaluate_settings(cfg) == dict(metrics=["inception"], device="cpu", fid_block=2,
                                                 inception_sha256=sha)
    assert stages.fid_ref_settings(cfg) == dict(source="dataset", device="cpu", inception_sha256=sha)


def as_flags(argv: list[str], settings: dict) -> list[str]:
    """``argv`` with ``settings`` written as their flags, as the rules wrote them before --settings."""
    actions = PARSER.parse_args(argv)._setting_actions
    words = []
    for key, value in settings.items():
        flag = actions[key].option_strings[0]
        if isinstance(value, bool):
            words += [flag] if value else []
        else:
            words += [flag, *map(str, value if isinstance(value, list) else [value])]
    return [*argv, *words]


STAGE_ARGV = {
    "prepare": ["prepare", "--out", "d.npz", "--info", "d.json"],
    "featnet": ["featnet", "--data", "d.npz", "--out", "f.pt", "--ref", "r.npz", "--info", "f.json"],
    "trajectory": ["trajectory", "--ckpt", "x.pt", "--rho", "7", "--steps", "4", "--seeds", "0-3", "--out", "t.json",
                   "--grid", "t.png"],
    "evaluate": ["evaluate", "--samples", "s.npz", "--out", "m.json"],
    "fid-ref": ["fid-ref", "--out", "ref.npz"],
}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_setting_reads_as_its_flags(config):
    """Each resolver's mapping of every shipped config, as the rules write it (spec_json), parses into the very
    arguments its values give as flags (each its flag's type: 80 for a float flag is 80.0)."""
    cfg = resolve_config([config])
    runs = [(STAGE_ARGV["prepare"], stages.prepare_settings(cfg)),
            (STAGE_ARGV["featnet"], stages.featnet_settings(cfg)),
            (STAGE_ARGV["trajectory"], stages.trajectory_settings(cfg)),
            (STAGE_ARGV["evaluate"], stages.evaluate_settings(cfg)),
            (STAGE_ARGV["fid-ref"], stages.fid_ref_settings(cfg))]
    grid = [setting_name(g["rho"], g["steps"], g.get("churn")) for g in cfg["sample"]["grid"]]
    runs += [(SAMPLE, stages.sample_settings(cfg, m, s)) for m in model_names(cfg) + guided_names(cfg) for s in grid]
    for argv, settings in runs:
        got, want = parsed([*argv, "--settings", spec_json(settings)]), parsed(as_flags(argv, settings))
        assert got == want and all(type(got[k]) is type(want[k]) for k in got), (argv[0], settings)


def test_settings_set_what_the_flags_set():
    flags = parsed([*SAMPLE, "--batch", "64", "--sigma-min", "0.002", "--sigma-max", "80", "--device", "cuda",
                    "--dg-boosting", "--S-max", "50"])
    settings = dict(batch=64, sigma_min=0.002, sigma_max=80, device="cuda", dg_boosting=True, S_max=50)
    assert parsed([*SAMPLE, "--settings", json.dumps(settings)]) == flags
    assert flags["sigma_max"] == 80.0 and type(flags["sigma_max"]) is float
    # Part as a flag, the rest as settings: the same again; a key neither gives keeps its flag's default.
    rest = {k: v for k, v in settings.items() if k != "batch"}
    assert parsed([*SAMPLE, "--batch", "64", "--settings", json.dumps(rest)]) == flags
    assert parsed([*SAMPLE, "--settings", "{}"]) == parsed(SAMPLE)
    assert parsed(SAMPLE)["S_max"] == float("inf") and parsed(SAMPLE)["batch"] == 500
    assert parsed([*STAGE_ARGV["evaluate"], "--settings", '{"metrics": ["featnet", "inception"]}'])["metrics"] == [
        "featnet", "inception"]


@pytest.mark.parametrize("settings, line", [
    ('{"sigma_mni": 0.01}', "error: --settings: unknown key 'sigma_mni' (python -m aot sample takes batch, "
     "sigma_min, sigma_max, device, dg_weight, dg_weight_2nd, dg_time_min, dg_time_max, dg_boosting, S_churn, S_min, "
     "S_max, S_noise)"),
    ('{"batch": 64}', "error: --settings: batch is given as its flag --batch too; give it once"),
    ('{"sigma_min": 0.01, "sigma_min": 0.02}', "error: --settings: key sigma_min is given twice"),
    ('{"sigma_min": "0.01"}', 'error: --settings: sigma_min must be a number, not "0.01"'),
    ('{"steps_x": 1, "dg_boosting": 1}', "error: --settings: unknown key 'steps_x' (python -m aot sample takes "
     "batch, sigma_min, sigma_max, device, dg_weight, dg_weight_2nd, dg_time_min, dg_time_max, dg_boosting, S_churn, "
     "S_min, S_max, S_noise)"),
    ('{"dg_boosting": 1}', "error: --settings: dg_boosting must be true or false, not 1"),
    ('{"device": ["cpu"]}', 'error: --settings: device must be a string, not ["cpu"]'),
    ('[64]', "error: --settings: not a JSON object of settings, but [64]"),
])
def test_bad_settings_are_one_line_before_any_work(tmp_path, settings, line):
    """Refused with exit 2 and one line naming the key, before the checkpoint (missing here) is looked at."""
    r = run_aot([*SAMPLE, "--batch", "64", "--settings", settings], cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [line], r.stderr
    assert list(tmp_path.iterdir()) == []


def test_bad_settings_of_the_other_stages():
    with pytest.raises(ValueError, match=r"^--settings: batch_size must be an integer, not 3\.0$"):
        parsed([*STAGE_ARGV["featnet"], "--settings", '{"batch_size": 3.0}'])
    with pytest.raises(ValueError, match=r"^--settings: lr must be a number, not null$"):
        parsed([*STAGE_ARGV["featnet"], "--settings", '{"lr": null}'])
    with pytest.raises(ValueError, match=r"^--settings: metrics: 'fid' is not one of featnet, inception$"):
        parsed([*STAGE_ARGV["evaluate"], "--settings", '{"metrics": ["fid"]}'])
    with pytest.raises(ValueError, match=r"^--settings: metrics must be a non-empty list, not \[\]$"):
        parsed([*STAGE_ARGV["evaluate"], "--settings", '{"metrics": []}'])
    with pytest.raises(ValueError, match=r"^--settings: not JSON \(Expecting"):
        parsed([*STAGE_ARGV["evaluate"], "--settings", "{metrics: []}"])
    with pytest.raises(ValueError, match=r"^--settings: unknown key 'ckpt' \(python -m aot trajectory takes "):
        parsed([*STAGE_ARGV["trajectory"], "--settings", '{"ckpt": "y.pt"}'])  # a per-job flag is no setting


def test_required_source_as_flag_or_setting():
    """prepare and fid-ref need their source: the flag or the key."""
    with pytest.raises(ValueError, match=r"^prepare needs --source \(or source in --settings\)$"):
        parsed([*STAGE_ARGV["prepare"], "--settings", '{"split_seed": 1}'])
    assert parsed([*STAGE_ARGV["prepare"], "--settings", '{"source": "digits"}']) == parsed(
        [*STAGE_ARGV["prepare"], "--source", "digits"])
    with pytest.raises(ValueError, match=r"^--settings: source: 'cifar' is not one of digits, cifar10, synthetic"):
        parsed([*STAGE_ARGV["prepare"], "--settings", '{"source": "cifar"}'])
    r = run_aot(STAGE_ARGV["fid-ref"])
    assert r.returncode == 2 and r.stderr.strip() == "error: fid-ref needs --source (or source in --settings)"


def test_non_finite_numbers_read_as_the_flags_read_them():
    """The float flags take inf and nan (float('inf'), as --S-max's default); JSON's Infinity / NaN read the same."""
    inf = parsed([*SAMPLE, "--settings", '{"S_max": Infinity, "sigma_min": NaN}'])
    flags = parsed([*SAMPLE, "--S-max", "inf", "--sigma-min", "nan"])
    assert inf["S_max"] == flags["S_max"] == float("inf")
    assert inf["sigma_min"] != inf["sigma_min"] and flags["sigma_min"] != flags["sigma_min"]


def test_help_lists_every_setting_with_its_flag():
    r = run_aot(["trajectory", "-h"])
    assert r.returncode == 0
    for flag in ("--grid-rows", "--columns", "--fine-steps", "--ref-substeps", "--ref-steps", "--sigma-min",
                 "--sigma-max", "--device", "--settings JSON"):
        assert flag in r.stdout
    assert "grid_rows, columns, fine_steps, ref_substeps, ref_steps, sigma_min, sigma_max, device" in " ".join(
        r.stdout.split())
