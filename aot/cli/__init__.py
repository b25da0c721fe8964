"""``python -m aot <stage>``: one subcommand per workflow rule, each a thin parser around a stage function.

The top of the import order: nothing in ``aot`` imports it.
"""
