# The resolved config of the run: every key its jobs ran with (schema defaults filled in). A complete config file
# itself: `snakemake --configfile results/<exp>/config.yaml` runs the same experiment. Any change of the config
# rewrites it (params trigger); only the tables read it, so a change never retrains anything by itself.
rule resolved_config:
    output:
        f"{R}/config.yaml",
    log:
        f"{R}/logs/resolved_config.log",
    localrule: True
    params:
        resolved=spec_json(config),
    run:
        write_resolved_config(config, output[0], log[0], configfiles=workflow.configfiles)
