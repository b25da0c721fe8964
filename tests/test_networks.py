"""SongUNet and DhariwalUNet (aot.models.networks) against NVlabs/edm's: sizes, state_dict layout, init and forward pass.

The reference data in tests/fixtures/edm_* was produced outside this repository by instantiating EDM's own
``training/networks.py`` (NVlabs/edm commit 008a4e5316c8e3bfe61a62f874bddba254295afb, PyTorch 2.14.1, CPU):
  * edm_{ddpmpp,ncsnpp}_cond_keys.json: ``{name: shape}`` of EDM's state_dict at the CIFAR-10 settings
    (img_resolution=32, in/out_channels=3, label_dim=10, augment_dim=9, train.py --arch presets).
  * edm_small_{ddpmpp,ncsnpp,skip}.pt (tensors only): EDM's state_dict for SMALL_COMMON + SMALL[name] after
    torch.manual_seed(1) construction, with every parameter then redrawn at O(1) scale (EDM's own init makes
    the output ~1e-5, which would make the comparison vacuous), EDM's eval-mode outputs on fixed inputs with
    and without augment labels, and EDM's per-parameter init statistics [mean, std, numel] before redrawing.
  * edm_adm_imagenet_keys.json and edm_small_adm.pt (DhariwalUNet): written by
    ``python tools/edm_fixtures.py --edm <NVlabs/edm checkout at 008a4e5>`` (PyTorch 2.14.1, CPU); the small
    network's weights and inputs are drawn from seeds by tests/edm_reference.py, so only EDM's outputs are stored.
"""

import json
import math
from pathlib import Path

import pytest
import torch
from edm_reference import ADM_SMALL, init_statistics, redraw_parameters, reference_inputs

from aot.models.dhariwal import DhariwalUNet
from aot.models.layers import group_norm_groups
from aot.models.networks import (
    ARCH_PRESETS,
    BACKBONES,
    SongUNet,
    count_parameters,
    make_network,
    network_ctor,
    tunable_args,
)
from aot.models.presets import ARCH_BACKBONES, BACKBONE_OVERRIDES

FIXTURES = Path(__file__).parent / "fixtures"

# EDM SongUNet parameter counts, CIFAR-10: img_resolution=32, in_channels=out_channels=3, augment_dim=9, and
# train.py's --arch kwargs (model_channels=128, channel_mult=[2,2,2], dropout=0.13, plus per arch:
# ddpmpp: positional, channel_mult_noise=1, standard/standard, [1,1];
# ncsnpp: fourier, channel_mult_noise=2, residual/standard, [1,3,3,1]). Counted at NVlabs/edm 008a4e5.
EDM_PARAMS = {
    ("ddpmpp", 0): 55_733_891,
    ("ddpmpp", 10): 55_735_299,
    ("ncsnpp", 0): 56_397_827,
    ("ncsnpp", 10): 56_400_643,
}

# EDM parameter counts at 64x64, counted by instantiating NVlabs/edm 008a4e5's own classes on the meta device
# (PyTorch 2.14.1), e.g. for ImageNet-64:
#   cd <edm checkout> && python -c "import torch; from training.networks import EDMPrecond
#   with torch.device('meta'): n = EDMPrecond(64, 3, label_dim=1000, use_fp16=True, model_type='DhariwalUNet',
#       model_channels=192, channel_mult=[1,2,3,4], dropout=0.10)
#   print(sum(p.numel() for p in n.parameters()))"                                               -> 295,899,267
# FFHQ / AFHQv2-64 are train.py --arch=ddpmpp|ncsnpp --cres=1,2,2,2 --augment=0.15 (so augment_dim=9), label_dim 0:
# EDMPrecond(64, 3, model_type='SongUNet', <the arch's kwargs>, channel_mult=[1,2,2,2], augment_dim=9).
EDM_PARAMS_64 = {  # (arch, label_dim, augment_dim): count
    ("adm", 1000, 0): 295_899_267,  # edm-imagenet-64x64-cond-adm (README: --arch=adm --augment=0)
    ("adm", 1000, 9): 295_900_995,
    ("adm", 0, 0): 295_131_267,
    ("ddpmpp", 0, 9): 61_805_571,  # edm-{ffhq,afhqv2}-64x64-uncond-vp
    ("ncsnpp", 0, 9): 62_761_091,  # edm-{ffhq,afhqv2}-64x64-uncond-ve
}

