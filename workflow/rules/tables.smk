rule tables:
    input:
        metrics=expand(
            f"{R}/metrics/{{model}}/{{setting}}.json", model=MODELS, setting=SETTINGS
        ),
        stats=expand(f"{R}/models/{{model}}/train.json", model=MODELS),
    output:
        scores_csv=f"results/tables/{EXP}/scores.csv",
        scores_md=f"results/tables/{EXP}/scores.md",
        pairing_csv=f"results/tables/{EXP}/pairing.csv",
        pairing_md=f"results/tables/{EXP}/pairing.md",
    log:
        f"{R}/logs/tables.log",
    localrule: True
    conda:
        "../envs/aot.yaml"
    params:
        out_dir=lambda wc, output: str(Path(output.scores_md).parent),
    shell:
        "python -m aot tables --metrics {input.metrics} --stats {input.stats} "
        "--out-dir {params.out_dir} > {log} 2>&1"
