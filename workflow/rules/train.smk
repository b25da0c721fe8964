rule train:
    input:
        data=rules.prepare_dataset.output.data,
    output:
        net=f"{R}/models/{{model}}/network.pt",
        stats=f"{R}/models/{{model}}/train.json",
    log:
        f"{R}/logs/train/{{model}}.log",
    wildcard_constraints:
        model="|".join(TRAINED) or "^$",
    conda:
        "../envs/aot.yaml"
    threads: 1
    resources:
        # SLURM: one node (torchrun --standalone sees its local GPUs only), or train.nodes with torchrun on each
        **train_resources(),
        slurm_extra=PREEMPT_SIGNAL,
        **SLURM["train"],
    params:
        spec=train_spec,
        run_dir=lambda wc: f"{R}/runs/{wc.model}",
        launch=launcher,
    shell:
        logged("{params.launch:q} -m aot train --data {input.data:q} --spec {params.spec:q} "
            "--run-dir {params.run_dir:q} --out {output.net:q} --stats {output.stats:q} "
            "--model {wildcards.model:q} --threads {threads:q}")


rule import_checkpoint:
    output:
        net=f"{R}/models/{{model}}/network.pt",
    log:
        f"{R}/logs/import_checkpoint/{{model}}.log",
    wildcard_constraints:
        model="|".join(IMPORTED) or "^$",
    localrule: True
    conda:
        "../envs/aot.yaml"
    params:
        src=checkpoint_source,
        pairing=import_pairing,
    shell:
        "python -m aot import-checkpoint --src {params.src:q} --pairing {params.pairing:q} "
        "--out {output.net:q} > {log:q} 2>&1"
