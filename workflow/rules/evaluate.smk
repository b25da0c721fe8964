rule featnet:
    input:
        data=rules.prepare_dataset.output.data,
    output:
        net=f"{R}/featnet/featnet.pt",
        ref=f"{R}/featnet/ref_features.npz",
        info=f"{R}/featnet/featnet.json",
    log:
        f"{R}/logs/featnet.log",
    conda:
        "../envs/aot.yaml"
    threads: 1
    params:
        epochs=config["evaluate"]["featnet"]["epochs"],
        batch_size=config["evaluate"]["featnet"]["batch_size"],
        lr=config["evaluate"]["featnet"]["lr"],
        seed=config["evaluate"]["featnet"]["seed"],
    shell:
        "python -m aot featnet --data {input.data} --out {output.net} --ref {output.ref} "
        "--info {output.info} --epochs {params.epochs} --batch-size {params.batch_size} "
        "--lr {params.lr} --seed {params.seed} --threads {threads} > {log} 2>&1"


rule evaluate:
    input:
        samples=rules.sample.output.samples,
        featnet=rules.featnet.output.net,
        ref=rules.featnet.output.ref,
    output:
        f"{R}/metrics/{{model}}/{{setting}}.json",
    log:
        f"{R}/logs/evaluate/{{model}}/{{setting}}.log",
    conda:
        "../envs/aot.yaml"
    threads: 1
    params:
        kid_subsets=config["evaluate"]["kid_subsets"],
        kid_subset_size=config["evaluate"]["kid_subset_size"],
    shell:
        "python -m aot evaluate --samples {input.samples} --featnet {input.featnet} --ref {input.ref} "
        "--out {output} --model {wildcards.model} --kid-subsets {params.kid_subsets} "
        "--kid-subset-size {params.kid_subset_size} --threads {threads} > {log} 2>&1"
