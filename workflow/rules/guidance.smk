# Discriminator Guidance (the paper's Table 3): a discriminator per guided model, trained on real images vs the
# base model's samples at the run's setting, then guided sampling at that setting with the same seeds as the
# unguided samples. Scoring, grids and tables reuse the rules of evaluate.smk and tables.smk.
rule train_discriminator:
    input:
        unpack(disc_inputs),
    output:
        disc=f"{R}/discriminators/{{model}}/discriminator.pt",
        stats=f"{R}/discriminators/{{model}}/train.json",
    log:
        f"{R}/logs/train_discriminator/{{model}}.log",
    wildcard_constraints:
        model="|".join(GUIDED) or "^$",
    conda:
        "../envs/aot.yaml"
    threads: 1
    resources:
        gpu=1 if GUIDANCE["train"]["device"].startswith("cuda") else 0,
        **SLURM["train_discriminator"],
    params:
        spec=disc_spec,
        state_dir=lambda wc: f"{R}/runs/discriminators/{wc.model}",
    shell:
        logged("python -m aot train-disc --data {input.data:q} --fake {input.fakes:q} --spec {params.spec:q} "
            "--state-dir {params.state_dir:q} --out {output.disc:q} --stats {output.stats:q} "
            "--model {wildcards.model:q} --threads {threads:q}")


rule sample_guided:
    input:
        net=lambda wc: f"{R}/models/{base_model(wc.model)}/network.pt",
        disc=rules.train_discriminator.output.disc,
    output:
        f"{R}/samples/{{model}}/{{setting}}/seeds{{shard}}.npz",
    log:
        f"{R}/logs/sample_guided/{{model}}/{{setting}}/seeds{{shard}}.log",
    wildcard_constraints:
        model="|".join(GUIDED) or "^$",
    conda:
        "../envs/aot.yaml"
    threads: 1
    resources:
        gpu=1 if config["sample"]["device"].startswith("cuda") else 0,
        **SLURM["sample_guided"],
    params:
        rho=lambda wc: setting(wc)["rho"],
        steps=lambda wc: setting(wc)["steps"],
        settings=sample_settings,  # with the guidance weights, time range and boosting of the model's conditioning
    shell:
        logged("python -m aot sample --ckpt {input.net:q} --disc {input.disc:q} --rho {params.rho:q} "
            "--steps {params.steps:q} --seeds {wildcards.shard:q} --settings {params.settings:q} --out {output:q} "
            "--threads {threads:q}")


# The frozen ADM classifier DG reads its features from (extractor adm32: DG's 32x32_classifier.pt from the authors'
# Google Drive folder; adm64: guided-diffusion's 64x64_classifier.pt), fetched once on the login node (localrule) and
# checked to load into aot.models.adm's classifier. A copy put at guidance.extractor_weights by hand (clusters without
# internet) is used as it is. protected(): the downloaded copy is made read-only, so that a forced or triggered rerun
# stops with an error instead of deleting it, downloading it again (Google Drive quota) and retraining every
# discriminator. No conda: directive, so that a change of the environment file is no rerun trigger.
if GUIDANCE["enabled"] and GUIDANCE["extractor"] != "none":

    rule fetch_dg_classifier:
        output:
            protected(GUIDANCE["extractor_weights"]),
        log:
            f"{R}/logs/fetch_dg_classifier.log",
        localrule: True
        params:
            extractor=GUIDANCE["extractor"],
        message:
            "Downloading the ADM classifier of guidance.extractor {params.extractor} to {output}"
        shell:
            "python -m aot fetch-dg-classifier --extractor {params.extractor:q} --out {output:q} > {log:q} 2>&1"
