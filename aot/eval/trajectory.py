"""Trajectory metrics for comparing EDM and EDM-AOT along deterministic Heun solves (docs/method.md §6).

All metrics follow the probability-flow ODE dx/dsigma = v(x; sigma) = (x - D(x; sigma)) / sigma solved from
sigma_max down to 0 on the EDM rho-schedule (``aot.sampling.samplers.karras_sigmas``), with states carried in float64
as ``aot.sampling.samplers.heun_sample`` does:

* straightness S (§6.2): (1 / (sigma_max - sigma_min)) * integral_{sigma_min}^{sigma_max}
  E||v(sigma) - vbar||^2 dsigma with the chord vbar = (x(sigma_max) - x(sigma_min)) / (sigma_max - sigma_min),
  trapezoid rule on the nodes of a fine Heun solve; S = 0 iff every trajectory is a straight line traversed
  at constant speed;
* curvature kappa_i (§6.3): 1 - cos angle(d_i, x_start - x_end), d_i the slope the solver uses at sigma_i;
  kappa = 0 iff the path is a straight segment (its speed may vary: an isotropic Gaussian has kappa = 0
  but S > 0);
* truncation errors (§6.4): local e_i = ||Phi_heun(x_i; sigma_i -> sigma_{i+1}) - Phi_ref||_2 / sqrt(d),
  Phi_ref = ``ref_substeps`` Heun sub-steps equally spaced in sigma on the same interval; global
  E = ||x_0^(steps) - x_0^(ref)||_2 / sqrt(d), ref = a ``ref_steps``-step Heun solve with the same rho and
  the same initial noise.

Cost in denoiser evaluations: ``metrics_nfe`` (3872 for 18 steps with the defaults).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from aot.core.checkpoint import atomic_write_bytes, write_json
from aot.core.defaults import SIGMA_MAX, SIGMA_MIN
from aot.core.samples import save_grid
from aot.data.datasets import to_uint8
from aot.sampling.samplers import (
    Denoiser,
    heun_sample,
    heun_solve,
    heun_step,
    karras_sigmas,
    nfe,
    seeded_latents,
    slope,
)


def metrics_nfe(steps: int, fine_steps: int = 256, ref_substeps: int = 64, ref_steps: int = 512) -> int:
    """Denoiser evaluations of ``trajectory_metrics``: main solve + local refs + fine solve + global ref."""
    return (2 * steps - 1) + (2 * ref_substeps * steps - 1) + (2 * fine_steps - 1) + (2 * ref_steps - 1)


# ----------------------------------------------------------------------------------------------------------
# Pure metric functions.


def rms_error(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample ||a - b||_2 / sqrt(d); a, b : (B, *dims) -> (B,)."""
    diff = (a - b).flatten(1)  # (B, d)
    return diff.norm(dim=1) / math.sqrt(diff.shape[1])


def curvature(d: torch.Tensor, x_start: torch.Tensor, x_end: torch.Tensor) -> torch.Tensor:
    """kappa_i = 1 - cos angle(d_i, x_start - x_end), per step and sample (docs/method.md §6.3).

    d : Tensor, shape (steps, B, *dims), the solver's slopes dx/dsigma; x_start, x_end : (B, *dims).
    Returns (steps, B). Sigma decreases along the solve, so a straight path has d_i parallel to
    x_start - x_end.
    """
    chord = (x_start - x_end).flatten(1)  # (B, d)
    d = d.flatten(2)  # (steps, B, d)
    cos = (d * chord).sum(-1) / (d.norm(dim=-1) * chord.norm(dim=-1)).clamp_min(torch.finfo(d.dtype).tiny)
    return 1 - cos


def trapezoid_weights(sigmas: torch.Tensor) -> torch.Tensor:
    """Weights w, sum_j w_j f(sigma_j) = trapezoid integral of f over [min sigma, max sigma]; (n,) -> (n,)."""
    h = (sigmas[1:] - sigmas[:-1]).abs()  # (n - 1,)
    w = torch.zeros_like(sigmas)
    w[:-1] += 0.5 * h
    w[1:] += 0.5 * h
    return w


