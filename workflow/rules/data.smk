DATASET = config["dataset"]
# dataset.archive (cifar10: a local cifar-10-python.tar.gz or its folder) is a declared input, so a wrong path
# stops the DAG before any job (MissingInputException naming it) and a replaced archive re-prepares the dataset;
# a folder without CIFAR-10's batches is refused with the config (aot.config.resolve.archive_errors).
DATASET_ARCHIVE = DATASET.get("archive")
# Flags for the source's own options only (cifar10 has no split: its test_batch is the held-out set) and for the
# per-class training subset; {params.args:q} quotes each item on its own.
DATASET_ARGS = [
    str(v)
    for v in (
        (["--test-fraction", DATASET.get("test_fraction", 0.2)] if DATASET["source"] == "digits" else [])
        + (["--split-seed", DATASET.get("split_seed", 0)] if DATASET["source"] in ("digits", "synthetic") else [])
        + (
            ["--subset", DATASET["subset"], "--subset-seed", DATASET.get("subset_seed", 0)]
            if DATASET.get("subset") is not None
            else []
        )
    )
]


rule prepare_dataset:
    input:
        unpack(lambda wildcards: {"archive": DATASET_ARCHIVE} if DATASET_ARCHIVE else {}),
    output:
        data=f"{R}/data/dataset.npz",
        info=f"{R}/data/dataset.json",
    log:
        f"{R}/logs/prepare_dataset.log",
    localrule: True  # may download CIFAR-10: on the submitting machine, never on a compute node without internet
    conda:
        "../envs/aot.yaml"
    params:
        source=DATASET["source"],
        args=DATASET_ARGS,
    shell:
        "python -m aot prepare --source {params.source:q} "
        + ("--archive {input.archive:q} " if DATASET_ARCHIVE else "")
        + "{params.args:q} --out {output.data:q} --info {output.info:q} > {log:q} 2>&1"
