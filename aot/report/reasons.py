"""Why a table cell is empty: each reason read from the resolved experiment config (or, without one, from the
metrics files), so no row of the paper is silently dropped."""

from __future__ import annotations

import pandas as pd

from aot.models.dg_assets import CLASSIFIERS
from aot.report.paper import PAIRING_OF, TABLE5_RHOS

DISABLED = "guidance disabled (`guidance.enabled: false`)"


def grid_of(cfg: dict) -> set[tuple[float, int]]:
    return {(float(g["rho"]), int(g["steps"])) for g in cfg.get("sample", {}).get("grid", [])}


def why_no_arm(cfg: dict | None, scores: pd.DataFrame, arm: str, cond: str) -> str | None:
    """Why no model of the paper's ``arm`` ('edm'/'aot') at ``cond`` was run, or None if one was."""
    pairing = PAIRING_OF[arm]
    if cfg is not None:
        if cond not in cfg.get("conditioning", []):
            return f"not run: conditioning '{cond}' not in `conditioning`"
        if not any(a.get("pairing") == pairing for a in cfg.get("arms", {}).values()):
            return f"not run: no arm with `pairing: {pairing}` in `arms`"
        return None
    if scores.empty or not (scores.conditioning == cond).any():
        return f"not run: no {cond} metrics given (`conditioning`)"
    if not ((scores.pairing == pairing) & (scores.conditioning == cond)).any():
        return f"not run: no metrics of an arm with `pairing: {pairing}` ({cond}; `arms`)"
    return None


def why_unguided(cfg: dict | None, scores: pd.DataFrame, arm: str, cond: str, rho, steps) -> str:
    """Why we have no unguided score of ``arm`` at (cond, rho, steps)."""
    why = why_no_arm(cfg, scores, arm, cond)
    if why:
        return why
    at = f"rho {rho:g}, {int(steps)} steps"
    if cfg is not None:
        if (float(rho), int(steps)) not in grid_of(cfg):
            return f"not run: {at} not in `sample.grid`"
        return f"not run: {at} is configured, but no metrics file for it was given"
    return f"not run: no metrics at {at} (`sample.grid`)"


def why_table5(cfg: dict | None, scores: pd.DataFrame, arm: str, cond: str, steps: int) -> str:
    why = why_no_arm(cfg, scores, arm, cond)
    if why:
        return why
    rhos = "/".join(f"{r:g}" for r in TABLE5_RHOS)
    if cfg is not None:
        if not any(s == steps and r in TABLE5_RHOS for r, s in grid_of(cfg)):
            return f"not run: no rho of {rhos} at {steps} steps in `sample.grid`"
        return f"not run: rho {rhos} at {steps} steps is configured, but no metrics file for it was given"
    return f"not run: no metrics at {steps} steps with rho {rhos} (`sample.grid`)"


def why_disabled(g: dict) -> str:
    """Why guidance is off, and what turning it on would run (the extractor set in the config)."""
    ext = g.get("extractor", "none")
    if ext not in CLASSIFIERS or CLASSIFIERS[ext].resolution == 32:  # DG's own setting: nothing to add
        return DISABLED
    c = CLASSIFIERS[ext]
    return (f"{DISABLED}: DG published its setting for 32x32 images only; `enabled: true` runs it at "
            f"{c.resolution}x{c.resolution} on {c.publisher} {c.file} features (`extractor: {ext}`)")


def why_guided(cfg: dict | None, scores: pd.DataFrame, arm: str, disc: str, cond: str) -> str:
    """Why Table 3's row (score model ``arm``, discriminator noise ``disc``) has no guided score at ``cond``."""
    pairing = PAIRING_OF[arm]
    if cfg is not None:
        g = cfg.get("guidance", {})
        if not g.get("enabled", True):
            return f"not run: {why_disabled(g)}"
        arms = cfg.get("arms", {})
        if not any(a.get("pairing") == pairing for a in arms.values()):
            return f"not run: no arm with `pairing: {pairing}` in `arms` (the score model)"
        runs = [name for name, r in g.get("runs", {}).items()
                if arms.get(r.get("arm"), {}).get("pairing") == pairing and r.get("pairing") == disc]
        if not runs:
            return (f"not run: `guidance.runs` has no run with a score model of `pairing: {pairing}` and "
                    f"discriminator `pairing: {disc}`")
        if cond not in cfg.get("conditioning", []):
            return f"not run: conditioning '{cond}' not in `conditioning`"
        return f"not run: configured (guidance.runs: {', '.join(runs)}), but no metrics file for it was given"
    guided = scores[scores.guidance != "none"] if not scores.empty else scores
    if guided.empty:
        return ("not run: no guided metrics given (guidance disabled by `guidance.enabled: false`, or no "
                "`guidance.runs`)")
    if not ((guided.pairing == pairing) & (guided.disc_pairing == disc)).any():
        return (f"not run: no guided metrics with a score model of `pairing: {pairing}` and discriminator "
                f"`pairing: {disc}` (`guidance.runs`)")
    return f"not run: no {cond} guided metrics (`conditioning`)"


def why_no_discriminators(cfg: dict | None) -> str:
    if cfg is None:
        return ("No discriminator was trained: the tables stage was given no discriminator training summaries "
                "(guidance disabled by `guidance.enabled: false`, or no `guidance.runs`).")
    g = cfg.get("guidance", {})
    if not g.get("enabled", True):
        return ("No discriminator was trained: Discriminator Guidance is disabled (`guidance.enabled: false`)"
                f"{why_disabled(g).removeprefix(DISABLED)}.")
    if not g.get("runs"):
        return "No discriminator was trained: `guidance.runs` configures no run."
    return ("No discriminator training summary was given to the tables stage (`--disc-stats`), although "
            f"`guidance.runs` configures {', '.join(g['runs'])}.")


def why_no_comparisons(cfg: dict | None, features: dict) -> str:
    if cfg is not None and "featnet" not in cfg.get("evaluate", {}).get("metrics", []):
        return ("No paired comparison: it needs the featnet metric's per-image features, and `evaluate.metrics` "
                "does not include featnet.")
    if not features:
        return "No paired comparison: no features files were given (`--features`; the featnet metric writes them)."
    return ("No paired comparison: no model has a baseline (the EDM arm, its unguided model) scored at the same "
            "setting and seeds.")


def why_no_pairs(cfg: dict | None) -> str:
    arms = (cfg or {}).get("arms", {})
    if arms and all("checkpoints" in a for a in arms.values()):
        return ("No training pair statistics: every arm's network is imported (`arms.<arm>.checkpoints`), none "
                "was trained here.")
    return "No training pair statistics: no training summaries were given (`--stats`)."


def why_no_coupling(cfg: dict | None, stats: list[dict]) -> str:
    pairings = {s["pairing"] for s in stats}
    if not stats:
        return "No coupling comparison: " + why_no_pairs(cfg).removeprefix("No training pair statistics: ")
    if "none" not in pairings:
        return ("No coupling comparison: no arm with `pairing: none` (EDM, each seed's baseline) was trained here "
                "(`arms`).")
    if pairings == {"none"}:
        return "No coupling comparison: every trained arm has `pairing: none`; there is no coupling to compare."
    return ("No coupling comparison: no trained unguided model has an EDM arm (`pairing: none`) of the same "
            "training seed and conditioning scored at the same setting (and, with features, the same sampling "
            "seeds).")


def why_no_trajectories(cfg: dict | None) -> str:
    if cfg is not None and not cfg.get("trajectory", {}).get("settings"):
        return "No trajectory metrics: `trajectory.settings` is empty."
    return "No trajectory metrics: none were given (`--trajectory`)."
