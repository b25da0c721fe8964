"""Evaluation: clean-fid's Inception FID (``fid``), the small-data feature network (``featnet``), Frechet
distance, KID and statistics files (``metrics``), scoring sample sets (``scoring``), paired differences between
arms (``paired``), ODE trajectory straightness, curvature and truncation error (``trajectory``).

May import every subpackage below it: core, data, models, training, sampling.
"""
