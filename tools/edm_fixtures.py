#!/usr/bin/env python
"""Regenerate the DhariwalUNet reference data in tests/fixtures/ from EDM's own class (NVlabs/edm).

    git clone https://github.com/NVlabs/edm /tmp/edm && git -C /tmp/edm checkout 008a4e5
    python tools/edm_fixtures.py --edm /tmp/edm

EDM's ``training/networks.py`` is imported from the given checkout (this runs EDM's code: use a checkout you trust),
on the CPU. Writes:

* ``edm_adm_imagenet_keys.json``: ``{name: shape}`` of EDM's ``DhariwalUNet`` state_dict at the ImageNet-64 settings
  (train.py ``--arch=adm``: img_resolution=64, 3 channels, label_dim=1000, model_channels=192, channel_mult=[1,2,3,4];
  augment_dim=9 so that ``map_augment`` is covered too), with its parameter count.
* ``edm_small_adm.pt``: for tests/edm_reference.py's ADM_SMALL, EDM's eval-mode outputs with and without augment
  labels after redraw_parameters(net, 1) on reference_inputs(), and EDM's init statistics after
  torch.manual_seed(0) construction.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--edm", required=True, type=Path, help="an NVlabs/edm checkout")
    p.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures")
    a = p.parse_args()
    sys.path[:0] = [str(a.edm), str(ROOT / "tests")]
    from edm_reference import ADM_SMALL, init_statistics, redraw_parameters, reference_inputs
    from training.networks import DhariwalUNet

    commit = subprocess.run(["git", "-C", str(a.edm), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    provenance = dict(edm_commit=commit.strip() or "unknown", torch=torch.__version__)

    with torch.device("meta"):
        big = DhariwalUNet(img_resolution=64, in_channels=3, out_channels=3, label_dim=1000, augment_dim=9,
                           model_channels=192, channel_mult=[1, 2, 3, 4])
    keys = {k: list(v.shape) for k, v in big.state_dict().items()}
    params = sum(p.numel() for p in big.parameters())
    lines = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in keys.items()]
    head = json.dumps(dict(provenance, parameters=params))[1:-1]
    (a.out / "edm_adm_imagenet_keys.json").write_text("{" + head + ', "keys": {\n' + ",\n".join(lines) + "\n}}\n")

    torch.manual_seed(0)
    net = DhariwalUNet(**ADM_SMALL)
    stats = init_statistics(net)
    redraw_parameters(net, 1).eval()
    x = reference_inputs()
    with torch.no_grad():
        out = net(x["x"], x["noise_labels"], x["class_labels"], x["augment_labels"])
        out_noaug = net(x["x"], x["noise_labels"], x["class_labels"])
    torch.save(dict(out=out, out_noaug=out_noaug, init_stats=stats, provenance=json.dumps(provenance)),
               a.out / "edm_small_adm.pt")
    print(json.dumps(dict(provenance, imagenet_parameters=params, small_out_std=out.std().item())))


if __name__ == "__main__":
    main()
