# Config checking, the run matrix and the helper functions of the workflow (the science is in aot/).
import json
import sys

sys.path.insert(
    0, workflow.basedir
)  # import aot from the checkout even when it is not pip-installed

from aot.config import ConfigError, check_config, model_names, setting_name

try:
    # One clear line naming the key, before any job starts (the schema + cross-key rules).
    config.update(
        check_config(config, workflow.source_path("../schemas/config.schema.yaml"))
    )
except ConfigError as err:
    raise WorkflowError(str(err)) from None


validate(config, "../schemas/config.schema.yaml")

EXP = config["experiment"]
R = f"results/{EXP}"
MODELS = model_names(config)
SETTINGS = {setting_name(g["rho"], g["steps"]): g for g in config["sample"]["grid"]}


def final_outputs():
    return [f"results/tables/{EXP}/scores.md", f"results/tables/{EXP}/pairing.md"]


def train_spec(wildcards):
    """The JSON handed to `python -m aot train` for one model (its changes trigger a retrain)."""
    arm_name, cond = wildcards.model.rsplit("-", 1)
    arm, t = config["arms"][arm_name], config["train"]
    spec = {k: v for k, v in t.items() if k != "gpus"}
    spec.update(
        pairing=arm["pairing"],
        knn_k=arm.get("knn_k", 8),
        cond=(cond == "cond"),
        arch=config["network"]["arch"],
        network=config["network"].get("overrides", {}),
    )
    return json.dumps(spec, sort_keys=True)


def launcher(wildcards, resources):
    """Plain python for CPU or one GPU; torchrun with one process per GPU the job was granted."""
    if resources.gpu > 1:
        return f"torchrun --standalone --nnodes=1 --nproc_per_node={resources.gpu}"
    return "python"


def setting(wildcards):
    return SETTINGS[wildcards.setting]


def sample_seeds():
    s = config["sample"]
    return f"{s['seed_start']}-{s['seed_start'] + s['num_images'] - 1}"
