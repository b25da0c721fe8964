"""EncoderUNet (aot.models.adm) against guided-diffusion's EncoderUNetModel as vendored by DG.

The reference data was produced outside this repository by running the reference code itself (PyTorch 2.14.1,
CPU): alsdudrla10/DG @ 1a152b7a4e726a6937cd15e0a5a19ae2c88c118d (``classifier_lib.py`` and its
``guided_diffusion/unet.py``), cross-checked against openai/guided-diffusion @ 22e0df8 for unconditional models:
  * adm_classifier32_keys.json: ``{model: {name: shape}}`` of the state_dicts of DG's
    ``load_classifier(None, 32, ...)`` ("adm_classifier_32", the module ``32x32_classifier.pt`` loads into) and
    ``load_discriminator(None, ..., condition=False/True)`` ("dg_head", "dg_head_cond").
  * adm_classifier64_keys.json: ``{name: shape}`` of DG's ``load_classifier(None, 64, "cpu")`` (the module
    guided-diffusion's ``64x64_classifier.pt`` loads into); openai/guided-diffusion @ 22e0df8 ``EncoderUNetModel``
    with the arguments of its README's 64x64 classifier flags gives the same names, shapes and order.
  * adm_small.pt (plain tensors and numbers; loads with weights_only=True):
      - cases["encoder_cond" | "encoder_plain"]: our EncoderUNet kwargs (``config``), DG's EncoderUNetModel
        built from them, with every tensor (GroupNorm affine and the zero-initialised convs included) redrawn at
        O(1) scale on an int8 grid. Its state_dict is stored as ``packed`` (all int8 codes, in state_dict order)
        and ``layout`` ([(key, shape, scale)], scale a power of two per tensor, so the decoded float32 values
        are exactly those the reference ran with; int8 and one tensor keep the file < 300 KB), together with
        the reference's eval-mode ``logits = net(x, t, condition=labels)`` and
        ``features = net(x, t, feature=True, condition=labels)``. For "encoder_plain" the stock
        guided-diffusion model, fed 999 * t, gave bit-identical logits.
      - cases["resblock"]: the same for one ResBlock, 32 -> 64 channels (1x1 skip conv), downsampling, additive
        embedding. (In "encoder_plain" every GroupNorm has one channel per group, which cancels an additive
        embedding; at 64 channels it does not.)
      - init_stats[name]: ``[sum, sum of squares]`` (float64) of every state_dict tensor right after
        ``torch.manual_seed(0)`` and construction, for both small encoders and DG's full-size heads.
"""

import json
import math
import os
import sys
from pathlib import Path

import pytest
import torch

from aot.models.adm import (
    ADM_CLASSIFIER_32,
    ADM_CLASSIFIER_64,
    DG_HEAD,
    DG_HEAD_COND,
    EncoderUNet,
    ResBlock,
    load_state_dict_file,
    timestep_embedding,
)

FIXTURES = Path(__file__).parent / "fixtures"
CONFIGS = {"adm_classifier_32": ADM_CLASSIFIER_32, "adm_classifier_64": ADM_CLASSIFIER_64, "dg_head": DG_HEAD,
           "dg_head_cond": DG_HEAD_COND}

# Parameter counts of DG's own modules, obtained once by running DG @ 1a152b7 on CPU:
#   sum(p.numel() for p in classifier_lib.load_classifier(None, 32, "cpu").parameters())          -> 47,771,112
#   ... classifier_lib.load_discriminator(None, "cpu", condition=False).parameters()              ->  2,883,841
#   ... classifier_lib.load_discriminator(None, "cpu", condition=True).parameters()               ->  3,395,841
#   ... classifier_lib.load_classifier(None, 64, "cpu").parameters()                                -> 65,438,568
# openai/guided-diffusion @ 22e0df8 EncoderUNetModel with the same (unconditional) kwargs gives the same counts.
# The conditional head adds label_emb = nn.Embedding(1000, 512): 512,000 parameters.
DG_PARAMS = {"adm_classifier_32": 47_771_112, "adm_classifier_64": 65_438_568, "dg_head": 2_883_841,
             "dg_head_cond": 3_395_841}


@pytest.fixture(scope="module")
def small() -> dict:
    return torch.load(FIXTURES / "adm_small.pt", weights_only=True)