# Configurations of the edm_small_*.pt fixtures (8x8 down to 2x2; GroupNorm with 1, 2, 3 and 4 groups).
SMALL_COMMON = dict(img_resolution=8, in_channels=3, out_channels=3, label_dim=10, augment_dim=9,
                    model_channels=4, channel_mult=[1, 2, 2], channel_mult_emb=2, num_blocks=1,
                    attn_resolutions=[4], dropout=0.0)
SMALL = {
    "ddpmpp": dict(embedding_type="positional", channel_mult_noise=1, encoder_type="standard",
                   decoder_type="standard", resample_filter=[1, 1]),
    "ncsnpp": dict(embedding_type="fourier", channel_mult_noise=2, encoder_type="residual",
                   decoder_type="standard", resample_filter=[1, 3, 3, 1]),
    "skip": dict(embedding_type="fourier", channel_mult_noise=2, encoder_type="skip",
                 decoder_type="skip", resample_filter=[1, 3, 3, 1]),
}

# The embedded default: 8x8 single-channel digits.
DIGITS = dict(img_resolution=8, in_channels=1, out_channels=1, model_channels=32, channel_mult=(1, 2),
              num_blocks=1, attn_resolutions=(4,), channel_mult_emb=2)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # These tensors are tiny: with 2+ threads, thread synchronisation dominates, and on a shared, loaded
    # machine it made this file 2-3x slower. Restored afterwards so other test modules are unaffected.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _load_fixture(name: str) -> dict:
    return torch.load(FIXTURES / f"edm_small_{name}.pt", weights_only=True)


def _randomize(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Redraw every parameter at O(1) scale so outputs are not ~1e-5 (the zero-ish init of the heads)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel() if p.ndim > 1 else 5))
    return net


def _inputs(batch: int, net: SongUNet, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, net.in_channels, net.img_resolution, net.img_resolution, generator=g)
    noise_labels = torch.randn(batch, generator=g)
    labels = None
    if net.label_dim:
        labels = torch.nn.functional.one_hot(torch.arange(batch) % net.label_dim, net.label_dim).float()
    return x, noise_labels, labels


@pytest.mark.parametrize("arch,label_dim", list(EDM_PARAMS))
def test_parameter_count_matches_edm(arch, label_dim):
    net = make_network(arch, img_resolution=32, in_channels=3, out_channels=3, label_dim=label_dim,
                       augment_dim=9)
    n = count_parameters(net)
    print(f"{arch} label_dim={label_dim}: ours {n:,}  EDM {EDM_PARAMS[arch, label_dim]:,}")
    assert n == EDM_PARAMS[arch, label_dim]


@pytest.mark.parametrize("arch,label_dim,augment_dim", list(EDM_PARAMS_64))
def test_parameter_count_at_64x64_matches_edm(arch, label_dim, augment_dim):
    cres = {} if arch == "adm" else dict(channel_mult=[1, 2, 2, 2])  # ADM's preset is already EDM's [1,2,3,4]
    with torch.device("meta"):  # shapes only: ADM has 296M parameters
        net = make_network(arch, img_resolution=64, in_channels=3, out_channels=3, label_dim=label_dim,
                           augment_dim=augment_dim, **cres)
    assert type(net) is (DhariwalUNet if arch == "adm" else SongUNet)
    assert count_parameters(net) == EDM_PARAMS_64[arch, label_dim, augment_dim]


def test_adm_state_dict_keys_and_shapes_match_edm():
    ref = json.loads((FIXTURES / "edm_adm_imagenet_keys.json").read_text())
    with torch.device("meta"):
        net = make_network("adm", img_resolution=64, in_channels=3, out_channels=3, label_dim=1000, augment_dim=9)
    ours = {k: list(v.shape) for k, v in net.state_dict().items()}
    assert sorted(set(ours) ^ set(ref["keys"])) == []
    assert ours == ref["keys"]
    assert count_parameters(net) == ref["parameters"] == EDM_PARAMS_64["adm", 1000, 9]


