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
    resources:
        **SLURM["featnet"],
    params:
        settings=spec_json(stage_settings.featnet_settings(config)),
    shell:
        logged("python -m aot featnet --data {input.data:q} --out {output.net:q} --ref {output.ref:q} "
            "--info {output.info:q} --settings {params.settings:q} --threads {threads:q}")


# Inception FID needs clean-fid's TF-Inception weights (inception-2015-12-05.pt) and, for fid_ref: cifar10, its
# CIFAR-10 train statistics. Both are downloaded by local rules on the submitting machine (fetch_inception below;
# fid_ref itself is local unless it computes statistics of the dataset), so compute nodes never need the internet.
# Offline clusters set evaluate.inception_weights and evaluate.fid_ref to local copies.
rule fid_ref:
    input:
        unpack(fid_ref_inputs),
    output:
        f"{R}/fid/ref_stats.npz",
    log:
        f"{R}/logs/fid_ref.log",
    # a named reference or an npz is only downloaded/read: on the submitting machine; `dataset` needs a GPU
    localrule: config["evaluate"]["fid_ref"] != "dataset"
    conda:
        "../envs/aot.yaml"
    threads: 1
    resources:
        gpu=1 if config["evaluate"]["device"].startswith("cuda") and config["evaluate"]["fid_ref"] == "dataset" else 0,
        **SLURM["fid_ref"],
    params:
        settings=spec_json(stage_settings.fid_ref_settings(config)),
        # optional flags as lists of single arguments ([] = none), so that {params.x:q} quotes each on its own
        data=lambda wc, input: ["--data", input.data] if "data" in input.keys() else [],
        weights=lambda wc, input: ["--inception-weights", input.inception] if "inception" in input.keys() else [],
    message:
        f"Inception reference statistics ({config['evaluate']['fid_ref']}); clean-fid's statistics are downloaded "
        "on first use"
    shell:
        logged("python -m aot fid-ref --settings {params.settings:q} {params.data:q} {params.weights:q} "
            "--out {output:q} --threads {threads:q}")


if "inception" in METRICS and not config["evaluate"]["inception_weights"]:

    rule fetch_inception:
        output:
            INCEPTION_RESOURCE,
        log:
            "resources/logs/fetch_inception.log",
        localrule: True
        message:
            "Downloading clean-fid's Inception weights (inception-2015-12-05.pt) to {output}"
        shell:
            "python -m aot fetch-inception --out {output:q} > {log:q} 2>&1"


rule evaluate:
    input:
        unpack(evaluate_inputs),
    output:
        **(
            {"features": f"{R}/metrics/{{model}}/{{setting}}.features.npz"}
            if "featnet" in METRICS
            else {}
        ),
        json=f"{R}/metrics/{{model}}/{{setting}}.json",
        # featnet: the samples' features at their seeds, for the paired comparisons of the tables stage
    log:
        f"{R}/logs/evaluate/{{model}}/{{setting}}.log",
    # featnet scores on the CPU take seconds: on the submitting machine, not a cluster job of their own
    localrule: METRICS == ["featnet"] and config["evaluate"]["device"] == "cpu"
    conda:
        "../envs/aot.yaml"
    threads: 1
    resources:
        gpu=1 if config["evaluate"]["device"].startswith("cuda") else 0,
        **SLURM["evaluate"],
    params:
        settings=spec_json(stage_settings.evaluate_settings(config)),
        args=evaluate_args,
        metrics=" + ".join(METRICS),
        features=lambda wc, output: (
            ["--features-out", output.features] if "features" in output.keys() else []
        ),
    message:
        "Scoring {wildcards.model} at {wildcards.setting} ({params.metrics})"
    shell:
        logged("python -m aot evaluate --samples {input.samples:q} --out {output.json:q} --model {wildcards.model:q} "
            "--settings {params.settings:q} {params.args:q} {params.features:q} --threads {threads:q}")
