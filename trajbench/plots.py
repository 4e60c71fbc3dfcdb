"""Figures from the tidy results table (:mod:`trajbench.results`): a metric against sampling steps, rank against
steps, and sample grids side by side. Each returns a matplotlib Figure made without pyplot (it shows in a notebook
and leaves no global state); :func:`save` writes one."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from trajbench import results
from trajbench.paper_tables import curve_guidance

MAX_NAMED = 20
"""Up to this many variants every line is coloured and named; beyond it only the ``named`` ones are (by default
the paper's Table 1 rows), and the rest are thin grey lines."""

GREY = "0.78"


def table1_variants() -> list[str]:
    """The 16 rows of the paper's Table 1, in its order."""
    from trajbench.reference import paper_table1

    return list(paper_table1()["variant"])


def line_styles(variants, named=None) -> dict:
    """Keyword arguments for each variant's line: coloured (tab10, solid then dashed) and labelled for every variant
    when there are at most :data:`MAX_NAMED`, else for the ``named`` ones (default: the paper's Table 1 rows);
    the rest thin, grey and unlabelled. Every line's ``gid`` is its variant."""
    import matplotlib

    variants = list(variants)
    if named is None and len(variants) <= MAX_NAMED:
        named = variants
    named = set(table1_variants() if named is None else named)
    coloured = [v for v in variants if v in named][:MAX_NAMED] or variants[:MAX_NAMED]
    styles = {v: dict(color=GREY, lw=0.7, zorder=1, label="_nolegend_", gid=v) for v in variants}
    cmap = matplotlib.colormaps["tab10"]
    for i, variant in enumerate(coloured):
        styles[variant] = dict(color=cmap(i % 10), ls=("-", "--")[i // 10 % 2], lw=1.6, marker="o", ms=3, zorder=2,
                               label=variant, gid=variant)
    return styles


def _legend(fig: Figure, styles: dict) -> None:
    """One legend under the panels: the named variants, and a grey entry counting the others."""
    named = [s for s in styles.values() if s["label"] != "_nolegend_"]
    handles = [Line2D([], [], **{k: v for k, v in s.items() if k != "gid"}) for s in named]
    others = len(styles) - len(named)
    if others:
        handles.append(Line2D([], [], color=GREY, lw=0.7, label=f"{others} other variant{'s' * (others > 1)}"))
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 4), fontsize=8, frameon=False)


def step_ticks(ax, steps) -> None:
    """A log x axis labelled with the step counts only (no minor-tick labels)."""
    from matplotlib.ticker import NullFormatter

    steps = sorted({int(s) for s in steps})
    ax.set_xscale("log")
    ax.set_xticks(steps, [str(s) for s in steps])
    ax.xaxis.set_minor_formatter(NullFormatter())


def metric_label(metric: str) -> str:
    return f"{metric} ({'higher' if results.higher_is_better(metric) else 'lower'} is better)"


def _new_figure(rows: int, cols: int, width: float, height: float, legend_rows: int = 0):
    fig = Figure(figsize=(width * cols, height * rows + 0.25 * legend_rows), layout="constrained")
    return fig, fig.subplots(rows, cols, squeeze=False)