def test_adm_forward_matches_edm():
    ref = torch.load(FIXTURES / "edm_small_adm.pt", weights_only=True)
    net = redraw_parameters(DhariwalUNet(**ADM_SMALL), 1).eval()
    heads = {k: m.num_heads for k, m in net.named_modules() if hasattr(m, "num_heads") and m.num_heads}
    assert set(heads.values()) == {1, 2} and "enc.8x8_block0" not in heads  # 32 channels: no heads, as EDM
    x = reference_inputs()
    assert ref["out"].std() > 0.1
    with torch.no_grad():
        out = net(x["x"], x["noise_labels"], x["class_labels"], x["augment_labels"])
        out_noaug = net(x["x"], x["noise_labels"], x["class_labels"])
    torch.testing.assert_close(out, ref["out"], rtol=0, atol=1e-5)
    torch.testing.assert_close(out_noaug, ref["out_noaug"], rtol=0, atol=1e-5)
    assert (out - out_noaug).abs().max() > 1e-3


def test_adm_init_matches_edm_statistics():
    edm = torch.load(FIXTURES / "edm_small_adm.pt", weights_only=True)["init_stats"]
    torch.manual_seed(0)
    ours = init_statistics(DhariwalUNet(**ADM_SMALL))
    assert set(ours) == set(edm)
    for key, (mean, std, numel) in ours.items():
        e_mean, e_std, e_numel = edm[key].tolist()
        assert numel == e_numel, key
        if e_std == 0:  # zero-initialised output layers and biases of the heads, unit GroupNorm scales
            assert std == 0 and mean == e_mean, key
        else:  # kaiming-uniform layers (1/sqrt(fan_in)) and the N(0, 1) label map; looser for tiny tensors
            tol = 1.5 if numel >= 32 else 2.5
            assert 1 / tol < std.item() / e_std < tol, (key, numel, std.item() / e_std)


def test_adm_label_and_augment_paths():
    net = redraw_parameters(DhariwalUNet(**ADM_SMALL), 2)
    x = reference_inputs(batch=2)
    zeros = torch.zeros_like(x["class_labels"])
    with torch.no_grad():
        assert torch.equal(net.eval()(x["x"], x["noise_labels"], x["class_labels"], None),
                           net(x["x"], x["noise_labels"], x["class_labels"], torch.zeros(2, 9)))
        net.label_dropout = 1.0
        dropped = net.train()(x["x"], x["noise_labels"], x["class_labels"])
        assert torch.equal(dropped, net(x["x"], x["noise_labels"], zeros))
        assert (net.eval()(x["x"], x["noise_labels"], x["class_labels"]) - dropped).abs().max() > 1e-3
    with pytest.raises(ValueError, match="label_dim=10"):
        net(x["x"], x["noise_labels"])


def test_adm_gradients_reach_every_parameter():
    net = redraw_parameters(DhariwalUNet(**{**ADM_SMALL, "dropout": 0.1}), 3).train()
    x = reference_inputs(batch=2)
    net(**x).square().sum().backward()
    assert [k for k, p in net.named_parameters() if p.grad is None or not p.grad.isfinite().all()] == []


@pytest.mark.parametrize("arch", ["ddpmpp", "adm"])
def test_float16_forward_follows_float32(arch):
    """EDMPrecond(use_fp16) on CUDA feeds the backbone float16 input: every layer casts its float32 weights to it and
    the noise embedding stays float32. The same forward on the CPU (float16 kernels) is float16 and close."""
    small = dict(ADM_SMALL, img_resolution=8) if arch == "adm" else dict(SMALL_COMMON, **SMALL["ddpmpp"])
    net = redraw_parameters(BACKBONES[ARCH_BACKBONES[arch]](**small), 4).eval()
    x = reference_inputs()
    with torch.no_grad():
        full = net(**x)
        half = net(**dict(x, x=x["x"].half()))
    assert half.dtype == torch.float16 and full.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in net.parameters())
    torch.testing.assert_close(half.float(), full, rtol=0, atol=1e-2 * full.abs().max().item())


def test_override_lists_match_the_backbone_signatures():
    # config.py validates overrides from presets.BACKBONE_OVERRIDES without importing torch
    assert set(ARCH_BACKBONES.values()) == set(BACKBONES) == set(BACKBONE_OVERRIDES)
    for model_type, names in BACKBONE_OVERRIDES.items():
        assert names == tunable_args(model_type)
    for arch, preset in ARCH_PRESETS.items():
        assert set(preset) <= set(BACKBONE_OVERRIDES[ARCH_BACKBONES[arch]]), arch


def test_adm_rejects_songunet_overrides():
    with pytest.raises(ValueError, match=r"'encoder_type' for arch adm \(DhariwalUNet\)"):
        make_network("adm", img_resolution=8, in_channels=1, out_channels=1, encoder_type="residual")


