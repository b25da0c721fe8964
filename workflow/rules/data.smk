rule prepare_dataset:
    output:
        data=f"{R}/data/dataset.npz",
        info=f"{R}/data/dataset.json",
    log:
        f"{R}/logs/prepare_dataset.log",
    conda:
        "../envs/aot.yaml"
    params:
        source=config["dataset"]["source"],
        archive=(
            f"--archive {config['dataset']['archive']}"
            if config["dataset"].get("archive")
            else ""
        ),
        test_fraction=config["dataset"]["test_fraction"],
        split_seed=config["dataset"]["split_seed"],
    shell:
        "python -m aot prepare --source {params.source} {params.archive} "
        "--test-fraction {params.test_fraction} --split-seed {params.split_seed} "
        "--out {output.data} --info {output.info} > {log} 2>&1"