def curves(table: pd.DataFrame, *, variants=None, families=None, metrics=("fid",), datasets=None,
           guidance: float | None = None, weights: str = "ema", protocol: str | None = None, x: str = "steps",
           named=None, bands: bool = True) -> Figure:
    """A metric against sampling steps (or network evaluations, ``x="nfe"``) on a log axis: one line per variant
    with its bootstrap interval as a band (the named variants'), one panel per dataset (rows) and metric (columns).
    Values and bounds are means over seeds. Defaults: every variant, the ranked protocol (and its 1-step baseline),
    its most common guidance, EMA weights, the protocol's own solver. See :func:`line_styles` for ``named``."""
    from trajbench.samplers import PROTOCOLS

    if x not in ("steps", "nfe"):
        raise results.ResultsError(f"x axis {x!r}: use steps or nfe")
    metrics = results.as_list(metrics)
    protocol = protocol or results.default_protocol(table)
    rows = results.select(table, variants=variants, families=families, datasets=datasets, weights=weights,
                          protocols=protocol, metrics=metrics)
    if rows.empty:
        raise results.ResultsError(f"no {', '.join(metrics)} rows with {weights} weights under the {protocol} "
                                   f"protocol in these results")
    guidance = curve_guidance(rows, guidance)
    rows = results.select(rows, guidance=guidance)
    if rows["sampler"].nunique() > 1:  # e.g. Heun settings beside Euler ones: draw the protocol's own solver
        rows = rows[rows["sampler"] == PROTOCOLS[protocol][1]]
    summary = results.summarise(rows)
    order = (results.variant_names(table, variants) if variants is not None
             else list(dict.fromkeys(summary["variant"])))
    styles = line_styles(order, named)
    datasets = list(dict.fromkeys(summary["dataset"]))
    fig, axes = _new_figure(len(datasets), len(metrics), 5.2, 3.8, legend_rows=len(order) // 4 + 1)
    for r, dataset in enumerate(datasets):
        for c, metric in enumerate(metrics):
            ax = axes[r, c]
            part = summary[(summary["dataset"] == dataset) & (summary["metric"] == metric)]
            for variant in order:
                line = part[part["variant"] == variant].sort_values(x)
                style = styles[variant]
                if line.empty:
                    continue
                ax.plot(line[x], line["value"], **style)
                if bands and style["label"] != "_nolegend_" and line["ci_low"].notna().any():
                    ax.fill_between(line[x], line["ci_low"], line["ci_high"], color=style["color"], alpha=0.15,
                                    lw=0, gid=variant)
            step_ticks(ax, part[x])
            ax.set(xlabel="sampling steps" if x == "steps" else "network evaluations (NFE)",
                   ylabel=metric_label(metric), title=dataset)
            ax.grid(alpha=0.3)
    seeds = int(summary["seeds"].max())
    fig.suptitle(f"{protocol} protocol, guidance {guidance:g}, {weights} weights"
                 + (f", means over {seeds} seeds" if seeds > 1 else ""))
    _legend(fig, styles)
    return fig


def figure3(table: pd.DataFrame, *, guidance: float | None = None, weights: str = "ema") -> Figure:
    """The paper's Figure 3: FID and CLIP score against steps, one panel per dataset and metric, the paper's
    Table 1 rows in colour and named, the others thin and grey (the ranked protocol; means over seeds; no bands)."""
    metrics = [m for m in ("fid", "clip_score") if m in set(table["metric"])]
    present = set(table["variant"])
    named = [v for v in table1_variants() if v in present] or None
    return curves(table, metrics=metrics, guidance=guidance, weights=weights, named=named, bands=False)


def ranks(table: pd.DataFrame, *, variants=None, families=None, datasets=None, protocol: str | None = None,
          named=None) -> Figure:
    """Each chosen variant's mean non-dominated-sorting rank (CLIP score up, FID down, seed means) over the
    settings with N steps (of ``datasets``, default all), against N. Every variant of the protocol is ranked (its 1-step baseline is not); the
    chosen ones (default: all, best first) are drawn. See :func:`line_styles` for ``named``."""
    from trajbench.metrics.ranking import rank_per_setting, setting_means

    protocol = protocol or results.default_protocol(table)
    rows = results.select(table, protocols=protocol, datasets=datasets)
    rows = rows[rows["role"] != "baseline"]
    try:
        ranked = rank_per_setting(setting_means(rows))
    except ValueError as error:
        raise results.ResultsError(f"cannot rank these results: {error}") from None
    by_steps = ranked.groupby(["variant", "steps"])["rank"].mean().reset_index()
    if variants is not None:
        order = results.variant_names(table, variants)
    else:
        chosen = results.select(rows, families=families) if families is not None else rows
        mean = by_steps[by_steps["variant"].isin(set(chosen["variant"]))].groupby("variant")["rank"].mean()
        order = list(mean.sort_values(kind="stable").index)
    styles = line_styles(order, named)
    fig, axes = _new_figure(1, 1, 8.0, 5.0, legend_rows=len(order) // 4 + 1)
    ax = axes[0, 0]
    for variant in order:
        line = by_steps[by_steps["variant"] == variant].sort_values("steps")
        ax.plot(line["steps"], line["rank"], **styles[variant])
    step_ticks(ax, by_steps["steps"])
    ax.invert_yaxis()
    ax.set(xlabel="sampling steps", ylabel="mean rank (1 = Pareto-optimal)",
           title=f"rank among {by_steps['variant'].nunique()} variants against sampling steps ({protocol} protocol)")
    ax.grid(alpha=0.3)
    _legend(fig, styles)
    return fig


def samples(table: pd.DataFrame, *, variants, dataset: str | None = None, seed: int | None = None,
            root: str | Path | None = None) -> Figure:
    """The sample grids of several variants (each cell's ``samples/<cell key>.png``, drawn from the same prompts
    and noise), one row per variant. ``root`` is the results folder (default: the table's ``attrs["root"]``)."""
    from matplotlib.image import imread

    from trajbench.grid import sample_grid_path
    from trajbench.spec import Cell

    names = results.variant_names(table, variants)
    rows = results.select(table, variants=names, datasets=dataset, seeds=seed)
    dataset = dataset or rows["dataset"].iloc[0]
    seed = int(rows["seed"].min()) if seed is None else seed
    root = Path(root or table.attrs.get("root", "."))
    paths = {v: sample_grid_path(root, Cell(v, dataset, seed)) for v in names}
    missing = [v for v, p in paths.items() if not p.is_file()]
    if missing:
        raise results.ResultsError(f"no sample grid for {', '.join(missing)} ({paths[missing[0]]} not found); the "
                                   f"grid writes one per cell when eval.grid_images > 0 (`trajbench grid run SPEC`)")
    images = [imread(paths[v]) for v in names]
    height, width = images[0].shape[:2]
    scale = max(1.0, 600 / width)  # at least 6 inches wide
    fig = Figure(figsize=(scale * width / 100, len(names) * (scale * height / 100 + 0.35)), layout="constrained")
    for ax, variant, image in zip(fig.subplots(len(names), 1, squeeze=False)[:, 0], names, images):
        ax.imshow(image)
        ax.set_axis_off()
        ax.set_title(variant, loc="left", fontsize=11, fontweight="bold")
    fig.suptitle(f"{dataset}, seed {seed}: the same prompts for every variant")
    return fig


def save(fig: Figure, out: str | Path, dpi: int = 110) -> Path:
    """Write a figure (PNG, PDF or SVG by the suffix), making its folder."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    return out
