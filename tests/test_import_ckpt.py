"""aot.models.released: EDM network pickles are read as data, mapped onto EDMPrecond(SongUNet | DhariwalUNet), never executed.

No EDM code or real EDM pickle ships here, so the tests build pickles with the structure EDM's
``torch_utils/persistence.py`` (NVlabs/edm 008a4e5, ``_version = 6``) produces: each persistent object
pickles as ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` with ``meta = dict(type='class',
version=6, module_src=..., class_name=<bare name>, state=<module __dict__ incl. _init_args/_init_kwargs>)``;
``enc``/``dec`` are plain ``torch.nn.ModuleDict`` objects pickled by reference; tensors and parameters pickle
through torch's own reducers. The fake ``torch_utils`` module exists only while pickling.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import pickle
import subprocess
import sys
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from aot.models.denoiser import load_denoiser
from aot.models.dhariwal import ADMBlock
from aot.models.edm_pickle import ALLOWED_GLOBALS, CheckpointFormatError, UnsafePickleError
from aot.models.layers import Conv2d, UNetBlock
from aot.models.networks import BACKBONES, count_parameters, network_ctor
from aot.models.precond import EDMPrecond
from aot.models.presets import ARCH_BACKBONES
from aot.models.released import guess_arch, import_edm_checkpoint, read_edm_pickle

SMALL = dict(img_resolution=8, in_channels=3, out_channels=3, model_channels=8, channel_mult=[1, 2],
             num_blocks=1, attn_resolutions=[4], dropout=0.13)
# The released 64x64 networks in small: FFHQ / AFHQv2 (DDPM++ with four levels, cres 1,2,2,2, augmentation labels,
# unconditional) and ImageNet (ADM, class labels, use_fp16; 64 and 128 channels give 1 and 2 attention heads and
# the parameter-free resampling skips of ADM's up/down blocks).
FFHQ_LIKE = dict(img_resolution=16, channel_mult=[1, 2, 2, 2])
IMAGENET_LIKE = dict(model_channels=64, attn_resolutions=[8, 4], dropout=0.1)
CASES = {  # name: (arch, label_dim, augment_dim, overrides of SMALL)
    "ddpmpp-uncond": ("ddpmpp", 0, 0, {}),
    "ddpmpp-cond-aug": ("ddpmpp", 10, 9, {}),
    "ncsnpp-cond": ("ncsnpp", 10, 0, {}),  # Fourier embedding (freqs buffer), residual encoder, [1,3,3,1] filter
    "ffhq64-like": ("ddpmpp", 0, 9, FFHQ_LIKE),
    "imagenet64-like": ("adm", 10, 0, IMAGENET_LIKE),
}


def _marker_src(marker) -> str:
    """A module source that would leave ``marker`` behind if anything exec'd it."""
    return f"import pathlib\npathlib.Path({str(marker)!r}).write_text('pwned')\nclass EDMPrecond: pass\n"


# ------------------------------------------------------------------------------------------------------------
# EDM-format pickle writer (test-only; mirrors torch_utils.persistence, version 6).


def _reconstruct_persistent_obj(meta):  # never called: the reader must not import torch_utils
    raise AssertionError("the fake EDM reconstructor ran")


_reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
_reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"


class FakeEasyDict(dict):
    pass


FakeEasyDict.__module__, FakeEasyDict.__qualname__ = "dnnlib.util", "EasyDict"


@contextlib.contextmanager
def _edm_modules():
    """Register fake ``torch_utils.persistence`` and ``dnnlib.util`` only for the duration of pickling."""
    persistence = types.ModuleType("torch_utils.persistence")
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    util = types.ModuleType("dnnlib.util")
    util.EasyDict = FakeEasyDict
    fake = {"torch_utils": types.ModuleType("torch_utils"), "torch_utils.persistence": persistence,
            "dnnlib": types.ModuleType("dnnlib"), "dnnlib.util": util}
    assert not set(fake) & set(sys.modules)
    sys.modules.update(fake)
    try:
        yield
    finally:
        for name in fake:
            sys.modules.pop(name, None)