def straightness(sq_int: torch.Tensor, v_int: torch.Tensor, vbar: torch.Tensor,
                 length: float) -> torch.Tensor:
    """Per-sample S = (1/L) integral ||v - vbar||^2 dsigma from moments of v (docs/method.md §6.2).

    Expands ||v - vbar||^2 = ||v||^2 - 2 v.vbar + ||vbar||^2 so the integral accumulates along the solve
    without storing v: sq_int (B,) = integral ||v||^2, v_int (B, *dims) = integral v, vbar (B, *dims), L the
    interval length. Returns (B,).
    """
    vbar, v_int = vbar.flatten(1), v_int.flatten(1)  # (B, d)
    return (sq_int - 2 * (v_int * vbar).sum(1) + length * vbar.square().sum(1)) / length


# ----------------------------------------------------------------------------------------------------------
# The metrics.


@dataclass(frozen=True)
class TrajectoryMetrics:
    """Per-sigma arrays are indexed by solver step i = 0..steps-1 (noise level sigma_i, high to low)."""

    sigmas: np.ndarray  # (steps,) the solver's noise levels sigma_0..sigma_{steps-1} (no trailing 0)
    straightness: float  # S (§6.2), trapezoid on a fine_steps Heun solve over [sigma_min, sigma_max]
    straightness_normalized: float  # S / E||vbar||^2, scale free
    curvature: np.ndarray  # (steps,) mean over samples of 1 - cos angle(d_i, x_start - x_end) (§6.3)
    local_error: np.ndarray  # (steps,) mean over samples of ||Phi_heun - Phi_ref||_2 / sqrt(d) (§6.4)
    global_error: float  # mean over samples of ||x_0^(steps) - x_0^(ref)||_2 / sqrt(d) (§6.4)


def _fine_straightness(denoise: Denoiser, z: torch.Tensor, sigmas: torch.Tensor, labels: torch.Tensor | None,
                       denoise_dtype: torch.dtype) -> tuple[float, float]:
    """S and S / E||vbar||^2 along a Heun solve through the nodes ``sigmas`` (decreasing, no trailing 0)."""
    w = trapezoid_weights(sigmas)
    x = x_first = z * sigmas[0]
    sq_int = torch.zeros(z.shape[0], dtype=torch.float64, device=z.device)  # (B,)
    v_int = torch.zeros_like(x)  # (B, C, H, W)
    for j in range(len(sigmas)):
        # v(sigma_j) is the Euler slope at node j; the last node (sigma_min) needs no step.
        if j + 1 < len(sigmas):
            x_next, v = heun_step(denoise, x, sigmas[j], sigmas[j + 1], labels, denoise_dtype=denoise_dtype)[:2]
        else:
            x_next, v = x, slope(denoise, x, sigmas[j], labels, denoise_dtype)[0]
        sq_int += w[j] * v.flatten(1).square().sum(1)
        v_int += w[j] * v
        x = x_next
    length = (sigmas[0] - sigmas[-1]).item()
    vbar = (x_first - x) / length
    s = straightness(sq_int, v_int, vbar, length).mean().item()
    return s, s / vbar.flatten(1).square().sum(1).mean().item()


