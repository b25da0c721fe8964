rule sample:
    input:
        net=rules.train.output.net,
    output:
        samples=f"{R}/samples/{{model}}/{{setting}}.npz",
        grid=f"{R}/samples/{{model}}/{{setting}}.png",
    log:
        f"{R}/logs/sample/{{model}}/{{setting}}.log",
    conda:
        "../envs/aot.yaml"
    threads: 1
    resources:
        gpu=1 if config["sample"]["device"].startswith("cuda") else 0,
    params:
        rho=lambda wc: setting(wc)["rho"],
        steps=lambda wc: setting(wc)["steps"],
        seeds=sample_seeds(),
        batch=config["sample"]["batch"],
        sigma_min=config["sample"]["sigma_min"],
        sigma_max=config["sample"]["sigma_max"],
        device=config["sample"]["device"],
    shell:
        "python -m aot sample --ckpt {input.net} --rho {params.rho} --steps {params.steps} "
        "--seeds {params.seeds} --batch {params.batch} --sigma-min {params.sigma_min} "
        "--sigma-max {params.sigma_max} --device {params.device} --out {output.samples} "
        "--grid {output.grid} --threads {threads} > {log} 2>&1"