class Persistent:
    """What EDM's persistent_class.__reduce__ emits for one object."""

    def __init__(self, class_name: str, state: dict, module_src: str):
        self.meta = dict(type="class", version=6, module_src=module_src, class_name=class_name, state=state)

    def __reduce__(self):
        return _reconstruct_persistent_obj, (self.meta,)


def _edm_tree(module, src: str, init_kwargs=None):
    """Our module -> the object tree EDM would pickle for the equivalent EDM module."""
    if type(module) is torch.nn.ModuleDict:  # not persistent in EDM: pickled by reference with its __dict__
        md = torch.nn.ModuleDict()
        md.__dict__["_modules"] = OrderedDict((k, _edm_tree(v, src)) for k, v in module._modules.items())
        return md
    state = module.__getstate__()
    state["_modules"] = OrderedDict((k, None if v is None else _edm_tree(v, src))
                                    for k, v in module._modules.items())
    state["_buffers"] = OrderedDict(state["_buffers"])
    if isinstance(module, Conv2d) and "resample_filter" not in state["_buffers"]:
        state.pop("resample_filter", None)
        state["_buffers"]["resample_filter"] = None  # EDM registers a None buffer when not resampling
    kwargs = init_kwargs or {}
    if isinstance(module, UNetBlock):  # EDM keeps numpy floats here
        state.update(skip_scale=np.sqrt(0.5), num_heads=1)
        init_attn = dict(init_mode="xavier_uniform", init_weight=np.sqrt(0.2))
        kwargs = dict(skip_scale=np.sqrt(0.5), init_attn=init_attn)
    if isinstance(module, ADMBlock):  # EDM's UNetBlock as DhariwalUNet builds it
        state.update(skip_scale=1, adaptive_scale=True, emb_channels=module.affine.in_features)
        init = dict(init_mode="kaiming_uniform", init_weight=np.sqrt(1 / 3), init_bias=np.sqrt(1 / 3))
        kwargs = dict(channels_per_head=64, init=init, init_zero=dict(init_mode="kaiming_uniform", init_weight=0))
    state.update(_init_args=(), _init_kwargs=kwargs)
    return Persistent(type(module).__name__, state, src)


def _edm_precond(net: EDMPrecond, network: dict, src: str, record_backbone=True) -> Persistent:
    """EDM's EDMPrecond(img_resolution, img_channels, label_dim, use_fp16, model_type, **model_kwargs)."""
    interface = ("img_resolution", "in_channels", "out_channels", "label_dim")
    model_kwargs = {k: v for k, v in network.items() if k not in interface}
    pre_kwargs = dict(img_resolution=network["img_resolution"], img_channels=network["in_channels"],
                      label_dim=network["label_dim"], use_fp16=net.use_fp16, model_type=type(net.model).__name__,
                      **model_kwargs)
    backbone = _edm_tree(net.model, src, dict(network))
    if not record_backbone:  # self._record_init_args = False
        backbone.meta["state"].update(_init_args=None, _init_kwargs=None)
    state = net.__getstate__()
    state["_modules"] = OrderedDict(model=backbone)
    state.update(img_resolution=network["img_resolution"], img_channels=network["in_channels"],
                 use_fp16=net.use_fp16, sigma_min=0, sigma_max=float("inf"), _init_args=(), _init_kwargs=pre_kwargs)
    return Persistent("EDMPrecond", state, src)


def edm_pickle(ema, src: str, *, protocol: int = 4, easydict: bool = False, **top) -> bytes:
    """EDM training_loop's snapshot: dict(ema, loss_fn, augment_pipe, dataset_kwargs)."""
    dataset_kwargs = dict(class_name="training.dataset.ImageFolderDataset", path="datasets/cifar10-32x32.zip",
                          use_labels=True, xflip=False, cache=True, resolution=32, max_size=50000)
    data = dict(ema=ema,
                loss_fn=Persistent("EDMLoss", dict(P_mean=-1.2, P_std=1.2, sigma_data=0.5,
                                                   _init_args=(), _init_kwargs={}), src),
                augment_pipe=Persistent("AugmentPipe", dict(p=0.12, xflip=1e8, yflip=1, scale=1,
                                                            rotate_frac=1, aniso=1, translate_frac=1), src),
                dataset_kwargs=FakeEasyDict(dataset_kwargs) if easydict else dataset_kwargs, **top)
    with _edm_modules():
        return pickle.dumps(data, protocol=protocol)