@pytest.fixture(scope="module")
def classifier() -> EncoderUNet:
    torch.manual_seed(0)
    return EncoderUNet(**ADM_CLASSIFIER_32).eval()


def _decode(case: dict) -> dict:
    """Packed int8 codes times per-tensor power-of-two scales -> the float32 state_dict the reference ran with."""
    state_dict, start = {}, 0
    for key, shape, scale in case["layout"]:
        n = math.prod(shape)
        state_dict[key] = case["packed"][start:start + n].float().reshape(shape) * scale
        start += n
    assert start == case["packed"].numel()
    return state_dict


def _n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------------------------------------------------------
# Sizes and state_dict layout of DG's full-size modules.


@pytest.mark.parametrize("name", list(CONFIGS))
def test_parameter_count_matches_dg(name, classifier):
    net = classifier if name == "adm_classifier_32" else EncoderUNet(**CONFIGS[name])
    assert _n_params(net) == DG_PARAMS[name]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_state_dict_keys_and_shapes_match_dg(name, classifier):
    if name == "adm_classifier_64":
        expected = json.loads((FIXTURES / "adm_classifier64_keys.json").read_text())
    else:
        expected = json.loads((FIXTURES / "adm_classifier32_keys.json").read_text())[name]
    net = classifier if name == "adm_classifier_32" else EncoderUNet(**CONFIGS[name])
    ours = {k: list(v.shape) for k, v in net.state_dict().items()}
    assert sorted(set(ours) - set(expected)) == []
    assert sorted(set(expected) - set(ours)) == []
    assert ours == expected
    assert list(ours) == list(expected)  # same order too


def test_configs_are_json_safe():
    for cfg in CONFIGS.values():
        assert json.loads(json.dumps(cfg)) == cfg
    assert DG_HEAD_COND == {**DG_HEAD, "num_classes": 1000}


# ---------------------------------------------------------------------------------------------------------------
# Numerics against the reference code (small configurations).


@pytest.mark.parametrize("name", ["encoder_cond", "encoder_plain"])
def test_reference_weights_load_strict_and_outputs_match(name, small):
    case = small["cases"][name]
    net = EncoderUNet(**case["config"]).eval()
    net.load_state_dict(_decode(case), strict=True)
    assert case["logits"].std() > 0.1 and case["features"].std() > 0.5  # not a vacuous comparison
    with torch.no_grad():
        logits = net(case["x"], case["t"], case["labels"])
        feats = net.features(case["x"], case["t"], case["labels"])
    assert feats.shape == case["features"].shape == (len(case["x"]), net.feature_channels, net.feature_size,
                                                     net.feature_size)
    torch.testing.assert_close(feats, case["features"], rtol=0, atol=1e-5)
    torch.testing.assert_close(logits, case["logits"], rtol=0, atol=1e-5)
    if case["labels"] is not None:  # one-hot labels are argmax'ed, as in DG
        onehot = torch.nn.functional.one_hot(case["labels"], case["config"]["num_classes"]).float()
        with torch.no_grad():
            torch.testing.assert_close(net(case["x"], case["t"], onehot), logits, rtol=0, atol=0)
        with pytest.raises(ValueError, match="labels are required"):
            net(case["x"], case["t"])


def test_resblock_with_skip_conv_matches_reference(small):
    case = small["cases"]["resblock"]
    block = ResBlock(**case["config"]).eval()
    block.load_state_dict(_decode(case), strict=True)
    assert "skip_connection.weight" in block.state_dict()
    with torch.no_grad():
        out = block(case["x"], case["emb"])
    assert out.shape == case["out"].shape == (2, 64, 1, 1)
    torch.testing.assert_close(out, case["out"], rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["encoder_cond", "encoder_plain", "dg_head", "dg_head_cond"])
def test_seeded_init_matches_reference(name, small):
    """Same draws in the same order: identical initial weights (zeroed output convs, pos. embedding scale)."""
    ref = small["init_stats"][name]
    cfg = small["cases"][name]["config"] if name in small["cases"] else CONFIGS[name]
    torch.manual_seed(0)
    sd = EncoderUNet(**cfg).state_dict()
    assert list(sd) == list(ref)
    for key, v in sd.items():
        s, s2 = ref[key]
        assert v.double().sum().item() == pytest.approx(s, rel=1e-9, abs=1e-9), key
        assert v.double().square().sum().item() == pytest.approx(s2, rel=1e-9, abs=1e-12), key


