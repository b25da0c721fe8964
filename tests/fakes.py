"""Stand-ins for files the project cannot download here: clean-fid's TorchScript Inception and DG's ADM classifier.

Importable by a test (tests/ is on sys.path under pytest) or by a subprocess with the checkout on PYTHONPATH
(``tests.fakes``). Nothing here is used for results: the stand-ins only have the real files' interfaces.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch


class FakeInception(torch.nn.Module):
    """Same interface as inception-2015-12-05.pt as clean-fid uses it: a ``layers`` submodule, and
    ``forward(img, return_features=True)`` on float32 (B, 3, H, W) in [0, 255] at native size -> (B, 2048).

    Features: [mean of R, G, B; H; W; fixed elementwise weights on the 2x2-pooled image] so a test can read
    what came in; only per-image ops, so results do not depend on the batch size.
    """

    def __init__(self):
        super().__init__()
        self.layers = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())  # (B, 12)
        g = torch.Generator().manual_seed(0)
        self.register_buffer("idx", torch.randint(0, 12, (2043,), generator=g))
        self.register_buffer("w", torch.randn(2043, generator=g))

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        assert return_features, "clean-fid's legacy_tensorflow mode asks for the pool features"
        assert img.dtype == torch.float32 and img.dim() == 4 and img.size(1) == 3, "float32 (B, 3, H, W)"
        assert bool((img >= 0).all()) and bool((img <= 255).all()), "range [0, 255]"
        assert bool((img == torch.round(img)).all()), "integer values (uint8 -> float, no resize outside)"
        B, H, W = img.size(0), img.size(2), img.size(3)
        hw = torch.tensor([float(H), float(W)], device=img.device).expand(B, 2)  # on the images' device (CUDA too)
        return torch.cat([img.mean(dim=(2, 3)), hw, self.layers(img / 255)[:, self.idx] * self.w], dim=1)




def write_fake_inception(path: str | Path) -> Path:
    """Save :class:`FakeInception` as TorchScript at ``path`` (the real ``inception-2015-12-05.pt`` is TorchScript)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # torch.jit.script/save are deprecated; the real weights are TorchScript
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(FakeInception().eval()), str(path))
    return path


def write_random_adm_classifier(path: str | Path, seed: int = 0, extractor: str = "adm32") -> Path:
    """The ADM classifier of ``guidance.extractor`` (adm32: DG's 47.8M parameters; adm64: guided-diffusion's 65.4M),
    with its key names and seeded random weights, as a plain state_dict file in place of the released file."""
    from aot.models.adm import ADM_CLASSIFIERS, EncoderUNet

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    torch.save(EncoderUNet(**ADM_CLASSIFIERS[extractor]).state_dict(), path)
    return path
