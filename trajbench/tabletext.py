"""Tables as text: Markdown and LaTeX (CSV is pandas' own)."""

from __future__ import annotations

import pandas as pd


def to_markdown(table: pd.DataFrame, digits: int = 4) -> str:
    """A Markdown table; numbers with ``digits`` significant digits (ranks, FID and CLIP score alike)."""
    return table.to_markdown(index=False, floatfmt=f".{digits}g")


def to_latex(table: pd.DataFrame, digits: int = 4, caption: str = "") -> str:
    styler = table.style.hide(axis="index").format(lambda v: f"{v:.{digits}g}", subset=table.select_dtypes(
        "number").columns, na_rep="--")
    return styler.to_latex(caption=caption or None, hrules=True).replace("_", r"\_")
