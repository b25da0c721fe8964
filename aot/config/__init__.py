"""Experiment configs: YAML reading (duplicate keys refused), the JSON-schema check, merging of files and
``--config`` overrides, and resolution into the exact job specs (``resolve``: train and train-disc; ``stages``: the
``--settings`` of every other stage), shared by the Snakefile, ``check-config`` and ``show-config``.

May import every subpackage except :mod:`aot.cli`.
"""