def make_net(arch: str, label_dim: int, augment_dim: int, seed: int = 0, **overrides) -> tuple[EDMPrecond, dict]:
    """A small denoiser with O(1) random weights (EDM's init makes outputs ~1e-5, too weak to compare); ADM ones
    with use_fp16, as EDM's ImageNet-64 network."""
    network = network_ctor(arch, label_dim=label_dim, augment_dim=augment_dim, **{**SMALL, **overrides})
    model_type = ARCH_BACKBONES[arch]
    net = EDMPrecond(BACKBONES[model_type](**network), label_dim=label_dim, sigma_data=0.5,
                     use_fp16=model_type == "DhariwalUNet").eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in net.state_dict().values():
            t.copy_(torch.randn(t.shape, generator=g) * 0.3)
    return net, network


@pytest.fixture
def write(tmp_path):
    def write(data: bytes, name: str = "net.pkl"):
        path = tmp_path / name
        path.write_bytes(data)
        return path

    return write


# ------------------------------------------------------------------------------------------------------------
# Round trip.


@pytest.mark.parametrize("case", CASES)
def test_import_round_trip(case, tmp_path, write):
    arch, label_dim, augment_dim, overrides = CASES[case]
    net, network = make_net(arch, label_dim, augment_dim, **overrides)
    marker = tmp_path / "pwned"
    src = write(edm_pickle(_edm_precond(net, network, _marker_src(marker)), _marker_src(marker),
                           easydict=label_dim > 0))

    info = read_edm_pickle(src)
    assert "torch_utils" not in sys.modules and "dnnlib" not in sys.modules
    ref = net.state_dict()
    assert list(info["state_dict"]) == list(ref)  # same names, same order as state_dict()
    for name, t in ref.items():
        assert info["state_dict"][name].dtype == t.dtype and torch.equal(info["state_dict"][name], t), name
    model_type = ARCH_BACKBONES[arch]
    assert info["class_name"] == "EDMPrecond" and info["model_class_name"] == model_type
    assert info["persistence_version"] == 6
    assert info["init_kwargs"]["model_type"] == model_type and info["init_kwargs"]["label_dim"] == label_dim
    assert info["init_kwargs"]["sigma_max"] == math.inf and info["model_init_kwargs"] == network
    if arch == "ncsnpp":
        assert torch.equal(info["state_dict"]["model.map_noise.freqs"], net.model.map_noise.freqs)

    torch.manual_seed(123)
    expected_rand = torch.rand(3)
    torch.manual_seed(123)
    summary = import_edm_checkpoint(src, tmp_path / "net.pt", config={"pairing": "none"})
    assert torch.equal(torch.rand(3), expected_rand)  # importing leaves the caller's RNG alone
    assert summary["arch"] == arch and summary["label_dim"] == label_dim
    assert summary["augment_dim"] == augment_dim and summary["param_count"] == count_parameters(net)
    assert summary["use_fp16"] is (arch == "adm") and summary["img_resolution"] == network["img_resolution"]

    loaded, ckpt = load_denoiser(tmp_path / "net.pt")
    adm = {"model_type": "DhariwalUNet", "use_fp16": True} if arch == "adm" else {}  # SongUNet: the ctor as ever
    assert ckpt["ctor"] == {"network": network, "label_dim": label_dim, "sigma_data": 0.5, **adm}
    assert type(loaded.model) is type(net.model) and loaded.use_fp16 is net.use_fp16
    if arch == "adm":
        heads = sorted({m.num_heads for m in loaded.modules() if isinstance(m, ADMBlock)})
        assert heads == [0, 1, 2]
    assert ckpt["config"]["pairing"] == "none" and ckpt["config"]["cond"] == (label_dim > 0)
    g = torch.Generator().manual_seed(1)
    res = network["img_resolution"]
    x = torch.randn(4, 3, res, res, generator=g)
    sigma = torch.tensor([0.01, 0.5, 3.0, 80.0])
    labels = torch.arange(4) % 10 if label_dim else None
    aug = torch.randn(4, augment_dim, generator=g) if augment_dim else None
    with torch.no_grad():
        assert torch.equal(loaded(x, sigma, labels, aug), net(x, sigma, labels, aug))
        y = None if labels is None else torch.nn.functional.one_hot(labels, label_dim).float()
        assert torch.equal(loaded.model(x, sigma.log() / 4, y, aug), net.model(x, sigma.log() / 4, y, aug))
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 3])
def test_old_pickle_protocols(protocol, tmp_path, write):
    """Protocol <= 3 writes sets via builtins.set and (protocol 2) bytes via _codecs.encode."""
    net, network = make_net("ddpmpp", 0, 0, seed=3)
    src = write(edm_pickle(_edm_precond(net, network, "pass\n"), "pass\n", protocol=protocol))
    info = read_edm_pickle(src)
    assert all(torch.equal(info["state_dict"][k], v) for k, v in net.state_dict().items())


