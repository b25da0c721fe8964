"""Network presets as plain data (no torch import), shared by the networks and the config resolver.

EDM's train.py CIFAR-10 settings (``--arch=ddpmpp | ncsnpp``, default ``--dropout=0.13``); docs/method.md §2.3.
The config resolver (:mod:`aot.config.resolve`) writes the preset, with the config's overrides applied, into every train
spec, so the command a job runs names every network setting instead of relying on a default.
"""

from __future__ import annotations

ARCH_PRESETS: dict[str, dict] = {
    "ddpmpp": dict(model_channels=128, channel_mult=[2, 2, 2], channel_mult_emb=4, num_blocks=4,
                   attn_resolutions=[16], dropout=0.13, embedding_type="positional", channel_mult_noise=1,
                   encoder_type="standard", decoder_type="standard", resample_filter=[1, 1]),
    "ncsnpp": dict(model_channels=128, channel_mult=[2, 2, 2], channel_mult_emb=4, num_blocks=4,
                   attn_resolutions=[16], dropout=0.13, embedding_type="fourier", channel_mult_noise=2,
                   encoder_type="residual", decoder_type="standard", resample_filter=[1, 3, 3, 1]),
}
