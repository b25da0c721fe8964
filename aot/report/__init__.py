"""Reporting: the paper's tables with the paper's numbers beside ours (``tables``, numbers in ``paper``)
and the figures (``figures``).

May import every subpackage below it: core, data, models, training, sampling, eval.
"""
