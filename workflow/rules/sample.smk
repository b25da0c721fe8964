rule sample:
    input:
        net=rules.train.output.net,
    output:
        f"{R}/samples/{{model}}/{{setting}}/seeds{{shard}}.npz",
    log:
        f"{R}/logs/sample/{{model}}/{{setting}}/seeds{{shard}}.log",
    wildcard_constraints:
        model="|".join(MODELS),
    conda:
        "../envs/aot.yaml"
    threads: 1
    resources:
        gpu=1 if config["sample"]["device"].startswith("cuda") else 0,
        **SLURM["sample"],
    params:
        rho=lambda wc: setting(wc)["rho"],
        steps=lambda wc: setting(wc)["steps"],
        settings=sample_settings,
    shell:
        logged("python -m aot sample --ckpt {input.net:q} --rho {params.rho:q} --steps {params.steps:q} "
            "--seeds {wildcards.shard:q} --settings {params.settings:q} --out {output:q} --threads {threads:q}")


rule grid:
    input:
        lambda wc: f"{R}/samples/{wc.model}/{wc.setting}/seeds{shards()[0]}.npz",
    output:
        report(
            f"{R}/samples/{{model}}/{{setting}}.png",
            caption="../report/samples.rst",
            category="Samples",
            subcategory="{model}",
            labels={"model": "{model}", "setting": "{setting}"},
        ),
    log:
        f"{R}/logs/grid/{{model}}/{{setting}}.log",
    localrule: True
    conda:
        "../envs/aot.yaml"
    shell:
        "python -m aot grid --samples {input:q} --out {output:q} > {log:q} 2>&1"


rule trajectory:
    input:
        net=rules.train.output.net,
    output:
        metrics=f"{R}/trajectory/{{model}}/{{tsetting}}.json",
        grid=report(
            f"{R}/trajectory/{{model}}/{{tsetting}}.png",
            caption="../report/tangents.rst",
            category="Trajectories",
            subcategory="{tsetting}",
            labels={"model": "{model}", "setting": "{tsetting}"},
        ),
    log:
        f"{R}/logs/trajectory/{{model}}/{{tsetting}}.log",
    conda:
        "../envs/aot.yaml"
    threads: 1
    resources:
        gpu=1 if config["sample"]["device"].startswith("cuda") else 0,
        **SLURM["trajectory"],
    params:
        rho=lambda wc: tsetting(wc)["rho"],
        steps=lambda wc: tsetting(wc)["steps"],
        seeds=trajectory_seeds(),
        settings=spec_json(stage_settings.trajectory_settings(config)),
    shell:
        logged("python -m aot trajectory --ckpt {input.net:q} --rho {params.rho:q} --steps {params.steps:q} "
            "--seeds {params.seeds:q} --settings {params.settings:q} --model {wildcards.model:q} "
            "--out {output.metrics:q} --grid {output.grid:q} --threads {threads:q}")
