rule train:
    input:
        data=rules.prepare_dataset.output.data,
    output:
        net=f"{R}/models/{{model}}/network.pt",
        stats=f"{R}/models/{{model}}/train.json",
    log:
        f"{R}/logs/train/{{model}}.log",
    conda:
        "../envs/aot.yaml"
    threads: 1
    resources:
        gpu=config["train"]["gpus"],
    params:
        spec=train_spec,
        run_dir=lambda wc: f"{R}/runs/{wc.model}",
        launch=launcher,
    shell:
        "{params.launch} -m aot train --data {input.data} --spec {params.spec:q} "
        "--run-dir {params.run_dir} --out {output.net} --stats {output.stats} "
        "--model {wildcards.model} --threads {threads} > {log} 2>&1"
