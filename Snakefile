# aot-repro: EDM with and without AOT noise pairing, from dataset to the paper's comparison tables.
#   snakemake --cores all                                   embedded default (digits, CPU, minutes)
#   snakemake --profile profiles/slurm --configfile config/cifar10-uncond.yaml    paper scale
# Stages live in workflow/rules/*.smk; each rule runs one `python -m aot <stage>` command.
import re

from snakemake.utils import min_version, validate

min_version("9.19")


# A --configfile is the whole experiment: the embedded default is loaded only when none is given, so none of its
# keys can leak into a paper config (--config overrides still merge on top of either).
if not workflow.config_settings.configfiles:

    configfile: "config/config.yaml"



report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


wildcard_constraints:
    model="|".join(MODELS + GUIDED),
    setting="|".join(re.escape(s) for s in ALL_SETTINGS),
    tsetting="|".join(re.escape(s) for s in TSETTINGS) or "^$",
    shard=r"\d+-\d+",


include: "workflow/rules/config.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/guidance.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/tables.smk"


rule all:
    default_target: True
    input:
        final_outputs(),