# ---------------------------------------------------------------------------------------------------------------
# Closed forms, shapes, file loading.


@pytest.mark.parametrize("dim", [8, 128, 9])
def test_timestep_embedding_closed_form(dim):
    t = torch.tensor([0.0, 0.25, 1.0, 37.5, 999.0])
    emb = timestep_embedding(t, dim)
    half = dim // 2
    assert emb.shape == (5, dim) and emb.dtype == torch.float32
    td = t.double()[:, None]
    w = 10000.0 ** (-torch.arange(half, dtype=torch.float64) / half)
    expected = torch.cat([(td * w).cos(), (td * w).sin()], dim=1)
    # float32 frequencies: the phase error is ~|t| * 1e-7, so up to ~1e-4 at t = 999.
    torch.testing.assert_close(emb[:, :2 * half].double(), expected, rtol=0, atol=2e-4)
    torch.testing.assert_close(emb[:3, :2 * half].double(), expected[:3], rtol=0, atol=1e-6)
    torch.testing.assert_close(emb[:, 0], t.cos())  # w_0 = 1 exactly
    torch.testing.assert_close(emb[:, half], t.sin())
    if dim % 2:
        assert torch.equal(emb[:, -1], torch.zeros(5))
    custom = timestep_embedding(torch.tensor([3.0]), 4, max_period=100.0)
    torch.testing.assert_close(custom, torch.tensor([[math.cos(3), math.cos(0.3), math.sin(3), math.sin(0.3)]]))


def test_classifier_features_and_head_shapes(classifier):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 32, 32, generator=g)
    t = torch.tensor([0.1, 0.9])
    with torch.no_grad():
        feats = classifier.features(x, t)
        assert feats.shape == (2, 512, 8, 8)
        assert (classifier.feature_channels, classifier.feature_size) == (512, 8)
        torch.testing.assert_close(classifier.features(x[:1], 0.1), feats[:1], rtol=1e-5, atol=1e-5)  # scalar t
        head = EncoderUNet(**DG_HEAD_COND).eval()
        assert head(feats, t, torch.tensor([3, 7])).shape == (2, 1)


def test_only_attention_pool_is_supported():
    with pytest.raises(ValueError, match="pool"):
        EncoderUNet(**{**DG_HEAD, "pool": "adaptive"})


def test_load_state_dict_file_unwraps_and_rejects(tmp_path):
    torch.manual_seed(0)
    net = EncoderUNet(**DG_HEAD)
    sd = net.state_dict()
    variants = {"plain.pt": sd, "wrapped.pt": {"state_dict": sd, "epoch": 3},
                "dataparallel.pt": {f"module.{k}": v for k, v in sd.items()}}
    for fname, obj in variants.items():
        torch.save(obj, tmp_path / fname)
        loaded = load_state_dict_file(tmp_path / fname)
        assert list(loaded) == list(sd), fname
        EncoderUNet(**DG_HEAD).load_state_dict(loaded, strict=True)
    bad = {"list.pt": [torch.zeros(1)], "empty.pt": {}, "pickled_module.pt": torch.nn.Linear(2, 2)}
    for fname, obj in bad.items():
        torch.save(obj, tmp_path / fname)
        with pytest.raises(ValueError) as err:
            load_state_dict_file(tmp_path / fname)
        msg = str(err.value)
        assert str(tmp_path / fname) in msg and "\n" not in msg, msg


# ---------------------------------------------------------------------------------------------------------------
# Opt-in: full-size comparison with a DG checkout (AOT_DG_REPO=/path/to/DG, containing classifier_lib.py).


