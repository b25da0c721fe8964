"""Training: EDM's augmentation pipe (``augment``), noise pairing — AOT's exact assignment and its family
(``pairing``, the assignment problem and its solvers in ``assignment``), EDM's loss (``loss``), what determines a run
and its schedules (``spec``), the resumable, distributed training loop (``loop``) with its log and pool sampler
(``runlog``) and its state, dumped and resumed (``runstate``), and training DG's discriminator with or without AOT
pairing (``discriminator``).

May import :mod:`aot.core`, :mod:`aot.data` and :mod:`aot.models`.
"""
