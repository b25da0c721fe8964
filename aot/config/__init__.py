"""Experiment configs: YAML reading (duplicate keys refused), the JSON-schema check, merging of files and
``--config`` overrides, and resolution into the exact job specs (``resolve``), shared by the Snakefile,
``check-config`` and ``show-config``.

May import every subpackage except :mod:`aot.cli`.
"""