def test_backbone_kwargs_not_recorded(tmp_path, write):
    """With _record_init_args off on the backbone, the precond's kwargs give the SongUNet kwargs."""
    net, network = make_net("ncsnpp", 10, 9, seed=4)
    src = write(edm_pickle(_edm_precond(net, network, "pass\n", record_backbone=False), "pass\n"))
    assert read_edm_pickle(src)["model_init_kwargs"] is None
    import_edm_checkpoint(src, tmp_path / "net.pt")
    loaded, ckpt = load_denoiser(tmp_path / "net.pt")
    assert ckpt["ctor"]["network"] == network
    assert ckpt["config"]["pairing"] == "unknown"


def test_refuses_other_preconditioners_and_mismatched_weights(tmp_path, write):
    net, network = make_net("ddpmpp", 0, 0)
    vp = _edm_precond(net, network, "pass\n")
    vp.meta["class_name"] = "VPPrecond"
    with pytest.raises(ValueError, match="only EDMPrecond"):
        import_edm_checkpoint(write(edm_pickle(vp, "pass\n"), "vp.pkl"), tmp_path / "vp.pt")
    wrong = _edm_precond(net, dict(network, model_channels=16), "pass\n")
    with pytest.raises(CheckpointFormatError, match="do not fit"):
        import_edm_checkpoint(write(edm_pickle(wrong, "pass\n"), "wrong.pkl"), tmp_path / "wrong.pt")
    other = _edm_precond(net, network, "pass\n")
    other.meta["state"]["_modules"]["model"].meta["class_name"] = "UNet2DModel"
    with pytest.raises(ValueError, match="only SongUNet and DhariwalUNet backbones .* found UNet2DModel"):
        import_edm_checkpoint(write(edm_pickle(other, "pass\n"), "other.pkl"), tmp_path / "other.pt")
    with pytest.raises(CheckpointFormatError, match="no network 'nope'"):
        read_edm_pickle(write(edm_pickle(vp, "pass\n"), "vp.pkl"), key="nope")
    assert not (tmp_path / "vp.pt").exists() and not (tmp_path / "wrong.pt").exists()


def test_guess_arch():
    for arch in ("ddpmpp", "ncsnpp"):
        assert guess_arch(network_ctor(arch, img_resolution=32, in_channels=3, out_channels=3)) == arch
    assert guess_arch(network_ctor("adm", img_resolution=64, in_channels=3, out_channels=3), "DhariwalUNet") == "adm"
    assert guess_arch(network_ctor("ddpmpp", img_resolution=32, in_channels=3, out_channels=3,
                                   encoder_type="skip")) == "custom"


# ------------------------------------------------------------------------------------------------------------
# Safety: nothing in the file runs.