@torch.no_grad()
def trajectory_metrics(
    denoise: Denoiser,
    z: torch.Tensor,
    *,
    steps: int,
    rho: float,
    sigma_min: float = SIGMA_MIN,
    sigma_max: float = SIGMA_MAX,
    labels: torch.Tensor | None = None,
    fine_steps: int = 256,
    ref_substeps: int = 64,
    ref_steps: int = 512,
    denoise_dtype: torch.dtype = torch.float32,
) -> TrajectoryMetrics:
    """Straightness, per-step curvature and local/global Heun truncation error of one batch (docs/method.md §6).

    z : Tensor, shape (B, C, H, W), unit Gaussian latents (x(sigma_max) = sigma_max z); labels : (B,) or None,
    passed through to every denoiser call. ``denoise_dtype`` is the dtype the denoiser sees (float32 as in
    ``heun_sample``; float64 for analytic denoisers). Means are over the B samples: for >= 1k samples average
    batches of equal size (for the normalized S, average S and E||vbar||^2 = S / S_norm separately).
    Cost: ``metrics_nfe(steps, ...)`` denoiser evaluations; memory: the steps slopes d_i, (steps, B, C, H, W).
    """
    sigmas = karras_sigmas(steps, sigma_min, sigma_max, rho).to(z.device)  # (steps + 1,) ending in 0
    z = z.to(torch.float64)
    # Main solve: keep the slopes d_i for the curvature, and compare each step with a fine reference.
    x = x_start = z * sigmas[0]
    d_all, local = [], []
    for i in range(steps):
        x_next, d, _ = heun_step(denoise, x, sigmas[i], sigmas[i + 1], labels, denoise_dtype=denoise_dtype)
        sub = torch.linspace(sigmas[i].item(), sigmas[i + 1].item(), ref_substeps + 1, dtype=torch.float64,
                             device=z.device)
        sub[0], sub[-1] = sigmas[i], sigmas[i + 1]  # exact endpoints, so the last sub-step lands on 0
        local.append(rms_error(x_next, heun_solve(denoise, x, sub, labels, denoise_dtype)))
        d_all.append(d)
        x = x_next
    kappa = curvature(torch.stack(d_all), x_start, x)  # (steps, B)
    # Global error against a ref_steps solve from the same noise.
    x_ref = heun_solve(denoise, z * sigma_max, karras_sigmas(ref_steps, sigma_min, sigma_max, rho), labels,
                       denoise_dtype)
    # Straightness on the nodes of a fine solve over [sigma_min, sigma_max] (no trailing 0).
    fine = karras_sigmas(fine_steps, sigma_min, sigma_max, rho)[:-1].to(z.device)
    s, s_norm = _fine_straightness(denoise, z, fine, labels, denoise_dtype)
    return TrajectoryMetrics(
        sigmas=sigmas[:-1].cpu().numpy(),
        straightness=s,
        straightness_normalized=s_norm,
        curvature=kappa.mean(1).cpu().numpy(),
        local_error=torch.stack(local).mean(1).cpu().numpy(),
        global_error=rms_error(x, x_ref).mean().item(),
    )


@torch.no_grad()
def denoiser_grid(
    denoise: Denoiser,
    z: torch.Tensor,
    *,
    steps: int,
    rho: float,
    columns: int = 11,
    labels: torch.Tensor | None = None,
    sigma_min: float = SIGMA_MIN,
    sigma_max: float = SIGMA_MAX,
) -> torch.Tensor:
    """Denoiser outputs D(x_i; sigma_i) (one-step Euler predictions of x_0) along ``heun_sample`` (Fig. 2/3).

    z : Tensor, shape (B, C, H, W). Columns are the steps round(linspace(0, steps - 1, columns)), high to low
    sigma. Returns float32 (B, columns, C, H, W) clipped to [-1, 1]; for a PNG use
    ``aot.sampling.generate.save_grid(path, aot.data.datasets.to_uint8(grid.flatten(0, 1)), nrow=columns)``.
    """
    if not 1 <= columns <= steps:
        raise ValueError(f"columns must be in [1, steps={steps}], got {columns}")
    keep = np.linspace(0, steps - 1, columns).round().astype(int).tolist()
    out: dict[int, torch.Tensor] = {}

    def grab(i: int, x: torch.Tensor, denoised: torch.Tensor, sigma: torch.Tensor) -> None:
        if i in keep:
            out[i] = denoised.to(torch.float32).clamp(-1, 1)

    heun_sample(denoise, z, karras_sigmas(steps, sigma_min, sigma_max, rho), labels, callback=grab)
    return torch.stack([out[i] for i in keep], dim=1)  # (B, columns, C, H, W)


# ----------------------------------------------------------------------------------------------------------
# I/O and plots.


