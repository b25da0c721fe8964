"""Sampling: the Karras sigma schedule and the one Heun solver (``samplers``), Discriminator Guidance as a
denoiser-to-denoiser wrapper and DG's boosted sampler (``guidance``), seeded sample sets that do not depend on the
batch or shard split (``generate``).

May import :mod:`aot.core`, :mod:`aot.data`, :mod:`aot.models` and :mod:`aot.training`.
"""