def test_allow_list_is_exactly_this():
    assert set(ALLOWED_GLOBALS) == {
        "torch_utils.persistence._reconstruct_persistent_obj",
        "torch.storage._load_from_bytes",
        "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_parameter",
        "torch._utils._rebuild_parameter_with_state",
        "torch.nn.modules.container.ModuleDict",
        "torch.nn.modules.container.ModuleList",
        "torch.nn.modules.container.Sequential",
        "collections.OrderedDict",
        "builtins.set",
        "builtins.frozenset",
        "__builtin__.set",
        "__builtin__.frozenset",
        "_codecs.encode",
        "numpy.dtype",
        "numpy.core.multiarray.scalar",
        "numpy._core.multiarray.scalar",
        "dnnlib.util.EasyDict",
    }


def _global_call(module: str, name: str, arg: str) -> bytes:
    """Protocol-0 pickle of ``module.name(arg)`` (the classic exploit shape)."""
    return f"c{module}\n{name}\n(V{arg}\ntR.".encode()


@pytest.mark.parametrize("module,name,kind", [
    ("os", "system", "shell"),
    ("posix", "system", "shell"),
    ("subprocess", "getoutput", "shell"),
    ("builtins", "eval", "python"),
    ("builtins", "exec", "python"),
    ("__builtin__", "eval", "python"),
    ("builtins", "__import__", "module"),
    ("torch_utils.persistence", "_src_to_module", "python"),  # EDM's own exec() of module_src
    ("torch", "load", "module"),
])
def test_refuses_code_globals(module, name, kind, tmp_path, write):
    marker = tmp_path / "pwned"
    arg = {"shell": f"touch {marker}", "module": "os",
           "python": f"__import__('pathlib').Path({str(marker)!r}).write_text('x')"}[kind]
    path = write(_global_call(module, name, arg), "evil.pkl")
    with pytest.raises(UnsafePickleError, match=rf"refusing to load {module}\.{name} from .*evil\.pkl: "
                                                 "checkpoints are read as data only"):
        read_edm_pickle(path)
    assert not marker.exists()


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _EvilStorage:
    """A 'storage' whose nested torch.save blob is itself an exploit."""

    def __init__(self, payload: bytes):
        self.payload = payload

    def __reduce__(self):
        return torch.storage._load_from_bytes, (self.payload,)


def test_refuses_code_nested_in_persistent_state(tmp_path, write):
    marker = tmp_path / "pwned"
    net, network = make_net("ddpmpp", 0, 0)
    ema = _edm_precond(net, network, "pass\n")
    ema.meta["state"]["_modules"]["model"].meta["state"]["label_dropout"] = _Evil(marker)
    with pytest.raises(UnsafePickleError, match=r"posix\.system|os\.system"):
        read_edm_pickle(write(edm_pickle(ema, "pass\n")))
    assert not marker.exists()


def test_nested_storage_bytes_are_loaded_weights_only(tmp_path, write):
    marker = tmp_path / "pwned"
    evil = _EvilStorage(pickle.dumps(_Evil(marker), protocol=2))
    with pytest.raises(UnsafePickleError, match="nested tensor storage"):
        read_edm_pickle(write(edm_pickle(evil, "pass\n")))
    assert not marker.exists()


def test_module_src_is_never_executed(tmp_path, write):
    marker = tmp_path / "pwned"
    net, network = make_net("ddpmpp", 10, 0)
    src = _marker_src(marker)
    path = write(edm_pickle(_edm_precond(net, network, src), src))
    info = read_edm_pickle(path)
    import_edm_checkpoint(path, tmp_path / "net.pt")
    assert not marker.exists()
    assert info["class_name"] == "EDMPrecond"
    assert "torch_utils" not in sys.modules