@pytest.mark.parametrize("arch", ["ddpmpp", "ncsnpp"])
def test_state_dict_keys_and_shapes_match_edm(arch):
    expected = json.loads((FIXTURES / f"edm_{arch}_cond_keys.json").read_text())
    net = make_network(arch, img_resolution=32, in_channels=3, out_channels=3, label_dim=10, augment_dim=9)
    ours = {k: list(v.shape) for k, v in net.state_dict().items()}
    assert sorted(set(ours) - set(expected)) == []
    assert sorted(set(expected) - set(ours)) == []
    assert ours == expected


@pytest.mark.parametrize("name", list(SMALL))
def test_edm_weights_load_strict_and_forward_matches(name):
    ref = _load_fixture(name)
    net = SongUNet(**SMALL_COMMON, **SMALL[name])
    net.load_state_dict(ref["state_dict"], strict=True)
    net.eval()
    assert ref["out"].std() > 0.1  # the reference output is not vanishingly small
    with torch.no_grad():
        out = net(ref["x"], ref["noise_labels"], ref["class_labels"], ref["augment_labels"])
        out_noaug = net(ref["x"], ref["noise_labels"], ref["class_labels"])
    assert out.shape == ref["out"].shape == (3, 3, 8, 8)
    torch.testing.assert_close(out, ref["out"], rtol=0, atol=1e-5)
    torch.testing.assert_close(out_noaug, ref["out_noaug"], rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", list(SMALL))
def test_init_matches_edm_statistics(name):
    edm = _load_fixture(name)["init_stats"]
    torch.manual_seed(0)
    net = SongUNet(**SMALL_COMMON, **SMALL[name])
    params = dict(net.named_parameters())
    assert set(params) == set(edm)
    for key, p in params.items():
        mean, std, numel = edm[key].tolist()
        if std == 0:  # zero biases, unit GroupNorm scales
            assert torch.equal(p, torch.full_like(p, mean)), key
        else:
            # Separates xavier (x1), qkv (x sqrt(0.2)) and output heads (x 1e-5); seeds are fixed, and
            # the looser bound is for the few 1x1 skip convs with under 32 weights (sample std is noisy).
            tol = 1.5 if numel >= 32 else 2.0
            ratio = p.std().item() / std
            assert 1 / tol < ratio < tol, (key, numel, ratio)


@pytest.mark.parametrize("arch", ["ddpmpp", "ncsnpp"])
@pytest.mark.parametrize("label_dim", [0, 10])
def test_digits_forward_shape_and_gradients(arch, label_dim):
    net = make_network(arch, label_dim=label_dim, **DIGITS)
    x, noise_labels, labels = _inputs(4, net)
    out = net(x, noise_labels, labels)
    assert out.shape == (4, 1, 8, 8)
    assert out.dtype == x.dtype
    out.square().sum().backward()
    missing = [k for k, p in net.named_parameters() if p.grad is None or not p.grad.isfinite().all()]
    assert missing == []


@pytest.mark.parametrize("encoder_type,decoder_type", [("standard", "standard"), ("residual", "standard"),
                                                       ("skip", "skip")])
@pytest.mark.parametrize("resample_filter", [(1, 1), (1, 3, 3, 1)])
def test_resolution_down_to_2x2(encoder_type, decoder_type, resample_filter):
    net = SongUNet(img_resolution=4, in_channels=2, out_channels=2, model_channels=8, channel_mult=(1, 2),
                   num_blocks=1, attn_resolutions=(2,), channel_mult_emb=1, encoder_type=encoder_type,
                   decoder_type=decoder_type, resample_filter=resample_filter)
    assert "2x2_block0" in net.enc and "2x2_in0" in net.dec
    x, noise_labels, _ = _inputs(2, net)
    assert net(x, noise_labels).shape == (2, 2, 4, 4)


@pytest.mark.parametrize("channels,groups", [(256, 32), (128, 32), (16, 4), (8, 2), (4, 1), (2, 1),
                                             (12, 3), (18, 3), (50, 10)])
def test_group_norm_groups(channels, groups):
    # EDM: min(32, C // 4); where that is 0 or does not divide C, the largest divisor below it.
    assert group_norm_groups(channels) == groups


def test_channel_counts_edm_cannot_group():
    # model_channels=6 gives an 18-channel decoder input, where EDM's rule (4 groups) fails.
    net = SongUNet(img_resolution=8, in_channels=1, out_channels=1, model_channels=6, channel_mult=(1, 2),
                   num_blocks=1, attn_resolutions=(4,), channel_mult_emb=1)
    x, noise_labels, _ = _inputs(2, net)
    assert net(x, noise_labels).shape == (2, 1, 8, 8)


def test_label_dropout_zeroes_labels_in_training_only():
    net = _randomize(make_network("ddpmpp", label_dim=10, dropout=0.0, label_dropout=1.0, **DIGITS), 1)
    x, noise_labels, labels = _inputs(3, net)
    zeros = torch.zeros_like(labels)
    with torch.no_grad():
        dropped = net.train()(x, noise_labels, labels)
        assert torch.equal(dropped, net(x, noise_labels, zeros))
        kept = net.eval()(x, noise_labels, labels)
    assert (kept - dropped).abs().max() > 1e-3


def test_augment_labels_none_equals_zeros():
    net = _randomize(make_network("ncsnpp", augment_dim=9, **DIGITS), 2).eval()
    x, noise_labels, _ = _inputs(2, net)
    aug = torch.randn(2, 9)
    with torch.no_grad():
        assert torch.equal(net(x, noise_labels, None, None), net(x, noise_labels, None, torch.zeros(2, 9)))
        assert (net(x, noise_labels, None, aug) - net(x, noise_labels)).abs().max() > 1e-3


def test_conditional_network_requires_class_labels():
    net = make_network("ddpmpp", label_dim=10, **DIGITS)
    x, noise_labels, _ = _inputs(2, net)
    with pytest.raises(ValueError, match="label_dim=10"):
        net(x, noise_labels)


def test_fourier_frequencies_do_not_depend_on_global_seed():
    torch.manual_seed(0)
    a = make_network("ncsnpp", **DIGITS)
    torch.manual_seed(1)
    b = make_network("ncsnpp", **DIGITS)
    assert torch.equal(a.map_noise.freqs, b.map_noise.freqs)
    assert not torch.equal(a.enc["8x8_conv"].weight, b.enc["8x8_conv"].weight)
    assert 8 < a.map_noise.freqs.std() < 32  # N(0, 16^2), 32 draws


def test_float64_forward():
    net = make_network("ncsnpp", label_dim=10, **DIGITS).double()
    x, noise_labels, labels = _inputs(2, net)
    out = net(x.double(), noise_labels.double(), labels.double())
    assert out.dtype == torch.float64 and out.shape == (2, 1, 8, 8)


@pytest.mark.parametrize("arch", list(ARCH_PRESETS))
def test_network_ctor_is_plain_data_and_rebuilds(arch):
    ctor = network_ctor(arch, label_dim=10, augment_dim=9, dropout=0.0, **DIGITS)
    assert json.loads(json.dumps(ctor)) == ctor
    assert ctor["channel_mult"] == [1, 2] and ctor["dropout"] == 0.0 and ctor["label_dim"] == 10
    assert all(ctor[k] == v for k, v in ARCH_PRESETS[arch].items() if k not in (*DIGITS, "dropout"))
    a = BACKBONES[ARCH_BACKBONES[arch]](**ctor)
    b = make_network(arch, label_dim=10, augment_dim=9, dropout=0.0, **DIGITS)
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}


def test_make_network_rejects_unknown_arch():
    with pytest.raises(ValueError, match=r"'ddpm'.*ddpmpp, ncsnpp, adm"):
        make_network("ddpm", img_resolution=8, in_channels=1, out_channels=1)


def test_make_network_rejects_unknown_override():
    with pytest.raises(ValueError, match=r"'channels'.*model_channels"):
        make_network("ncsnpp", img_resolution=8, in_channels=1, out_channels=1, channels=32)


@pytest.mark.parametrize("kwargs,match", [(dict(embedding_type="sinusoidal"), "positional, fourier"),
                                          (dict(encoder_type="dense"), "standard, skip, residual"),
                                          (dict(decoder_type="residual"), "standard, skip"),
                                          (dict(img_resolution=6), "divisible")])
def test_songunet_rejects_invalid_choices(kwargs, match):
    base = dict(img_resolution=8, in_channels=1, out_channels=1, model_channels=8, channel_mult=(1, 2, 2),
                num_blocks=1)
    with pytest.raises(ValueError, match=match):
        SongUNet(**{**base, **kwargs})
