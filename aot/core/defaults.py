"""The defaults that more than one layer needs, each in one place (the config schema's defaults are pinned to these by
tests/test_config.py): function signatures, CLI flags and the config resolver read them from here."""

SIGMA_MIN = 0.002  # EDM's noise range of the sampler (EDM generate.py; config sample.sigma_min / sigma_max)
SIGMA_MAX = 80.0
TEST_FRACTION = 0.2  # held-out share of digits / images for the feature net's accuracy (config dataset.test_fraction)
KNN_K = 8  # knn pairing: candidate noises per image (config arms.<arm>.knn_k)
