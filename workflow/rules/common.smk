# Config checking, the run matrix and the helper functions of the workflow (the science is in aot/).
import json
import shlex
import sys
from pathlib import Path

sys.path.insert(
    0, workflow.basedir
)  # import aot from the checkout even when it is not pip-installed

from aot.core.names import ModelName
from aot.config.experiment import generated_source, guided_names, image_source_info, model_names, setting_name
from aot.config.resolve import (
    disc_spec as resolved_disc_spec,
    resolve_config,
    spec_json,
    train_spec as resolved_train_spec,
    write_resolved_config,
)
from aot.config import stages as stage_settings  # the --settings of every stage but train / train-disc
from aot.config.yamlio import ConfigError

try:
    # The config exactly as `python -m aot check-config` / `show-config` resolve it: the config files Snakemake read
    # (the --configfile files alone; config/config.yaml only when none is given), re-read with duplicate keys refused, then
    # --config on top with its nested scalars read as YAML. One clear line naming the key, before any job starts.
    _resolved = resolve_config(
        [str(f) for f in workflow.configfiles],
        workflow.config_settings.config,
        workflow.source_path("../schemas/config.schema.yaml"),
    )
except ConfigError as err:
    raise WorkflowError(str(err)) from None
config.clear()
config.update(_resolved)


validate(config, "../schemas/config.schema.yaml")

EXP = config["experiment"]
R = f"results/{EXP}"
MODELS = model_names(config)
TRAINED = model_names(config, imported=False)  # trained here
IMPORTED = model_names(
    config, imported=True
)  # released networks, imported (arms.<arm>.checkpoints)
SETTINGS = {
    setting_name(g["rho"], g["steps"], g.get("churn")): g for g in config["sample"]["grid"]
}
# Discriminator Guidance: one guided model per run and conditioning, sampled at its run's setting.
GUIDANCE = config["guidance"]
GUIDED = guided_names(config)
GSETTINGS = {
    setting_name(r["rho"], r["steps"]): dict(rho=r["rho"], steps=r["steps"])
    for r in GUIDANCE["runs"].values()
    if GUIDANCE["enabled"]
}
ALL_SETTINGS = {**GSETTINGS, **SETTINGS}
TSETTINGS = {
    setting_name(g["rho"], g["steps"]): g for g in config["trajectory"]["settings"]
}
METRICS = config["evaluate"]["metrics"]
TABLES = [
    "scores",
    "table1",
    "table2",
    "table3",
    "table4",
    "table5",
    "pairing",
    "trajectory",
    "discriminators",
    "comparisons",
    "coupling",
]


def guided_metrics():
    """Scores of every guided model at its run's setting."""
    return [f"{R}/metrics/{g}/{guided_setting(g)}.json" for g in GUIDED]


def final_outputs():
    """Tables, figures and one sample grid per (model, setting) and per guided model."""
    return (
        [f"{R}/config.yaml"]
        + [f"results/tables/{EXP}/{name}.md" for name in TABLES]
        + [f"{R}/samples/{g}/{guided_setting(g)}.png" for g in GUIDED]
        + [
            f"{R}/figures/{name}.png"
            for name in ("score_vs_nfe", "score_vs_rho", "loss", "coupling", "coupling-straightness")
        ]
        + [f"{R}/figures/trajectory-{t}.png" for t in TSETTINGS]
        + expand(
            f"{R}/samples/{{model}}/{{setting}}.png", model=MODELS, setting=SETTINGS
        )
    )


def train_spec(wildcards):
    """The JSON handed to `python -m aot train` for one model (its changes trigger a retrain)."""
    return spec_json(resolved_train_spec(config, wildcards.model))


# What each cluster job asks SLURM for, beside its GPUs (snakemake-executor-plugin-slurm reads these resources;
# local runs ignore them). runtime is minutes: a training longer than one allocation is resubmitted by the profile's
# retries and resumes from its run dir, so 24 h fits the usual partition limits. Override per rule with
# --set-resources train:runtime=2880 (or in your profile). cpus_per_gpu only applies to jobs with GPUs.
SLURM = {
    "train": dict(runtime=1440, mem_mb=128000, cpus_per_gpu=4),
    "train_discriminator": dict(runtime=1440, mem_mb=64000, cpus_per_gpu=4),
    "sample": dict(runtime=240, mem_mb=32000, cpus_per_gpu=4),
    "sample_guided": dict(runtime=480, mem_mb=32000, cpus_per_gpu=4),
    "trajectory": dict(runtime=120, mem_mb=32000, cpus_per_gpu=4),
    "evaluate": dict(runtime=120, mem_mb=32000, cpus_per_gpu=4),
    "fid_ref": dict(runtime=120, mem_mb=32000, cpus_per_gpu=4),
    "featnet": dict(runtime=60, mem_mb=8000),
}
# SLURM signals the training's job steps 10 minutes before its time limit: `aot train` saves its state at the end of
# the pool in progress and exits, and the retry resumes there (SIGTERM: torchrun forwards it to its workers).
PREEMPT_SIGNAL = "--signal=TERM@600"

