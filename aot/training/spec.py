"""What determines a trained denoiser (``TrainSpec``; its digest names the run folder), EDM's schedules of the
learning rate and the EMA, and the numerics of ``train.precision`` (fp32 = EDM's, tf32, bf16 autocast)."""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import asdict, dataclass, field

import torch

from aot.core.defaults import KNN_K


@dataclass
class TrainSpec:
    """Everything that defines a training run (the rule passes it as JSON). Units: kimg = 1000 images."""

    pairing: str = "aot"  # aot.training.pairing method: none (EDM) | aot | aot-sq | immiscible | knn
    cond: bool = False  # class-conditional model (per-class pairing when pairing != none)
    arch: str = "ddpmpp"  # aot.models.networks preset
    network: dict = field(default_factory=dict)  # overrides of the preset (model_channels, ...)
    kimg: float = 200.0  # training length
    batch: int = 512  # global batch per optimizer step
    batch_gpu: int | None = None  # micro-batch per process; None = batch / processes
    pool: int = 512  # AOT pool size N per process
    micro_batch: int | None = None  # immiscible: block size of the assignment; None = batch_gpu
    block: int | None = None  # aot / aot-sq: assign within consecutive blocks of this many pool images; None = pool
    augment_p: float = 0.0  # EDM's non-leaking augmentation probability (CIFAR-10: 0.12); 0 = off
    fp16: bool = False  # EDM --fp16: the backbone runs in float16 on CUDA (float32 weights, optimizer and EMA)
    loss_scaling: float = 1.0  # EDM --ls: the loss is multiplied by this before backward (not undone: Adam is
    #                            invariant to a constant gradient scale up to its eps, as in EDM)
    knn_k: int = KNN_K  # knn: candidate noises per image
    lr: float = 1e-3
    lr_rampup_kimg: float = 10000.0
    ema_halflife_kimg: float = 500.0
    ema_rampup_ratio: float | None = 0.05
    P_mean: float = -1.2
    P_std: float = 1.2
    sigma_data: float = 0.5
    seed: int = 0
    tick_kimg: float = 50.0
    state_kimg: float = 500.0
    device: str = "cpu"
    precision: str = "fp32"  # fp32 (EDM's numerics) | tf32 (CUDA: TF32 convolutions) | bf16 (autocast)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"train spec precision: {self.precision!r} is not one of {', '.join(PRECISIONS)} "
                             "(config train.precision); fp32 is EDM's numerics")
        if self.precision == "tf32" and not self.device.startswith("cuda"):
            raise ValueError(f"train spec precision: tf32 is a CUDA mode (TensorFloat-32 convolutions) "
                             f"but the device is {self.device!r}; use fp32 or bf16 there, or device cuda")

    @classmethod
    def from_dict(cls, d: dict) -> TrainSpec:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown train spec keys {sorted(unknown)}; valid: {sorted(cls.__dataclass_fields__)}")
        return cls(**d)

    def digest(self) -> str:
        """Names the run directory. Length and logging intervals are left out: the schedules do not depend on
        them, so a finished run can be extended (more kimg) and resumes where it stopped."""
        d = {k: v for k, v in asdict(self).items() if k not in ("kimg", "tick_kimg", "state_kimg")}
        # Keys added later, at their defaults, are left out: runs made before them keep their run directory.
        for key, default in (("block", None), ("precision", "fp32"), ("fp16", False), ("loss_scaling", 1.0)):
            if d[key] == default:
                del d[key]
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


PRECISIONS = ("fp32", "tf32", "bf16")  # TrainSpec.precision (config train.precision)


def learning_rate(spec: TrainSpec, cur_nimg: int) -> float:
    """EDM: linear warm-up over lr_rampup_kimg, then constant."""
    ramp = spec.lr_rampup_kimg * 1000
    return spec.lr * (min(cur_nimg / ramp, 1.0) if ramp > 0 else 1.0)


def ema_beta(spec: TrainSpec, cur_nimg: int, batch: int) -> float:
    """EDM: half-life in images, ramped up as min(halflife, ratio * nimg); beta = 0.5^(batch / halflife)."""
    halflife = spec.ema_halflife_kimg * 1000
    if spec.ema_rampup_ratio is not None:
        halflife = min(halflife, cur_nimg * spec.ema_rampup_ratio)
    return 0.5 ** (batch / max(halflife, 1e-8))


def forward_precision(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The context of the training forward pass. bf16: autocast to bfloat16 (convolutions and matmuls in bf16; group
    norms, the preconditioning and the loss stay float32, and weights, gradients, Adam and the EMA are float32);
    fp32 and tf32: none (tf32 is a cuDNN flag, see :func:`set_cuda_flags`). Autocast is per thread, so the
    pairing's cost matrix (computed in the background thread) stays float32 in every mode."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def set_cuda_flags(precision: str, device: torch.device) -> None:
    """CUDA backend flags as EDM's training loop sets them: cuDNN autotuning on, TF32 off (exact float32, EDM's and
    the paper's numerics). precision tf32 turns TF32 on for cuDNN's convolutions only, the bulk of the UNet's work;
    matmuls stay float32, so the pairing's cost matrix, a GEMM on the same device, is as exact as in fp32."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = False
