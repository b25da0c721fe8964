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
        batch=config["sample"]["batch"],
        sigma_min=config["sample"]["sigma_min"],
        sigma_max=config["sample"]["sigma_max"],
        device=config["sample"]["device"],
        churn=churn_args,  # already quoted, word by word (shlex.join)
    shell:
        logged("python -m aot sample --ckpt {input.net:q} --rho {params.rho:q} --steps {params.steps:q} "
            "--seeds {wildcards.shard:q} --batch {params.batch:q} --sigma-min {params.sigma_min:q} "
            "--sigma-max {params.sigma_max:q} --device {params.device:q} --out {output:q} "
            "--threads {threads:q}{params.churn}")


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
        # scalars, not the trajectory mapping, so that each can be quoted ({params.x:q})
        grid_rows=config["trajectory"]["grid_rows"],
        columns=config["trajectory"]["columns"],
        fine_steps=config["trajectory"]["fine_steps"],
        ref_substeps=config["trajectory"]["ref_substeps"],
        ref_steps=config["trajectory"]["ref_steps"],
        sigma_min=config["sample"]["sigma_min"],
        sigma_max=config["sample"]["sigma_max"],
        device=config["sample"]["device"],
    shell:
        logged("python -m aot trajectory --ckpt {input.net:q} --rho {params.rho:q} --steps {params.steps:q} "
            "--seeds {params.seeds:q} --grid-rows {params.grid_rows:q} --columns {params.columns:q} "
            "--fine-steps {params.fine_steps:q} --ref-substeps {params.ref_substeps:q} "
            "--ref-steps {params.ref_steps:q} --sigma-min {params.sigma_min:q} --sigma-max {params.sigma_max:q} "
            "--device {params.device:q} --model {wildcards.model:q} --out {output.metrics:q} --grid {output.grid:q} "
            "--threads {threads:q}")
