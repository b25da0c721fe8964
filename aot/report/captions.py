"""Every table's and figure's title and caption, in one place. The tables stage takes each table's title and note
from here (:func:`title`, :func:`text`), and ``tools/render-captions`` writes ``workflow/report/<name>.rst``, the
captions of ``snakemake --report``, from the same entries (:func:`rst`); tests/test_docs.py fails when a committed
.rst differs. Plain strings and the standard library only: importable without torch or pandas.

The texts are written with Markdown's `code` spans; :func:`rst` turns them into reStructuredText. A caption may use
Snakemake's Jinja variables (``{{ snakemake.wildcards.model }}``): the report fills them, the tables never see them.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import NamedTuple


class Caption(NamedTuple):
    title: str  # the table's heading (Markdown and LaTeX) and the caption's first line; "" for a figure
    text: str  # what the table or figure shows and how to read it: the Markdown's note, the caption's paragraph


# The comparability note of the tables with the paper's FID beside ours; {metric} is ours.
COMPARABILITY = ("Ours: {metric}. The paper's column is its CIFAR-10 Inception FID-50k (min of 3 seed blocks); our "
                 "number is comparable with it only when the metric says Inception FID on CIFAR-10. `ours_std`: the "
                 "score's standard deviation from the finite sample (FD: jackknife over the generated images; "
                 "Inception FID: spread over seed blocks). It ignores the correlation between models sampled at the "
                 "same seeds. '—' = no number: not reported by the paper, or not run here (the `note` column says "
                 "why; prior work's rows are the paper's only).")
ANY_METRIC = "the metric named in each row's `metric` column"  # {metric} where no scores are at hand

ON = "{on}"  # in a title: " on <the run's dataset>", "" without a config (:func:`title`)

CAPTIONS: dict[str, Caption] = {
    # The tables, in the order the tables stage writes them (workflow/rules/common.smk TABLES).
    "scores": Caption(
        "All scores per arm, conditioning and sampler setting",
        "Every score at its sampler setting (rho, steps, NFE), with the samples and seeds used and the paper's "
        "CIFAR-10 FID for the same setting. " + COMPARABILITY),
    "table1": Caption(
        f"Table 1: unconditional{ON}",
        "The paper's Table 1: our number for each row we ran, beside the paper's; the rows not run are kept. "
        + COMPARABILITY),
    "table2": Caption(
        f"Table 2: class-conditional{ON}",
        "The paper's Table 2: our number for each row we ran, beside the paper's; the rows not run are kept. "
        + COMPARABILITY),
    "table3": Caption(
        f"Table 3: with Discriminator Guidance{ON}",
        "The paper's Table 3: per row, our guided score beside the unguided score of the same model at the same "
        "setting and seeds (so the guidance gain reads across), uncond and cond, with the paper's CIFAR-10 FIDs. A "
        "row is matched by the score model's pairing and the discriminator's noise pairing, at the paper's NFE if "
        "we ran it, else at the setting we ran (`setting`); the runs come from the config's `guidance.runs`. "
        + COMPARABILITY),
    "table4": Caption(
        f"Table 4: unconditional rho sweep{ON}",
        "The paper's Table 4 (rho sweep at 18, 14 and 8 steps): one row per cell, ours beside the paper's. "
        + COMPARABILITY),
    "table5": Caption(
        f"Table 5: NFE sweep{ON}",
        "The paper's Table 5: at each NFE the best of rho 9, 27, 81 and 243 (the paper's protocol), ours taken the "
        "same way; one row per cell, ours beside the paper's. " + COMPARABILITY),
    "discriminators": Caption(
        "Discriminator Guidance: discriminator training",
        "How each discriminator trained: binary cross-entropy and accuracy of real vs generated images at the last "
        "epoch (training data, VP-diffused at importance-sampled times). With AOT the perturbation noise of each "
        "batch is assigned to its images; the reduction is of the mean image-noise distance vs the independent "
        "draw."),
    "comparisons": Caption(
        "Paired comparisons at the same seeds",
        "FD of each model minus its baseline's (EDM's arm at the same setting; a guided model's unguided model; a "
        "discriminator trained with AOT noise vs without), both sampled at the same seeds, with the paired jackknife "
        "standard deviation of the difference (evaluate.fd_jackknife groups of seeds, each deleted from both sets "
        "at once) and z = difference / std. Negative: the model is better. Pairing removes what the two sets share "
        "through their latents, which the per-score `ours_std` cannot. Both stds err on the large side (jackknife) "
        "and cover the seed set only, not the training run."),
    "coupling": Caption(
        "Coupling strength: pair-distance reduction vs score difference to EDM of the same training seed",
        "One row per conditioning, sampler setting and noise coupling (`N`: images one assignment pairs, for AOT "
        "and squared-L2 AOT; knn: k candidates; none: independent, EDM, the reference row). `reduction_pct`: how "
        "much the coupling lowered the mean image-noise distance during training (mean over training seeds, "
        "`reduction_pct_std` across them). `fd_diff`: the model's score minus that of the `pairing: none` model of "
        "the same conditioning, setting and training seed (never another seed's EDM), sampled at the same seeds and "
        "averaged over the `runs` seeds; `fd_diff_std_across_seeds` is their spread (training noise included, ddof "
        "1), `fd_diff_std_within_run` the mean paired jackknife std of one seed set (sampling noise only). "
        "`paired`: the difference is paired on the featnet features at the same sampling seeds; False: the "
        "difference of the two scores (no features, e.g. the Inception metric), with no within-run std. Negative: "
        "the coupling is better than EDM. `straightness_normalized`: mean over seeds at the same setting where "
        "trajectories were computed. `fd_diff_seed<s>` and `per_seed`: every run and its baseline."),
    "pairing": Caption(
        "Image-noise pair distance during training",
        "Mean ||y - n|| over all pools a model trained on: the pairs it used vs the independent (EDM) pairing of the "
        "same draws. AOT lowers it; the paper reports about 2% on CIFAR-10."),
    "trajectory": Caption(  # also the caption of the figures trajectory-<setting>.png
        "Trajectory straightness, curvature and truncation error",
        "Per model, of the deterministic Heun sampler on the same seeds and sigma grid. Straightness S = mean over "
        "sigma of E||v - vbar||^2 (0 = straight); normalized by E||vbar||^2. Curvature = mean over steps of "
        "1 - cos(d_i, x_start - x_end). Errors are RMS per dimension against a fine Heun reference "
        "(docs/method.md §6). Lower is straighter."),
    # The figures.
    "score_vs_nfe": Caption("", "Our score against NFE per arm (best rho at each NFE)."),
    "score_vs_rho": Caption("", "Our score against the schedule exponent rho, per arm and number of steps."),
    "loss": Caption("", "Training loss and the mean paired image-noise distance per tick, per model."),
    "coupling_figures": Caption(  # coupling.png and coupling-straightness.png
        "",
        "Coupling strength: x = measured reduction of the image-noise distance (%), y = paired FD difference to the "
        "EDM model of the same training seed (mean and spread across seeds; negative = better), per conditioning "
        "and NFE; and the normalized trajectory straightness on the same x."),
    "samples": Caption(
        "",
        "The first samples of {{ snakemake.wildcards.model }} at {{ snakemake.wildcards.setting }} (deterministic "
        "Heun, seeds from 0)."),
    "tangents": Caption(
        "",
        "Denoiser outputs D(x; sigma) along Heun trajectories from high to low sigma (the paper's Fig. 2/3), "
        "{{ snakemake.wildcards.model }} at {{ snakemake.wildcards.tsetting }}."),
    # The report's front page (the Snakefile's `report:`).
    "workflow": Caption(
        "",
        "aot-repro: EDM with and without AOT noise pairing (arXiv 2403.05069), experiment "
        "`{{ snakemake.config[\"experiment\"] }}`. Tables put our scores beside the paper's CIFAR-10 FIDs; our "
        "metric is named in every row."),
}

SOURCE_NAMES = {"digits": "digits", "cifar10": "CIFAR-10", "synthetic": "synthetic data"}


def dataset_name(config: dict | None) -> str | None:
    """The run's dataset as a title names it: digits, CIFAR-10, synthetic data, or an ``images`` source's file or
    folder name (``datasets/ffhq-64x64.zip``: ffhq-64x64), with its subset size; None without ``config["dataset"]``."""
    d = (config or {}).get("dataset")
    if not d:
        return None
    if d.get("source") == "images" and d.get("path"):
        name = Path(d["path"]).name.removesuffix(".zip")
    else:
        name = SOURCE_NAMES.get(d.get("source"), d.get("source"))
    return f"{name} ({d['subset']} training images)" if d.get("subset") else name


def title(name: str, config: dict | None = None) -> str:
    """The table's title, naming the run's dataset (from the resolved config) where the entry says ``{on}``."""
    data = dataset_name(config)
    return CAPTIONS[name].title.replace(ON, f" on {data}" if data else "")


def text(name: str, metric: str | None = None) -> str:
    """The caption's paragraph; ``metric``: our metric, named where the text says ``{metric}``."""
    return CAPTIONS[name].text.replace("{metric}", f"`{metric}`" if metric else ANY_METRIC)


GENERATED = ".. Written by tools/render-captions from aot/report/captions.py: edit the text there, then rerun it."


def rst(name: str) -> str:
    """The report caption ``workflow/report/<name>.rst``: a comment naming its source, the title in bold (tables)
    and the paragraph, as reStructuredText wrapped at 116 columns (never inside a code span or a Jinja variable)."""
    heading = title(name)
    parts = [GENERATED] + ([_fill(f"**{_markup(heading)}**")] if heading else []) + [_fill(_markup(text(name)))]
    return "\n\n".join(parts) + "\n"


def _markup(s: str) -> str:
    """Markdown's `code` as reStructuredText's ``code``; * and | outside it literal, not emphasis or substitution."""
    pieces = re.split(r"(`[^`]+`)", s)
    return "".join("``" + p[1:-1] + "``" if p.startswith("`") else re.sub(r"([*|])", r"\\\1", p) for p in pieces)


def _fill(s: str) -> str:
    keep = re.sub(r"``[^`]+``|\{\{[^}]*\}\}", lambda m: m[0].replace(" ", "\0"), s)  # unbreakable spans
    return textwrap.fill(keep, 116, break_long_words=False, break_on_hyphens=False).replace("\0", " ")