@pytest.mark.skipif(not os.environ.get("AOT_DG_REPO"), reason="set AOT_DG_REPO to a DG checkout to run")
@pytest.mark.parametrize("resolution", [32, 64])
def test_full_size_against_dg_checkout(monkeypatch, resolution):
    monkeypatch.syspath_prepend(os.environ["AOT_DG_REPO"])
    for mod in [m for m in sys.modules if m == "classifier_lib" or m.startswith("guided_diffusion")]:
        monkeypatch.delitem(sys.modules, mod)
    import classifier_lib  # DG's module

    g = torch.Generator().manual_seed(0)

    def randomized(ref: torch.nn.Module) -> dict:
        """Every tensor redrawn at O(1) scale (GroupNorm scales around 1), in place; returns the state_dict."""
        with torch.no_grad():
            for k, p in ref.state_dict().items():
                z = torch.randn(p.shape, generator=g)
                p.copy_(z / math.sqrt(p[0].numel()) if p.ndim > 1 else 0.3 * z + k.endswith("weight"))
        return ref.state_dict()

    ref_clf = classifier_lib.load_classifier(None, resolution, "cpu", eval=True)
    ref_head = classifier_lib.load_discriminator(None, "cpu", True, eval=True)
    config = {32: ADM_CLASSIFIER_32, 64: ADM_CLASSIFIER_64}[resolution]
    clf, head = EncoderUNet(**config).eval(), EncoderUNet(**DG_HEAD_COND).eval()
    clf.load_state_dict(randomized(ref_clf), strict=True)
    head.load_state_dict(randomized(ref_head), strict=True)
    x = torch.randn(2, 3, resolution, resolution, generator=g)
    t = torch.tensor([0.05, 0.7])
    labels = torch.nn.functional.one_hot(torch.tensor([1, 8]), 10).float()  # DG passes CIFAR one-hots
    with torch.no_grad():
        ref_feats = ref_clf(x, timesteps=t, feature=True)
        feats = clf.features(x, t)
        torch.testing.assert_close(feats, ref_feats, rtol=1e-4, atol=1e-4 * ref_feats.abs().max().item())
        torch.testing.assert_close(clf(x, t), ref_clf(x, timesteps=t), rtol=1e-4, atol=1e-4)
        ref_d = ref_head(ref_feats, t, sigmoid=True, condition=labels)
        torch.testing.assert_close(torch.sigmoid(head(ref_feats, t, labels)), ref_d, rtol=1e-4, atol=1e-5)


def test_hostile_state_dict_files_are_one_typed_line(tmp_path):
    """As every loader: a folder, a truncated or foreign file, pickled objects, a state_dict of another network are
    one ArtifactError line naming the file (no torch advice to load it unsafely); a missing file stays
    FileNotFoundError."""
    import io
    import zipfile
    from fractions import Fraction

    from aot.core.artifacts import ArtifactError
    from aot.models.adm import load_weights

    buf = io.BytesIO()
    torch.save(EncoderUNet(**DG_HEAD).state_dict(), buf)
    good = buf.getvalue()
    pickled = io.BytesIO()
    torch.save({"w": Fraction(1, 3)}, pickled)
    files = {"truncated.pt": good[: len(good) // 2], "random.pt": os.urandom(256), "empty.pt": b"",
             "html.pt": b"<!DOCTYPE html><html></html>", "fraction.pt": pickled.getvalue()}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "folder.pt").mkdir()
    with zipfile.ZipFile(tmp_path / "zip.pt", "w") as z:
        z.writestr("x/data.pkl", "not torch")
    for name in [*files, "folder.pt", "zip.pt"]:
        with pytest.raises(ArtifactError) as err:
            load_state_dict_file(tmp_path / name)
        msg = str(err.value)
        assert msg.startswith(f"{tmp_path / name}: unreadable ") and "\n" not in msg, msg
        assert "weights_only" not in msg and "guidance.extractor_weights" in msg, msg
    with pytest.raises(FileNotFoundError, match="absent.pt"):
        load_state_dict_file(tmp_path / "absent.pt")

    (tmp_path / "head.pt").write_bytes(good)  # a DG head's weights where the classifier's belong
    with pytest.raises(ArtifactError) as err:
        load_weights(EncoderUNet(**{**DG_HEAD, "model_channels": 64}), tmp_path / "head.pt")
    msg = str(err.value)
    assert msg.startswith(f"{tmp_path / 'head.pt'}: unreadable ") and "does not fit EncoderUNet: " in msg, msg
    assert "tensors of another shape" in msg and "\n" not in msg, msg
    net = EncoderUNet(**DG_HEAD)
    load_weights(net, tmp_path / "head.pt")
    assert all(torch.equal(v, torch.load(io.BytesIO(good), weights_only=True)[k]) for k, v in net.state_dict().items())
