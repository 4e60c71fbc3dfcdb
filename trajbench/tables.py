"""The comparison table of chosen variants at chosen sampler settings, with intervals and the best value of each
column in bold, as Markdown, LaTeX (:mod:`trajbench.tabletext`) or CSV."""

from __future__ import annotations

import numpy as np
import pandas as pd

from trajbench import results
from trajbench.paper_tables import curve_guidance
from trajbench.tabletext import to_latex, to_markdown

FORMATS = ("md", "latex", "csv")
STATS = ("value", "ci_low", "ci_high")


def compare(table: pd.DataFrame, *, variants=None, families=None, settings=None, metrics=None, datasets=None,
            weights: str = "ema") -> pd.DataFrame:
    """One row per variant (in the order named), one column per (dataset, setting, metric, stat) with stat
    ``value``, ``ci_low`` and ``ci_high`` (means over seeds). Defaults: every variant; FID and CLIP score; the
    ranked protocol's settings at its most common guidance; EMA weights."""
    metrics = results.as_list(metrics) or [m for m in ("fid", "clip_score") if m in set(table["metric"])]
    if settings is None:
        ranked = results.select(table, protocols=results.default_protocol(table), roles="ranked")
        settings = list(dict.fromkeys(results.select(ranked, guidance=curve_guidance(ranked))["setting"]))
    labels = results.setting_labels(table, settings)
    rows = results.select(table, variants=variants, families=families, settings=labels, metrics=metrics,
                          datasets=datasets, weights=weights)
    if rows.empty:
        raise results.ResultsError(f"no {', '.join(metrics)} rows at {', '.join(labels)} with "
                                   f"{weights} weights in these results")
    summary = results.summarise(rows)
    order = (results.variant_names(table, variants) if variants is not None
             else list(dict.fromkeys(summary["variant"])))
    wide = summary.set_index(["variant", "dataset", "setting", "metric"])[list(STATS)].unstack(
        ["dataset", "setting", "metric"])
    wide.columns = wide.columns.reorder_levels([1, 2, 3, 0])
    columns = [(d, s, m, stat) for d in dict.fromkeys(summary["dataset"]) for s in labels
               for m in metrics for stat in STATS if (d, s, m, "value") in wide.columns]
    frame = wide.reindex(index=order, columns=pd.MultiIndex.from_tuples(
        columns, names=["dataset", "setting", "metric", "stat"]))
    frame.index.name = "variant"
    return frame


def _heading(frame: pd.DataFrame, key: tuple) -> str:
    """``25x5@paper fid``, prefixed with the dataset when the table has several."""
    dataset, setting, metric = key
    several = frame.columns.get_level_values("dataset").nunique() > 1
    return f"{dataset} {setting} {metric}" if several else f"{setting} {metric}"


def _cell(value: float, low: float, high: float, digits: int) -> str:
    if not np.isfinite(value):
        return "--"
    text = f"{value:.{digits}g}"
    return f"{text} [{low:.{digits}g}, {high:.{digits}g}]" if np.isfinite(low) and np.isfinite(high) else text


def format_table(frame: pd.DataFrame, fmt: str = "md", digits: int = 4, caption: str = "") -> str:
    """The text of a :func:`compare` table. ``md`` and ``latex``: one column per (setting, metric) reading
    ``value [ci_low, ci_high]``, the best value of each column in bold; ``csv``: the numbers, one column each."""
    if fmt not in FORMATS:
        raise results.ResultsError(f"table format {fmt!r}: use {', '.join(FORMATS)}")
    if fmt == "csv":
        flat = frame.copy()
        flat.columns = [_heading(frame, c[:3]) + ("" if c[3] == "value" else f" {c[3]}") for c in frame.columns]
        return flat.reset_index().to_csv(index=False)
    bold = "**{}**" if fmt == "md" else r"\textbf{{{}}}"
    cells = pd.DataFrame({"variant": frame.index})
    for key in dict.fromkeys(c[:3] for c in frame.columns):
        value, low, high = (frame[(*key, stat)].to_numpy(float) for stat in STATS)
        best = np.nanmax(value) if results.higher_is_better(key[2]) else np.nanmin(value)
        cells[_heading(frame, key)] = [bold.format(_cell(v, lo, hi, digits)) if v == best else _cell(v, lo, hi, digits)
                                       for v, lo, hi in zip(value, low, high)]
    return to_markdown(cells) if fmt == "md" else to_latex(cells, caption=caption)