def test_corrupt_files_give_clear_errors(tmp_path, write):
    net, network = make_net("ddpmpp", 0, 0)
    good = edm_pickle(_edm_precond(net, network, "pass\n"), "pass\n")
    for name, data in {"truncated": good[: len(good) // 2], "empty": b"", "garbage": os.urandom(64) + b"\x00",
                       "cut-early": good[:40]}.items():
        with pytest.raises(CheckpointFormatError, match="not a readable EDM pickle"):
            read_edm_pickle(write(data, f"{name}.pkl"))
    buf = io.BytesIO()
    torch.save({"ema": net.state_dict()}, buf)
    with pytest.raises(CheckpointFormatError, match="zip archive"):
        read_edm_pickle(write(buf.getvalue(), "zip.pkl"))
    with pytest.raises(CheckpointFormatError, match="no network 'ema'"):
        read_edm_pickle(write(pickle.dumps([1, 2, 3]), "list.pkl"))


# ------------------------------------------------------------------------------------------------------------
# Optional: a pickle written by EDM's own code (needs a local NVlabs/edm checkout; nothing of it ships here).

EDM_WRITER = """
import copy, pickle, sys, torch
sys.path.insert(0, sys.argv[1])
import dnnlib
torch.manual_seed(0)
song = dict(model_type='SongUNet', decoder_type='standard', model_channels=8, attn_resolutions=[4], dropout=0.13)
arch = dict(ddpmpp=dict(song, embedding_type='positional', encoder_type='standard', channel_mult_noise=1,
                        resample_filter=[1, 1]),
            ncsnpp=dict(song, embedding_type='fourier', encoder_type='residual', channel_mult_noise=2,
                        resample_filter=[1, 3, 3, 1]),
            # ImageNet-64's network in small (train.py --arch=adm --fp16=1): 1 and 2 attention heads
            adm=dict(model_type='DhariwalUNet', use_fp16=True, model_channels=64, attn_resolutions=[8, 4],
                     dropout=0.1))[sys.argv[3]]
net = dnnlib.util.construct_class_by_name(class_name='training.networks.EDMPrecond', img_resolution=8,
    img_channels=3, label_dim=10, channel_mult=[1, 2], num_blocks=1, augment_dim=9, **arch)
with torch.no_grad():
    for p in net.parameters():
        p.copy_(torch.randn_like(p) * 0.3)
ema = copy.deepcopy(net).eval().requires_grad_(False).cpu()
loss_fn = dnnlib.util.construct_class_by_name(class_name='training.loss.EDMLoss')
augment_pipe = dnnlib.util.construct_class_by_name(class_name='training.augment.AugmentPipe', p=0.12)
with open(sys.argv[2] + '.pkl', 'wb') as f:
    pickle.dump(dict(ema=ema, loss_fn=loss_fn, augment_pipe=augment_pipe, dataset_kwargs=dict(path='x')), f)
g = torch.Generator().manual_seed(1)
x, aug = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 9, generator=g)
sigma, y = torch.tensor([0.01, 0.5, 3.0, 80.0]), torch.eye(10)[:4]
with torch.no_grad():
    out = ema(x, sigma, y, augment_labels=aug)
torch.save(dict(x=x, sigma=sigma, y=y, aug=aug, out=out), sys.argv[2] + '.pt')
"""


@pytest.mark.skipif(not os.environ.get("AOT_EDM_REPO"), reason="set AOT_EDM_REPO to a NVlabs/edm checkout")
@pytest.mark.parametrize("arch", ["ddpmpp", "ncsnpp", "adm"])
def test_pickle_written_by_edm_code(arch, tmp_path):
    stem = tmp_path / arch
    edm = os.environ["AOT_EDM_REPO"]
    subprocess.run([sys.executable, "-c", EDM_WRITER, edm, str(stem), arch], check=True)
    summary = import_edm_checkpoint(Path(f"{stem}.pkl"), tmp_path / "net.pt")
    assert summary["arch"] == arch and summary["label_dim"] == 10 and summary["augment_dim"] == 9
    assert summary["use_fp16"] is (arch == "adm")  # float32 on this CPU either way, as in EDM
    ref = torch.load(f"{stem}.pt", weights_only=True)
    net, _ = load_denoiser(tmp_path / "net.pt")
    with torch.no_grad():
        out = net(ref["x"], ref["sigma"], ref["y"], ref["aug"])
    torch.testing.assert_close(out, ref["out"], rtol=1e-5, atol=1e-5)  # EDM's attention op rounds differently


# ------------------------------------------------------------------------------------------------------------
# Hostile or odd pickles through `python -m aot import-checkpoint`: one line naming the file, as every loader.


def _bare(class_name: str) -> Persistent:
    return Persistent(class_name, dict(_parameters=OrderedDict(), _buffers=OrderedDict(), _modules=OrderedDict()),
                      "pass\n")


def _hostile_pickle(case: str, marker: Path) -> bytes:
    net, network = make_net("ddpmpp", 0, 0)
    if case == "persistent class without a backbone":
        return edm_pickle(_bare("EDMPrecond"), "pass\n")
    if case == "one persistent object, no snapshot":
        with _edm_modules():
            return pickle.dumps(_bare("EDMPrecond"))
    if case == "nested storage of code":
        return edm_pickle(_EvilStorage(pickle.dumps(_Evil(marker), protocol=2)), "pass\n")
    if case == "nested storage of garbage":
        return edm_pickle(_EvilStorage(b"\x80\x02garbage"), "pass\n")
    ema = _edm_precond(net, network, "pass\n")
    backbone = ema.meta["state"]["_modules"]["model"].meta["state"]
    if case == "string channel count":
        backbone["_init_kwargs"]["model_channels"] = "many"
    elif case == "no channel_mult":
        backbone["_init_kwargs"]["channel_mult"] = None
    elif case == "other channel count":
        backbone["_init_kwargs"]["model_channels"] = 4
    elif case == "kwargs not a mapping":
        backbone["_init_kwargs"] = [1, 2]
    elif case == "modules not a mapping":
        backbone["_modules"] = [1, 2]
    return edm_pickle(ema, "pass\n")


@pytest.mark.parametrize("case", ["persistent class without a backbone", "one persistent object, no snapshot",
                                  "nested storage of code", "nested storage of garbage", "string channel count",
                                  "no channel_mult", "other channel count", "kwargs not a mapping",
                                  "modules not a mapping"])
def test_hostile_pickles_give_one_line_naming_the_file(case, tmp_path, write, capsys):
    from aot.__main__ import main

    marker = tmp_path / "pwned"
    src = write(_hostile_pickle(case, marker), "hostile.pkl")
    out = tmp_path / "net.pt"
    assert main(["import-checkpoint", "--src", str(src), "--out", str(out), "--pairing", "none"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(src) in lines[0], lines
    assert "weights_only" not in lines[0] and "found None" not in lines[0], lines[0]
    assert not out.exists() and not marker.exists()


def test_released_adm_network_imports_and_samples_on_our_grid(tmp_path, write):
    """`python -m aot import-checkpoint`, then `python -m aot sample` at one (rho, steps) setting, as the workflow's
    import_checkpoint and sample rules run them, for a pickle shaped like EDM's ImageNet-64 release (ADM, fp16,
    class labels; the FFHQ/AFHQv2 DDPM++ shape is covered by test_import_round_trip)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for name, (arch, label_dim, augment_dim, overrides) in (("imagenet", CASES["imagenet64-like"]),):
        net, network = make_net(arch, label_dim, augment_dim, **overrides)
        src = write(edm_pickle(_edm_precond(net, network, "pass\n"), "pass\n"), f"{name}.pkl")
        for cmd in (["import-checkpoint", "--src", str(src), "--pairing", "none", "--out", f"{name}.pt"],
                    ["sample", "--ckpt", f"{name}.pt", "--rho", "7", "--steps", "4", "--seeds", "0-3",
                     "--out", f"{name}.npz", "--no-progress"]):
            r = subprocess.run([sys.executable, "-m", "aot", *cmd], cwd=tmp_path, env=env, capture_output=True,
                               text=True)
            assert r.returncode == 0, r.stderr[-2000:]
        res = network["img_resolution"]
        with np.load(tmp_path / f"{name}.npz") as f:
            assert f["images"].shape == (4, 3, res, res) and f["images"].dtype == np.uint8
            assert f["images"].std() > 0  # not a constant image
            labels = f["labels"]
        assert ((0 <= labels) & (labels < 10)).all() if label_dim else (labels == -1).all()