# Every attempt's log is kept (workflow/scripts/with-attempt-log): the job's log is a hard link into
# <log>.attempts/, so Snakemake's deleting the log before a retry or resubmission leaves the earlier attempts' files.
WITH_ATTEMPT_LOG = shlex.quote(str(Path(workflow.basedir) / "workflow/scripts/with-attempt-log"))


def logged(command):
    """A rule's shell ``command`` run with its stdout and stderr in ``{log}``, every attempt's log kept."""
    wrapper = WITH_ATTEMPT_LOG.replace("{", "{{").replace("}", "}}")
    return f"{wrapper} {{log:q}} {command}"


def inception_input():
    """The Inception weights the evaluate (and fid_ref: dataset) jobs load: evaluate.inception_weights, or the copy
    that rule fetch_inception downloads into resources/ on the submitting machine (compute nodes need no internet).
    """
    return config["evaluate"]["inception_weights"] or INCEPTION_RESOURCE


INCEPTION_RESOURCE = "resources/inception-2015-12-05.pt"


NODES = config["train"].get("nodes", 1)


def train_resources():
    """SLURM resources of a training job. One node: its GPUs (`gpu`, sbatch --gpus). Several (train.nodes): one task
    per node (`tasks`, and `mpi` so that the job's shell runs once, in the batch step, and starts its own srun) with
    train.gpus GPUs on each (gres gpu:G, per node)."""
    gpus = config["train"]["gpus"]
    if NODES == 1:
        return dict(gpu=gpus, nodes=1)
    return dict(nodes=NODES, tasks=NODES, mpi="srun", gres=f"gpu:{gpus}")


def launcher(wildcards, resources):
    """Plain python for CPU or one GPU; torchrun with one process per GPU the job was granted; on several nodes, srun
    with one task per node, each a torchrun (workflow/scripts/torchrun-nodes) joined by a c10d rendezvous. A list
    of words, so that {params.launch:q} quotes each on its own."""
    if NODES > 1:
        return [
            "srun",
            f"--nodes={NODES}",
            f"--ntasks={NODES}",
            "--ntasks-per-node=1",
            "--kill-on-bad-exit=1",
            str(Path(workflow.basedir) / "workflow/scripts/torchrun-nodes"),
            str(NODES),
            str(config["train"]["gpus"]),
        ]
    if resources.gpu > 1:
        return [
            "torchrun",
            "--standalone",
            "--nnodes=1",
            f"--nproc_per_node={resources.gpu}",
        ]
    return ["python"]


def checkpoint_source(wildcards):
    arm, cond = ModelName.parse(wildcards.model)
    return config["arms"][arm]["checkpoints"][cond]


def import_pairing(wildcards):
    return config["arms"][ModelName.parse(wildcards.model).arm]["pairing"]


def setting(wildcards):
    return ALL_SETTINGS[wildcards.setting]


def sample_settings(wildcards):
    """The --settings JSON of one sampling job (rules sample and sample_guided): the sampler's settings, EDM's churn
    of a stochastic grid setting, a guided model's guidance."""
    return spec_json(stage_settings.sample_settings(config, wildcards.model, wildcards.setting))


def guided_run(model):
    """'aot_dg-cond' -> (the run's config entry, 'cond')."""
    run, cond = ModelName.parse(model)
    return GUIDANCE["runs"][run], cond


def guided_setting(model):
    run, _ = guided_run(model)
    return setting_name(run["rho"], run["steps"])


def base_model(model):
    """The score model a guided model guides, e.g. 'aot_dg-cond' -> 'aot-cond'."""
    run, cond = guided_run(model)
    return f"{run['arm']}-{cond}"


