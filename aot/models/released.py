"""Import EDM's published networks and the EDM-AOT authors' models (``.pkl``) as data (docs/method.md §3.7).

The pickle is read as data by :mod:`aot.models.edm_pickle` (nothing from the file runs). The ``ema`` network's
state is then walked like ``torch.nn.Module.state_dict`` (``_parameters``, persistent ``_buffers``, ``_modules``)
and loaded into our ``EDMPrecond(SongUNet)`` (DDPM++/NCSN++: CIFAR-10, FFHQ and
AFHQv2-64) or ``EDMPrecond(DhariwalUNet)`` (ADM: ImageNet-64, with its ``use_fp16``) with ``strict=True``.
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Any

import torch

from aot.core.checkpoint import save_checkpoint
from aot.core.download import sha256_file
from aot.models.edm_pickle import (
    CheckpointFormatError,
    PersistentMeta,
    TorchModuleState,
    load_edm_pickle,
    naming_error,
    one_line,
)
from aot.models.networks import ARCH_PRESETS, BACKBONES, count_parameters
from aot.models.precond import EDMPrecond
from aot.models.presets import ARCH_BACKBONES

# ------------------------------------------------------------------------------------------------------------
# Inert stand-ins for the objects an EDM pickle holds.


# ------------------------------------------------------------------------------------------------------------
# From the inert tree to a state_dict and constructor arguments.


def _module_state(obj: Any, where: str) -> dict:
    state = obj.state if isinstance(obj, PersistentMeta | TorchModuleState) else None
    if not isinstance(state, dict) or not all(isinstance(state.get(k), dict)
                                              for k in ("_parameters", "_buffers", "_modules")):
        raise CheckpointFormatError(f"{where} is not a pickled torch.nn.Module")
    return state


def module_state_dict(obj: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """What ``state_dict()`` of the pickled module would return: parameters, persistent buffers, children."""
    out: dict[str, torch.Tensor] = {}
    state = _module_state(obj, prefix.rstrip(".") or "the network")
    skip = state.get("_non_persistent_buffers_set") or set()
    named = [*state["_parameters"].items(), *((k, v) for k, v in state["_buffers"].items() if k not in skip)]
    for name, tensor in named:
        if tensor is None:  # e.g. EDM's Conv2d registers resample_filter=None when not resampling
            continue
        if not isinstance(tensor, torch.Tensor):
            raise CheckpointFormatError(f"{prefix}{name} is a {type(tensor).__name__}, not a tensor")
        out[prefix + name] = tensor.detach()
    for name, child in state["_modules"].items():
        if child is not None:
            out.update(module_state_dict(child, f"{prefix}{name}."))
    return out


def _plain(v: Any) -> Any:
    """Recorded kwargs -> JSON-safe data (numbers, strings, lists, dicts; non-finite floats as strings)."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple | set | frozenset):
        return [_plain(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if v is None or isinstance(v, bool | int | float | str):
        return v
    return repr(v)


# EDM training/networks.py EDMPrecond.__init__ positional order (for kwargs recorded as positional args).
_EDM_PRECOND_ARGS = ("img_resolution", "img_channels", "label_dim", "use_fp16", "sigma_min", "sigma_max",
                     "sigma_data", "model_type")


def _backbone_args(model_type: str) -> tuple[str, ...]:
    """Constructor argument names of our backbone ``model_type``, in EDM's positional order."""
    return tuple(p for p in inspect.signature(BACKBONES[model_type].__init__).parameters if p != "self")


def _recorded_kwargs(meta: PersistentMeta, arg_names: tuple[str, ...]) -> dict | None:
    """Constructor kwargs EDM's persistence recorded (``_init_args``, ``_init_kwargs``); None if not kept."""
    args, kwargs = meta.state.get("_init_args"), meta.state.get("_init_kwargs")
    if kwargs is None and not args:
        return None
    if len(args or ()) > len(arg_names):
        raise CheckpointFormatError(f"{meta.class_name}: {len(args)} positional constructor args recorded")
    return {**dict(zip(arg_names[: len(args or ())], args or (), strict=True)), **(kwargs or {})}


def read_edm_pickle(path: str | Path, *, key: str = "ema") -> dict:
    """Read network ``key`` of an EDM training pickle as data.

    Returns a dict with ``state_dict`` ({name: Tensor}, EDMPrecond keys ``model.*``), ``init_kwargs`` (the
    precond's constructor kwargs as recorded, with its attributes img_resolution, img_channels, label_dim,
    use_fp16, sigma_min, sigma_max, sigma_data and model_type filled in where not recorded), ``class_name``,
    ``model_class_name``, ``model_init_kwargs`` (the backbone's recorded kwargs, or None) and
    ``persistence_version``.
    """
    path = Path(path)
    top = load_edm_pickle(path)
    try:
        return _read_network(top, path, key)
    except CheckpointFormatError as e:
        raise naming_error(path, e) from None
    except (TypeError, ValueError, AttributeError, KeyError) as e:  # a well-formed pickle of odd values
        raise CheckpointFormatError(f"{path}: not the structure of an EDM network pickle "
                                    f"({type(e).__name__}: {one_line(e, 120)})") from None


def _read_network(top: Any, path: Path, key: str) -> dict:
    """:func:`read_edm_pickle`'s walk over the unpickled tree ``top``."""
    if not isinstance(top, dict) or isinstance(top, PersistentMeta) or key not in top:
        if isinstance(top, PersistentMeta):
            keys = f"one persistent {top.class_name}, not EDM's snapshot dict"
        else:
            keys = sorted(map(str, top)) if isinstance(top, dict) else type(top).__name__
        raise CheckpointFormatError(f"{path}: no network {key!r} (found {keys})")
    net = top[key]
    if not isinstance(net, PersistentMeta):
        raise CheckpointFormatError(f"{path}: {key!r} is not an EDM persistent network")
    state_dict = module_state_dict(net)
    model = _module_state(net, f"{path}:{key}")["_modules"].get("model")
    model_class = model.class_name if isinstance(model, PersistentMeta) else None
    init_kwargs = _recorded_kwargs(net, _EDM_PRECOND_ARGS) or {}
    attrs = {k: net.state[k] for k in _EDM_PRECOND_ARGS if k in net.state}
    init_kwargs = {**attrs, **({"model_type": model_class} if model_class else {}), **init_kwargs}
    model_kwargs = _recorded_kwargs(model, _backbone_args(model_class)) if model_class in BACKBONES else None
    return dict(state_dict=state_dict, init_kwargs=init_kwargs, class_name=net.class_name,
                model_class_name=model_class, model_init_kwargs=model_kwargs,
                persistence_version=net.get("version"))


def backbone_kwargs(info: dict) -> tuple[str, dict]:
    """Map what :func:`read_edm_pickle` found onto our backbone: (model_type, its full, JSON-safe kwargs)."""
    if info["class_name"] != "EDMPrecond":
        raise ValueError(f"only EDMPrecond networks can be imported (found {info['class_name']}): "
                         "VP/VE/iDDPM preconditioning differs from aot.models.precond.EDMPrecond")
    model_type = info["model_class_name"]
    if model_type not in BACKBONES:
        found = model_type or "no persistent backbone 'model'"
        raise ValueError(f"only {' and '.join(BACKBONES)} backbones (DDPM++/NCSN++, ADM) are implemented, found "
                         f"{found}")
    arg_names = _backbone_args(model_type)
    pre = info["init_kwargs"]
    if info["model_init_kwargs"] is not None:
        kw = dict(info["model_init_kwargs"])
    else:  # EDMPrecond passes its interface args and **model_kwargs straight to the backbone
        kw = {k: v for k, v in pre.items() if k not in _EDM_PRECOND_ARGS}
        kw.update(in_channels=pre.get("img_channels"), out_channels=pre.get("img_channels"),
                  img_resolution=pre.get("img_resolution"), label_dim=pre.get("label_dim", 0))
    unknown = sorted(set(kw) - set(arg_names))
    if unknown:
        raise ValueError(f"{model_type} kwargs {unknown} in the pickle are unknown to aot.models.networks.{model_type}")
    missing = [k for k in ("img_resolution", "in_channels", "out_channels") if kw.get(k) is None]
    if missing:
        raise ValueError(f"the pickle records no {missing} for the backbone")
    # Unrecorded kwargs take our defaults, which are EDM's (tests/test_networks.py).
    defaults = {k: p.default for k, p in inspect.signature(BACKBONES[model_type].__init__).parameters.items()
                if k in arg_names and p.default is not inspect.Parameter.empty}
    return model_type, _plain({**defaults, **kw})


def guess_arch(network: dict, model_type: str = "SongUNet") -> str:
    """The preset a network is: 'adm' for a DhariwalUNet, 'ddpmpp' or 'ncsnpp' for a SongUNet whose flavour kwargs
    (embedding, encoder, decoder, filter) match one, else 'custom'."""
    if model_type != "SongUNet":
        return next(a for a, m in ARCH_BACKBONES.items() if m == model_type)
    flavour = ("embedding_type", "channel_mult_noise", "encoder_type", "decoder_type", "resample_filter")
    for name, preset in ARCH_PRESETS.items():
        if ARCH_BACKBONES[name] == "SongUNet" and all(network.get(k) == preset[k] for k in flavour):
            return name
    return "custom"


def import_edm_checkpoint(src: str | Path, out: str | Path, *, key: str = "ema",
                          config: dict | None = None) -> dict:
    """Convert network ``key`` of EDM pickle ``src`` into our denoiser checkpoint ``out``; return a summary.

    ``config`` entries (e.g. ``{"pairing": "ot"}`` for EDM-AOT models) override the recorded provenance
    config, which downstream code reads as the model's training config.
    """
    src = Path(src)
    info = read_edm_pickle(src, key=key)
    try:
        model_type, network = backbone_kwargs(info)
        pre = info["init_kwargs"]
        label_dim = int(pre.get("label_dim", network["label_dim"]))
        if label_dim != network["label_dim"]:
            raise ValueError(f"precond label_dim {label_dim} != backbone label_dim {network['label_dim']}")
        use_fp16 = bool(pre.get("use_fp16", False))
        ctor = {"network": network, "label_dim": label_dim, "sigma_data": float(pre.get("sigma_data", 0.5))}
        if model_type != "SongUNet":  # as the training loop writes it: absent = SongUNet
            ctor["model_type"] = model_type
        if use_fp16:  # EDM's ImageNet-64 network runs in float16 on CUDA when it samples, here too
            ctor["use_fp16"] = True
    except (ValueError, TypeError) as e:  # hostile or odd recorded values (a string channel count, ...)
        raise naming_error(src, e) from None

    try:
        with torch.random.fork_rng(devices=[]):  # the throwaway init must not advance the caller's RNG
            net = EDMPrecond(BACKBONES[model_type](**network), label_dim=ctor["label_dim"],
                             sigma_data=ctor["sigma_data"], use_fp16=use_fp16)
    except Exception as e:  # any recorded value the backbone cannot take (None, a string, a negative size, ...)
        raise CheckpointFormatError(f"{src}: the recorded backbone arguments do not build a {model_type} "
                                    f"({type(e).__name__}: {one_line(e, 120)})") from None
    want, got = net.state_dict(), info["state_dict"]
    missing, unexpected = [k for k in want if k not in got], [k for k in got if k not in want]
    reshaped = [k for k in want if k in got and got[k].shape != want[k].shape]
    if missing or unexpected or reshaped:
        problems = [f"{len(missing)} of its {len(want)} tensors missing (e.g. {missing[0]!r})"] if missing else []
        problems += [f"{len(unexpected)} unexpected (e.g. {unexpected[0]!r})"] if unexpected else []
        if reshaped:
            k = reshaped[0]
            problems.append(f"{len(reshaped)} of another shape (e.g. {k!r}: {list(got[k].shape)}, expected "
                            f"{list(want[k].shape)})")
        what = guess_arch(network) if model_type == "SongUNet" else model_type
        raise CheckpointFormatError(f"{src}: weights do not fit the {model_type} its recorded arguments build "
                                    f"({what}, {network['model_channels']} channels): {', '.join(problems)}")
    net.load_state_dict(got, strict=True)

    summary = dict(src=str(src), out=str(out), sha256=sha256_file(src), key=key, class_name=info["class_name"],
                   model_class_name=info["model_class_name"], arch=guess_arch(network, model_type),
                   label_dim=label_dim, augment_dim=network["augment_dim"], img_resolution=network["img_resolution"],
                   img_channels=network["in_channels"], param_count=count_parameters(net),
                   tensors=len(info["state_dict"]), sigma_data=ctor["sigma_data"],
                   use_fp16=use_fp16, persistence_version=info["persistence_version"])
    saved_config = dict(source="edm-pickle", src=summary["src"], sha256=summary["sha256"], key=key,
                        arch=summary["arch"], cond=label_dim > 0, pairing="unknown", init_kwargs=_plain(pre))
    saved_config.update(config or {})
    extra = dict(imported_from=summary["src"], sigma_min=_plain(pre.get("sigma_min", 0.0)),
                 sigma_max=_plain(pre.get("sigma_max", math.inf)), use_fp16=summary["use_fp16"],
                 param_count=summary["param_count"], persistence_version=summary["persistence_version"])
    save_checkpoint(out, kind="denoiser", state_dict=net.state_dict(), ctor=ctor, config=saved_config,
                    extra=extra)
    return summary
