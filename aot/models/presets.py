"""Network presets as plain data (no torch import), shared by the networks and the config resolver.

EDM's train.py settings: ``--arch=ddpmpp | ncsnpp`` (SongUNet, the CIFAR-10 presets) and ``--arch=adm``
(DhariwalUNet: train.py sets model_channels=192, channel_mult=[1,2,3,4], the rest are DhariwalUNet's defaults),
each with train.py's default ``--dropout=0.13``; docs/method.md §2.3. The config resolver (:mod:`aot.config.resolve`)
writes the preset, with the config's overrides applied, into every train spec, so the command a job runs names
every network setting instead of relying on a default.
"""

from __future__ import annotations

ARCH_PRESETS: dict[str, dict] = {
    "ddpmpp": dict(model_channels=128, channel_mult=[2, 2, 2], channel_mult_emb=4, num_blocks=4,
                   attn_resolutions=[16], dropout=0.13, embedding_type="positional", channel_mult_noise=1,
                   encoder_type="standard", decoder_type="standard", resample_filter=[1, 1]),
    "ncsnpp": dict(model_channels=128, channel_mult=[2, 2, 2], channel_mult_emb=4, num_blocks=4,
                   attn_resolutions=[16], dropout=0.13, embedding_type="fourier", channel_mult_noise=2,
                   encoder_type="residual", decoder_type="standard", resample_filter=[1, 3, 3, 1]),
    "adm": dict(model_channels=192, channel_mult=[1, 2, 3, 4], channel_mult_emb=4, num_blocks=3,
                attn_resolutions=[32, 16, 8], dropout=0.13),
}

# The backbone class (EDM's model_type) of each arch.
ARCH_BACKBONES: dict[str, str] = {"ddpmpp": "SongUNet", "ncsnpp": "SongUNet", "adm": "DhariwalUNet"}

# Constructor arguments a config may override, per backbone (tests/test_networks.py pins them to the signatures).
BACKBONE_OVERRIDES: dict[str, tuple[str, ...]] = {
    "SongUNet": ("model_channels", "channel_mult", "channel_mult_emb", "num_blocks", "attn_resolutions", "dropout",
                 "label_dropout", "embedding_type", "channel_mult_noise", "encoder_type", "decoder_type",
                 "resample_filter"),
    "DhariwalUNet": ("model_channels", "channel_mult", "channel_mult_emb", "num_blocks", "attn_resolutions",
                     "dropout", "label_dropout"),
}