def save_metrics_json(path: str | os.PathLike, m: TrajectoryMetrics, **meta) -> None:
    """Write the metrics (arrays as lists) plus free-form provenance ``meta`` (model, steps, rho, seeds)."""
    fields = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in asdict(m).items()}
    write_json(path, {"metrics": fields, "meta": meta})


def load_metrics_json(path: str | os.PathLike) -> tuple[TrajectoryMetrics, dict]:
    """Inverse of ``save_metrics_json``: (metrics, meta)."""
    from aot.core.artifacts import read_json, reading

    obj = read_json(path, kind="trajectory metrics", rule="trajectory", keys=("metrics", "meta"))
    with reading(path, "trajectory metrics", "trajectory"):
        m = TrajectoryMetrics(**{k: (np.asarray(v, dtype=np.float64) if isinstance(v, list) else float(v))
                                 for k, v in obj["metrics"].items()})
    return m, obj["meta"]


def plot_metrics(path_png: str | os.PathLike, runs: dict[str, TrajectoryMetrics]) -> None:
    """Curvature and local truncation error vs sigma_i (log x) for several models on one figure."""
    import io

    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    fig = Figure(figsize=(9, 3.6), layout="constrained")
    ax_k, ax_e = fig.subplots(1, 2)
    for name, m in runs.items():
        ax_k.plot(m.sigmas, m.curvature, marker="o", ms=3,
                  label=f"{name} (S/|vbar|^2={m.straightness_normalized:.3g})")
        ax_e.plot(m.sigmas, m.local_error, marker="o", ms=3, label=f"{name} (global {m.global_error:.3g})")
    ax_k.set(xscale="log", xlabel="sigma_i", ylabel="1 - cos(d_i, x_start - x_end)", title="curvature")
    ax_e.set(xscale="log", yscale="log", xlabel="sigma_i", ylabel="||Phi_heun - Phi_ref|| / sqrt(d)",
             title="local truncation error")
    for ax in (ax_k, ax_e):
        ax.invert_xaxis()  # sampling runs from high to low sigma
        ax.legend(fontsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    atomic_write_bytes(path_png, lambda f: f.write(buf.getvalue()))


def trajectory_stage(ckpt_path: str | Path, out_json: str | Path, out_png: str | Path, *, rho: float, steps: int,
                     seeds: range, grid_rows: int = 4, columns: int = 11, fine_steps: int = 256,
                     ref_substeps: int = 64, ref_steps: int = 512, sigma_min: float = SIGMA_MIN,
                     sigma_max: float = SIGMA_MAX, device: str = "cpu", model: str = "") -> None:
    """Trajectory metrics (docs/method.md §6) of one trained model at one (rho, steps), and its grid of denoiser
    outputs along the first ``grid_rows`` trajectories (the paper's Fig. 2/3)."""
    from aot.models.denoiser import load_denoiser

    net, ckpt = load_denoiser(ckpt_path, device=device)
    arch = ckpt["ctor"]["network"]
    shape = (arch["in_channels"], arch["img_resolution"], arch["img_resolution"])
    z, y = seeded_latents(seeds, shape, num_classes=net.label_dim, device=device)
    m = trajectory_metrics(net, z, steps=steps, rho=rho, sigma_min=sigma_min, sigma_max=sigma_max, labels=y,
                           fine_steps=fine_steps, ref_substeps=ref_substeps, ref_steps=ref_steps)
    save_metrics_json(out_json, m, model=model, rho=rho, steps=steps, nfe=nfe(steps), seed_first=seeds[0],
                      seed_last=seeds[-1], num_images=len(seeds), pairing=ckpt["config"]["pairing"],
                      cond=bool(ckpt["config"]["cond"]), fine_steps=fine_steps, ref_substeps=ref_substeps,
                      ref_steps=ref_steps)
    rows = min(grid_rows, len(seeds))
    g = denoiser_grid(net, z[:rows], steps=steps, rho=rho, columns=columns,
                      labels=y[:rows] if y is not None else None, sigma_min=sigma_min, sigma_max=sigma_max)
    save_grid(out_png, to_uint8(g.flatten(0, 1)), nrow=columns)
