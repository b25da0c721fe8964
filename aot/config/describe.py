"""``show-config``: what every job of a resolved config would run (train and discriminator specs) with the
networks' parameter counts; the only config module that imports torch (to build each network once).
"""

from __future__ import annotations

from aot.config.experiment import dataset_shape, guided_names, model_names
from aot.config.resolve import disc_spec, spec_json, train_spec
from aot.core.names import ModelName


def describe_config(cfg: dict) -> dict:
    """What each job of the resolved config would run, without running anything: per trained model the train spec
    and its network's parameter count, per guided model the discriminator spec and the guided-sampling settings.
    Networks are built on torch's ``meta`` device (shapes only), so this takes about a second even for NCSN++."""
    import torch

    from aot.models.discriminator import Discriminator
    from aot.models.networks import count_parameters
    from aot.training.discriminator import DiscSpec, network_ctor
    from aot.training.loop import build_denoiser
    from aot.training.spec import TrainSpec

    shape = dataset_shape(cfg["dataset"])
    out: dict = {"experiment": cfg["experiment"], "dataset": dict(cfg["dataset"], **shape),
                 "models": {}, "guided": {}}
    for model in model_names(cfg):
        arm = cfg["arms"][ModelName.parse(model).arm]
        if "checkpoints" in arm:
            out["models"][model] = {"import": arm["checkpoints"][ModelName.parse(model).cond], "pairing": arm["pairing"]}
            continue
        spec = train_spec(cfg, model)
        with torch.device("meta"):
            net, ctor = build_denoiser(TrainSpec.from_dict(spec), {"num_classes": shape["num_classes"]},
                                       shape["resolution"], shape["channels"])
        out["models"][model] = {"train_spec": spec, "parameters": count_parameters(net),
                                "backbone": ctor.get("model_type", "SongUNet"), "label_dim": ctor["label_dim"],
                                "augment_dim": ctor["network"]["augment_dim"], "gpus": cfg["train"]["gpus"],
                                "nodes": cfg["train"].get("nodes", 1)}
    g = cfg["guidance"]
    for guided in guided_names(cfg):
        run_name, cond = ModelName.parse(guided)
        run = g["runs"][run_name]
        dspec = disc_spec(cfg, guided)
        dctor = network_ctor(DiscSpec.from_dict(dspec), channels=shape["channels"], resolution=shape["resolution"],
                             num_classes=shape["num_classes"])
        with torch.device("meta"):
            disc = Discriminator(dctor["head"], dctor["extractor"], dctor["time"])
        out["guided"][guided] = {
            "base_model": f"{run['arm']}-{cond}", "disc_spec": dspec,
            "head_parameters": count_parameters(disc.head),
            "extractor_parameters": 0 if disc.extractor is None else count_parameters(disc.extractor),
            "time": dctor["time"],
            "sampler": {"rho": run["rho"], "steps": run["steps"], "nfe": 2 * run["steps"] - 1,
                        "weight": g["weight"][cond], "weight_2nd": g["weight_2nd"], "boosting": g["boosting"][cond],
                        "time_min": g["time_min"], "time_max": g["time_max"]},
            "fake_images": g["fakes"]["num_images"],
            "real_images": cfg["dataset"]["subset"] or {"cifar10": 50000}.get(cfg["dataset"]["source"], "all"),
        }
    return out


def format_description(d: dict) -> str:
    """``describe_config`` as the text ``python -m aot show-config`` prints."""
    ds = d["dataset"]
    classes = f"{ds['num_classes']} classes" if ds["num_classes"] else "unlabeled"
    lines = [f"experiment {d['experiment']}: {ds['source']} ({ds['channels']}x{ds['resolution']}x{ds['resolution']}, "
             f"{classes}" + (f", subset {ds['subset']}" if ds.get("subset") else "") + ")"]
    for model, m in d["models"].items():
        if "import" in m:
            lines.append(f"\nmodel {model}: imported from {m['import']} (pairing {m['pairing']})")
            continue
        s = m["train_spec"]
        lines.append(f"\nmodel {model}: {s['arch']}, {m['parameters']:,} parameters (label_dim {m['label_dim']}, "
                     f"augment_dim {m['augment_dim']}), dropout {s['network']['dropout']}, "
                     + (f"fp16 (loss scaling {s.get('loss_scaling', 1):g}), " if s.get("fp16") else "")
                     + f"pairing {s['pairing']}, "
                     f"pool {s['pool']}, batch {s['batch']} on {max(m['gpus'], 1) * m['nodes']} process(es), "
                     + (f"{m['nodes']} nodes x {m['gpus']} GPUs, " if m["nodes"] > 1 else "") +
                     f"{s['kimg'] / 1000:g} Mimg")
        lines.append(f"  python -m aot train --spec '{spec_json(s)}'")
    for guided, g in d["guided"].items():
        s, smp = g["disc_spec"], g["sampler"]
        feats = (f"on frozen {s['extractor']} features ({g['extractor_parameters']:,} parameters, {g['time']} time)"
                 if g["extractor_parameters"] else "on the images")
        lines.append(f"\nguided {guided}: discriminator head of {g['head_parameters']:,} parameters {feats}, trained "
                     f"on {g['real_images']} real + {g['fake_images']} generated "
                     f"images of {g['base_model']}, {s['epochs']} epochs, batch {s['batch']}, lr {s['lr']}, "
                     f"pairing {s['pairing']}; sampling rho {smp['rho']:g}, {smp['steps']} steps ({smp['nfe']} NFE), "
                     f"weight {smp['weight']:g}, boosting {'on' if smp['boosting'] else 'off'}")
        lines.append(f"  python -m aot train-disc --spec '{spec_json(s)}'")
    return "\n".join(lines)
