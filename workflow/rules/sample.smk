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
    params:
        rho=lambda wc: setting(wc)["rho"],
        steps=lambda wc: setting(wc)["steps"],
        batch=config["sample"]["batch"],
        sigma_min=config["sample"]["sigma_min"],
        sigma_max=config["sample"]["sigma_max"],
        device=config["sample"]["device"],
    shell:
        "python -m aot sample --ckpt {input.net} --rho {params.rho} --steps {params.steps} "
        "--seeds {wildcards.shard} --batch {params.batch} --sigma-min {params.sigma_min} "
        "--sigma-max {params.sigma_max} --device {params.device} --out {output} "
        "--threads {threads} > {log} 2>&1"


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
        "python -m aot grid --samples {input} --out {output} > {log} 2>&1"


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
    params:
        rho=lambda wc: tsetting(wc)["rho"],
        steps=lambda wc: tsetting(wc)["steps"],
        seeds=trajectory_seeds(),
        t=config["trajectory"],
        sigma_min=config["sample"]["sigma_min"],
        sigma_max=config["sample"]["sigma_max"],
        device=config["sample"]["device"],
    shell:
        "python -m aot trajectory --ckpt {input.net} --rho {params.rho} --steps {params.steps} "
        "--seeds {params.seeds} --grid-rows {params.t[grid_rows]} --columns {params.t[columns]} "
        "--fine-steps {params.t[fine_steps]} --ref-substeps {params.t[ref_substeps]} "
        "--ref-steps {params.t[ref_steps]} --sigma-min {params.sigma_min} --sigma-max {params.sigma_max} "
        "--device {params.device} --model {wildcards.model} --out {output.metrics} --grid {output.grid} "
        "--threads {threads} > {log} 2>&1"
