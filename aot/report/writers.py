"""Table files: one DataFrame written as CSV, Markdown (with its title and note) and LaTeX, atomically; the
formatting of a missing cell."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from aot.core.checkpoint import atomic_write_text


def to_markdown(df: pd.DataFrame, title: str, note: str) -> str:
    cols = list(df.columns)
    lines = [f"# {title}", "", note, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in df.itertuples(index=False):
        cells = []
        for c, v in zip(cols, r, strict=True):
            if isinstance(v, float) and not is_missing(v) and c in ("rho", "steps", "NFE", "samples", "pool", "N"):
                cells.append(f"{v:g}")
            elif isinstance(v, float):
                cells.append(fmt(v, 2 if "paper" in c else 4))
            else:
                cells.append(MISSING if v is None or v == "" else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_latex(df: pd.DataFrame, caption: str) -> str:
    def esc(v):
        s = fmt(v, 2) if isinstance(v, float) else (MISSING if v is None or v == "" else str(v))
        return s.replace("_", r"\_").replace("%", r"\%").replace("&", r"\&").replace(MISSING, "--")

    cols = list(df.columns)
    out = [r"\begin{table}[t]", r"\centering", rf"\caption{{{esc(caption)}}}",
           r"\begin{tabular}{" + "l" * len(cols) + "}", r"\toprule", " & ".join(esc(c) for c in cols) + r" \\",
           r"\midrule"]
    out += [" & ".join(esc(v) for v in r) + r" \\" for r in df.itertuples(index=False)]
    out += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(out) + "\n"


def write_table(out_dir: Path, name: str, df: pd.DataFrame, title: str, note: str, empty: str | None = None) -> None:
    """CSV, Markdown and LaTeX of a table. ``empty``: the sentence saying why it has no rows; the Markdown then
    gives it instead of an empty table (the CSV keeps its header, the LaTeX caption takes the sentence)."""
    atomic_write_text(out_dir / f"{name}.csv", df.to_csv(index=False))
    if df.empty and empty:
        atomic_write_text(out_dir / f"{name}.md", f"# {title}\n\n{empty}\n")
        atomic_write_text(out_dir / f"{name}.tex", to_latex(df, f"{title}. {empty}"))
        return
    atomic_write_text(out_dir / f"{name}.md", to_markdown(df, title, note))
    atomic_write_text(out_dir / f"{name}.tex", to_latex(df, title))


MISSING = "—"


def is_missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def fmt(x, digits=3) -> str:
    return MISSING if is_missing(x) else f"{x:.{digits}f}"
