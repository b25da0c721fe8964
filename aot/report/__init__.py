"""Reporting: the paper's tables with the paper's numbers beside ours (``tables``, numbers in ``paper``), the figures
(``figures``), and every table's and figure's title and caption (``captions``, also the source of the report's
captions in workflow/report/).

May import every subpackage below it: core, data, models, training, sampling, eval.
"""
