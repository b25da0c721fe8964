"""Networks and what rebuilds them from plain data: EDM's SongUNet (``networks``, presets in ``presets``),
EDM's preconditioning (``precond``), denoisers from checkpoints (``denoiser``), the ADM classifier/encoder and DG's
head (``adm``), DG's discriminator network (``discriminator``) on DG's VP-SDE (``vp``), EDM's released checkpoints
read as data (``released``) and DG's classifier download (``dg_assets``). No training, sampling or metrics here.

May import :mod:`aot.core` and :mod:`aot.data`.
"""
