"""The config-level settings of each workflow stage: one resolver per stage, whose mapping the rule hands to
``python -m aot <stage> --settings JSON`` (written by :func:`aot.config.resolve.spec_json`, as the train specs).
Its keys are the stage's argparse dest names, so a config key that a stage reads is written in the schema and in
its flag, and here at most once (a section's keys reach the stage as they are, less those that make the run
matrix). Per-job values (wildcards, inputs, outputs: ``--ckpt``, ``--rho``, ``--steps``, ``--seeds``, ``--out``, ...)
are not settings: the rules pass them as flags. Each mapping holds what the stage's command gave as flags before
``--settings`` existed, so every job runs the same arguments (tools/compare-commands). Pure Python, like resolve.py.
"""

from __future__ import annotations

from aot.config.experiment import DATASET_SOURCE_KEYS, guided_names, setting_name
from aot.core.names import ModelName

# The keys of a section that make the run matrix (which jobs exist, their seeds), not a stage's settings.
SAMPLE_MATRIX = ("grid", "num_images", "shard_size", "seed_start")
TRAJECTORY_MATRIX = ("settings", "num_images", "seed_start")


def _but(section: dict, matrix: tuple[str, ...]) -> dict:
    return {k: v for k, v in section.items() if k not in matrix}


def prepare_settings(cfg: dict) -> dict:
    """``prepare``: the dataset source and only the options it reads (cifar10 has no split: its test_batch is the
    held-out set), the resize when given and the per-class training subset when given."""
    d = cfg["dataset"]
    s = {"source": d["source"]}
    s.update({k: d[k] for k in ("test_fraction", "split_seed") if k in DATASET_SOURCE_KEYS[d["source"]]})
    if d.get("resolution"):
        s["resolution"] = d["resolution"]
    if d.get("subset") is not None:
        s.update(subset=d["subset"], subset_seed=d["subset_seed"])
    return s


def featnet_settings(cfg: dict) -> dict:
    """``featnet``: evaluate.featnet as it is (epochs, batch_size, lr, seed)."""
    return dict(cfg["evaluate"]["featnet"])


def sample_settings(cfg: dict, model: str, setting: str) -> dict:
    """``sample`` (rules sample and sample_guided) of ``model`` at ``setting`` (e.g. 'rho7-steps256-churn40'): the
    sample section less the run matrix; EDM's stochastic sampler keys of a grid setting with churn; for a guided
    model (e.g. 'aot_dg-cond'), Discriminator Guidance's weights, time range and boosting of its conditioning."""
    s = _but(cfg["sample"], SAMPLE_MATRIX)
    for g in cfg["sample"]["grid"]:
        if g.get("churn") and setting_name(g["rho"], g["steps"], g["churn"]) == setting:
            s.update(g["churn"])
    if model in guided_names(cfg):
        g, cond = cfg["guidance"], ModelName.parse(model).cond
        s.update(dg_weight=g["weight"][cond], dg_weight_2nd=g["weight_2nd"], dg_time_min=g["time_min"],
                 dg_time_max=g["time_max"], dg_boosting=g["boosting"][cond])
    return s


def trajectory_settings(cfg: dict) -> dict:
    """``trajectory``: the trajectory section less the run matrix, with the sampler's sigma range and device."""
    s = cfg["sample"]
    return dict(_but(cfg["trajectory"], TRAJECTORY_MATRIX), sigma_min=s["sigma_min"], sigma_max=s["sigma_max"],
                device=s["device"])


def evaluate_settings(cfg: dict) -> dict:
    """``evaluate``: the metrics, the device and the options of each configured metric (the trusted sha256 of the
    Inception weights only when one is given)."""
    e = cfg["evaluate"]
    s = {"metrics": list(e["metrics"]), "device": e["device"]}
    if "featnet" in e["metrics"]:
        s.update(kid_subsets=e["kid_subsets"], kid_subset_size=e["kid_subset_size"], fd_jackknife=e["fd_jackknife"])
    if "inception" in e["metrics"]:
        s["fid_block"] = e["fid_block"]
        if e["inception_sha256"]:
            s["inception_sha256"] = e["inception_sha256"]
    return s


def fid_ref_settings(cfg: dict) -> dict:
    """``fid-ref``: the reference (evaluate.fid_ref) and the device; with ``dataset`` (Inception features computed
    here) the trusted sha256 of the Inception weights when one is given."""
    e = cfg["evaluate"]
    s = {"source": e["fid_ref"], "device": e["device"]}
    if e["fid_ref"] == "dataset" and e["inception_sha256"]:
        s["inception_sha256"] = e["inception_sha256"]
    return s
