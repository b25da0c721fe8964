rule tables:
    input:
        config=rules.resolved_config.output[0],
        metrics=expand(
            f"{R}/metrics/{{model}}/{{setting}}.json", model=MODELS, setting=SETTINGS
        )
        + guided_metrics(),
        features=(
            [
                p.replace(".json", ".features.npz")
                for p in expand(
                    f"{R}/metrics/{{model}}/{{setting}}.json",
                    model=MODELS,
                    setting=SETTINGS,
                )
                + guided_metrics()
            ]
            if "featnet" in METRICS
            else []
        ),
        disc_stats=expand(f"{R}/discriminators/{{model}}/train.json", model=GUIDED),
        stats=expand(f"{R}/models/{{model}}/train.json", model=TRAINED),
        trajectory=expand(
            f"{R}/trajectory/{{model}}/{{tsetting}}.json",
            model=MODELS,
            tsetting=TSETTINGS,
        ),
    output:
        **{
            f"{name}_{ext}": f"results/tables/{EXP}/{name}.{ext}"
            for name in TABLES
            for ext in ("md", "tex")
        },
        **{
            f"{name}_csv": report(
                f"results/tables/{EXP}/{name}.csv",
                caption=f"../report/{name}.rst",
                category="Tables",
            )
            for name in TABLES
        },
    log:
        f"{R}/logs/tables.log",
    localrule: True
    conda:
        "../envs/aot.yaml"
    params:
        out_dir=lambda wc, output: Path(output.scores_csv).parent,
    shell:
        "python -m aot tables --metrics {input.metrics:q} --stats {input.stats:q} "
        "--trajectory {input.trajectory:q} --disc-stats {input.disc_stats:q} --features {input.features:q} "
        "--config {input.config:q} --out-dir {params.out_dir:q} "
        "> {log:q} 2>&1"


rule figures:
    input:
        metrics=rules.tables.input.metrics,
        stats=rules.tables.input.stats,
        trajectory=rules.tables.input.trajectory,
        coupling=rules.tables.output.coupling_csv,
    output:
        **{
            name: report(
                f"{R}/figures/{name}.png",
                caption=f"../report/{name}.rst",
                category="Figures",
            )
            for name in ("score_vs_nfe", "score_vs_rho", "loss")
        },
        **{
            name.replace("-", "_"): report(
                f"{R}/figures/{name}.png",
                caption="../report/coupling_figures.rst",
                category="Figures",
            )
            for name in ("coupling", "coupling-straightness")
        },
        **{
            f"trajectory_{t}": report(
                f"{R}/figures/trajectory-{t}.png",
                caption="../report/trajectory.rst",
                category="Figures",
            )
            for t in TSETTINGS
        },
    log:
        f"{R}/logs/figures.log",
    localrule: True
    conda:
        "../envs/aot.yaml"
    params:
        out_dir=lambda wc, output: Path(output.loss).parent,
    shell:
        "python -m aot figures --metrics {input.metrics:q} --stats {input.stats:q} "
        "--trajectory {input.trajectory:q} --coupling {input.coupling:q} --out-dir {params.out_dir:q} "
        "> {log:q} 2>&1"
