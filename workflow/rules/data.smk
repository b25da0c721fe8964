DATASET = config["dataset"]
# dataset.archive (cifar10: a local cifar-10-python.tar.gz or its folder) is a declared input, so a wrong path
# stops the DAG before any job (MissingInputException naming it) and a replaced archive re-prepares the dataset;
# a folder without CIFAR-10's batches is refused with the config (aot.config.checks.archive_errors).
DATASET_ARCHIVE = DATASET.get("archive")
# dataset.path (images: a folder or .zip) is a declared input too, and so is its fingerprint (params): the sha256 of
# every file's name, size and mtime (a folder) or every member's name, size and CRC-32 (a zip's central directory).
# Listing + stat, not a checksum of the bytes: the config check lists the source on every Snakemake run (each
# cluster job included), and reading every image each time would cost minutes on ImageNet; an edited, added,
# removed or renamed file changes it, and so re-prepares the dataset (a `touch` re-prepares too: the prepared
# dataset's recorded sha256 then shows that nothing changed). A source that a rule below writes is tracked by
# Snakemake as that rule's output instead.
# (IMAGES_PATH, IMAGES_FINGERPRINT and dataset_inputs: workflow/rules/common.smk)
# The source's own options only (cifar10 has no split: its test_batch is the held-out set) and the per-class training
# subset are the job's --settings (aot.config.stages.prepare_settings).


rule prepare_dataset:
    input:
        unpack(dataset_inputs),
    output:
        data=f"{R}/data/dataset.npz",
        info=f"{R}/data/dataset.json",
    log:
        f"{R}/logs/prepare_dataset.log",
    localrule: True  # may download CIFAR-10: on the submitting machine, never on a compute node without internet
    conda:
        "../envs/aot.yaml"
    params:
        settings=spec_json(stage_settings.prepare_settings(config)),
        fingerprint=IMAGES_FINGERPRINT or "",  # a changed images source re-prepares (params trigger)
        images=IMAGES_SOURCE or "",
    shell:
        "python -m aot prepare --settings {params.settings:q} "
        + ("--archive {input.archive:q} " if DATASET_ARCHIVE else "")
        + ("--path {params.images:q} " if IMAGES_PATH else "")
        + "--out {output.data:q} --info {output.info:q} > {log:q} 2>&1"


# scikit-learn's digits as an image source in EDM's dataset_tool.py layout (config/digits-images.yaml): a folder and
# a zip of 8x8 grayscale PNGs with dataset.json labels, written here from the installed package, never committed.
rule digits_png:
    output:
        directory("resources/digits-png"),
    log:
        "resources/logs/digits_png.log",
    localrule: True
    conda:
        "../envs/aot.yaml"
    shell:
        "python -m aot digits-png --out {output:q} > {log:q} 2>&1"


rule digits_png_zip:
    output:
        "resources/digits-png.zip",
    log:
        "resources/logs/digits_png_zip.log",
    localrule: True
    conda:
        "../envs/aot.yaml"
    shell:
        "python -m aot digits-png --out {output:q} > {log:q} 2>&1"