def fake_shards():
    """Seed ranges of the generated images the discriminators train on (disjoint from the sampling seeds)."""
    f = GUIDANCE["fakes"]
    size = min(config["sample"]["shard_size"] or f["num_images"], f["num_images"])
    first, end = f["seed_start"], f["seed_start"] + f["num_images"]
    return [f"{lo:06d}-{min(lo + size, end) - 1:06d}" for lo in range(first, end, size)]


def disc_inputs(wildcards):
    """The dataset (real images), the base model's samples at the run's setting (fake images) and, with
    a pretrained extractor (adm32, adm64), its classifier weights (fetched by rule fetch_dg_classifier).
    """
    inputs = {
        "data": f"{R}/data/dataset.npz",
        "fakes": expand(
            f"{R}/samples/{base_model(wildcards.model)}/{guided_setting(wildcards.model)}/seeds{{shard}}.npz",
            shard=fake_shards(),
        ),
    }
    if GUIDANCE["extractor"] != "none":
        inputs["extractor"] = GUIDANCE["extractor_weights"]
    return inputs


def disc_spec(wildcards):
    """The JSON handed to `python -m aot train-disc` for one guided model (its changes trigger a retrain)."""
    return spec_json(resolved_disc_spec(config, wildcards.model))


def shards():
    """Seed ranges of the sampling jobs, e.g. ['000000-009999', ...]: image i depends only on seed i."""
    s = config["sample"]
    size = s["shard_size"] or s["num_images"]
    first, end = s["seed_start"], s["seed_start"] + s["num_images"]
    return [f"{lo:06d}-{lo + size - 1:06d}" for lo in range(first, end, size)]


def tsetting(wildcards):
    return TSETTINGS[wildcards.tsetting]


def trajectory_seeds():
    t = config["trajectory"]
    return f"{t['seed_start']}-{t['seed_start'] + t['num_images'] - 1}"


def evaluate_inputs(wildcards):
    """All sample shards of one (model, setting), plus what each configured metric needs."""
    inputs = {
        "samples": expand(
            f"{R}/samples/{wildcards.model}/{wildcards.setting}/seeds{{shard}}.npz",
            shard=shards(),
        )
    }
    if "featnet" in METRICS:
        inputs.update(
            featnet=f"{R}/featnet/featnet.pt", ref=f"{R}/featnet/ref_features.npz"
        )
    if "inception" in METRICS:
        inputs.update(fid_ref=f"{R}/fid/ref_stats.npz", inception=inception_input())
    return inputs


def evaluate_args(wildcards, input):
    """The input files of `python -m aot evaluate` for the configured metrics, as flags (its settings are
    --settings): a list of single arguments, so that {params.args:q} quotes each on its own (a path with spaces or
    shell characters stays one argument)."""
    args = []
    if "featnet" in METRICS:
        args += ["--featnet", input.featnet, "--ref", input.ref]
    if "inception" in METRICS:
        args += ["--fid-ref", input.fid_ref, "--inception-weights", input.inception]
    return [str(a) for a in args]


IMAGES_PATH = config["dataset"].get("path") if config["dataset"]["source"] == "images" else None
# The fingerprint of an images source (the listing: names, sizes, mtimes / zip CRC-32s), a params of prepare_dataset;
# None for a source written by the workflow itself (aot.config.experiment.GENERATED_SOURCES), tracked as that job's output.
IMAGES_SOURCE = (generated_source(IMAGES_PATH) or IMAGES_PATH) if IMAGES_PATH else None
IMAGES_FINGERPRINT = image_source_info(config["dataset"])["fingerprint"] if IMAGES_PATH else None


def dataset_inputs(wildcards):
    """The source files of prepare_dataset: a local CIFAR-10 archive, or the images folder / zip (or the rule output
    that writes it), so that a missing one stops the DAG before any job and a replaced one re-prepares."""
    if config["dataset"].get("archive"):
        return {"archive": config["dataset"]["archive"]}
    if IMAGES_PATH and (generated_source(IMAGES_PATH) or Path(IMAGES_PATH).exists()):
        return {"images": IMAGES_SOURCE}
    # Images not there yet, their shape declared in the config (checked): the DAG can be shown (-n, show-config),
    # and prepare stops with one line naming the missing path when it runs.
    return {}


def fid_ref_inputs(wildcards):
    src = config["evaluate"]["fid_ref"]
    if src == "dataset":  # Inception features of the training images, on a GPU
        return {"data": f"{R}/data/dataset.npz", "inception": inception_input()}
    return {}
