"""Training: EDM's augmentation pipe (``augment``), noise pairing — AOT's exact assignment and its
family (``pairing``), EDM's loss (``loss``), the resumable, distributed training loop (``loop``), and training DG's
discriminator with or without AOT pairing (``discriminator``).

May import :mod:`aot.core`, :mod:`aot.data` and :mod:`aot.models`.
"""
