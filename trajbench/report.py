"""A grid's report: its tables (computed by :mod:`trajbench.paper_tables`), the figures (drawn by
:mod:`trajbench.plots`) and README.md, all from metrics.csv; and the density plot of `trajbench plot densities`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trajbench import formulations
from trajbench.paper_tables import (curve_guidance, discrimination, ranked_rows, seed_agreement, step_axis_table, table1,
                                    table1_two_best, table2)
from trajbench.tabletext import to_latex, to_markdown

DEFAULT_DENSITY_VARIANTS = (
    "rf", "rf/lognorm(0.00, 1.00)", "rf/mode(1.29)", "rf/cosmap", "eps/linear", "v/cos", "edm(-1.20, 1.20)", "edm/rf",
)


def density_curves(name: str, points: int = 801) -> dict:
    """pi(t) on a uniform t grid, and the effective weight w_t against lambda_t on a logit-spaced grid
    (t = sigmoid(x), |x| <= 16) so both tails of log-SNR are covered."""
    import jax
    import jax.numpy as jnp

    f = formulations.get(name)
    t = jnp.linspace(1e-3, 1 - 1e-3, points, dtype=jnp.float32)
    t_logit = jax.nn.sigmoid(jnp.linspace(-16.0, 16.0, points, dtype=jnp.float32))
    pdf, lam, weight = jax.jit(lambda g, a, b: (g.t_pdf(a), g.logsnr(b), g.effective_weight(b)))(f, t, t_logit)
    return {"t": np.asarray(t), "pdf": np.asarray(pdf), "logsnr": np.asarray(lam), "weight": np.asarray(weight)}


def plot_densities(names, out: str | Path) -> Path:
    """Two panels: the training-time density pi(t), and the effective eps-loss weight over log-SNR."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [formulations.parse(n).name for n in (names or DEFAULT_DENSITY_VARIANTS)]
    fig, (ax_t, ax_w) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name in names:
        curves = density_curves(name)
        ax_t.plot(curves["t"], curves["pdf"], label=name)
        ax_w.plot(curves["logsnr"], curves["weight"], label=name)
    ax_t.set(xlabel="t (0 = data, 1 = noise)", ylabel="pi(t)", title="training-time density", ylim=(0, None))
    ax_w.set(xlabel="log-SNR lambda (left: noise, right: data)", ylabel="w_t", yscale="log", xlim=(-15, 15),
             ylim=(1e-4, 1e3), title="effective eps-loss weight w_t (unified form)")
    ax_t.legend(fontsize=7)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, format="png")  # exactly at ``out``, whatever its extension
    plt.close(fig)
    return out


# ---- figures -------------------------------------------------------------------------------------------

FAMILY_ORDER = ("rf/lognorm", "rf/mode", "rf/cosmap", "rf", "eps/linear", "v/linear", "eps/cos", "v/cos", "edm",
                "edm/rf", "edm/cos")




def family_colours(families) -> dict:
    """One colour per family (tab20 in FAMILY_ORDER), for the per-family step-axis figure."""
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    known = [f for f in FAMILY_ORDER if f in set(families)] + sorted(set(families) - set(FAMILY_ORDER))
    return {family: cmap(2 * i % 20 + (2 * i // 20)) for i, family in enumerate(known)}


def plot_step_axis(metrics, out) -> Path | None:
    """Distance to the accurate solve (relative RMS) and straightness against steps, one line per family
    (EMA weights, means over variants and seeds), one row of panels per dataset and guidance."""
    from matplotlib.figure import Figure

    from trajbench.plots import save, step_ticks

    table = step_axis_table(metrics)
    if table.empty:
        return None
    panels = list(dict.fromkeys(zip(table["dataset"], table["guidance"])))
    colours = family_colours(table["family"])
    fig = Figure(figsize=(12, 4.2 * len(panels) + 0.5), layout="constrained")
    axes = fig.subplots(len(panels), 2, squeeze=False)
    for r, (dataset, guidance) in enumerate(panels):
        part = table[(table["dataset"] == dataset) & (table["guidance"] == guidance)]
        for c, (metric, label) in enumerate((("ref_distance", "distance to the accurate solve (relative RMS)"),
                                             ("straightness", "straightness (0 = straight)"))):
            ax = axes[r, c]
            for family, line in part.groupby("family", sort=False):
                ax.plot(line["steps"], line[metric], marker="o", ms=3, lw=1.2, color=colours[family], label=family)
            step_ticks(ax, part["steps"])
            ax.set(xlabel="sampling steps", ylabel=label, title=f"{dataset}, guidance {guidance:g}")
            ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False)
    fig.suptitle("the step axis without the evaluator (EMA weights)")
    return save(fig, out)


# ---- grid results: the report ---------------------------------------------------------------------------


def judges_line(metrics) -> str:
    """Who scored the table: the identities of its FID / KID features and CLIP score judges."""
    features = ", ".join(dict.fromkeys(metrics.get("features", ["inhouse"])))
    clip = ", ".join(dict.fromkeys(metrics.get("clip_judge", ["inhouse"])))
    return (f"FID and KID on `{features}` features, CLIP score by `{clip}` (`inhouse`: the evaluator trained per "
            "dataset; `inception:` / `clip:<architecture>:` name local weights by their SHA-256).")


def write_report(metrics, out_dir, *, name: str, table2_setting: str = "25x2", table2_weights: str = "ema",
                 curve_guidance_value: float | None = None, curve_weights: str = "ema",
                 stability_draws: int = 200, validity: str = "") -> dict:
    """Every table and figure of a grid, from its long-form metrics table alone, into ``out_dir``:
    table1.csv, table2.csv, tables.md, tables.tex, figure3.png, rank_vs_steps.png, densities.png,
    compare_paper.md / .json and README.md (which shows them, with the sample grids found in samples/).
    Table 1 ranks the ``ranked`` rows; a control protocol's rows get their own Table 1 (table1_control.csv);
    ``validity`` is the Markdown of the Validity section (:mod:`trajbench.validity`), shown first."""
    import json

    from trajbench.metrics.ranking import bootstrap_rank_stability
    from trajbench.paper import compare, format_comparison
    from trajbench.plots import figure3, save
    from trajbench.plots import ranks as plot_ranks

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from trajbench.samplers import SamplerSetting

    t2_label = SamplerSetting.parse(table2_setting).label
    everything, metrics = metrics, ranked_rows(metrics)
    control = ranked_rows(everything, "control")
    ranks = table1(metrics)
    best_two = table1_two_best(ranks)
    per_step = table2(metrics, t2_label, table2_weights)
    ranks.to_csv(out / "table1.csv", index=False, float_format="%.4f")
    per_step.to_csv(out / "table2.csv", index=False, float_format="%.4f")
    stability = bootstrap_rank_stability(metrics, draws=stability_draws)
    seeds = seed_agreement(metrics)
    comparison = compare(ranks.drop(columns="family"), metrics)
    (out / "compare_paper.md").write_text(format_comparison(comparison))
    (out / "compare_paper.json").write_text(json.dumps(
        {"table": comparison["table"].to_dict("records"), "correlations": comparison["correlations"].to_dict("records"),
         "findings": comparison["findings"]}, indent=1, default=float))

    sections = [("Table 1: average rank (non-dominated sorting on CLIP up, FID down)", ranks),
                ("Table 1, the paper's view: the two best variants per family", best_two),
                (f"Table 2: CLIP score and FID at {t2_label} ({table2_weights} weights)", per_step),
                ("Rank stability: rank_all under resampling of every metric within its CI", stability)]
    if len(control):
        control_ranks = table1(control)
        control_ranks.to_csv(out / "table1_control.csv", index=False, float_format="%.4f")
        protocol = control["protocol"].iloc[0]
        sections.insert(2, (f"Table 1 under the control protocol ({protocol})", control_ranks))
    separation = discrimination(metrics)
    if len(separation):
        sections.append(("Discrimination: spread across variants over the seed-to-seed standard deviation",
                         separation))
    (out / "tables.md").write_text("\n\n".join(f"### {title}\n\n{to_markdown(t)}" for title, t in sections) + "\n")
    (out / "tables.tex").write_text("\n\n".join(to_latex(t, caption=title) for title, t in sections))

    guidance = curve_guidance(metrics, curve_guidance_value)
    figures = {"figure3.png": save(figure3(everything, guidance=guidance, weights=curve_weights), out / "figure3.png"),
               "rank_vs_steps.png": save(plot_ranks(metrics), out / "rank_vs_steps.png"),
               "densities.png": plot_densities(list(ranks["variant"][:12]), out / "densities.png")}
    if plot_step_axis(everything, out / "step_axis.png") is not None:
        figures["step_axis.png"] = out / "step_axis.png"
    grids = sorted((out / "samples").rglob("*.png")) if (out / "samples").exists() else []

    settings = metrics.groupby(["dataset", "weights", "setting"]).ngroups
    lines = [f"# Results: {name}", "",
             f"{metrics['variant'].nunique()} variants, {metrics['dataset'].nunique()} dataset(s), "
             f"{metrics['seed'].nunique()} seed(s), {settings} ranking settings (dataset x weights x sampler "
             f"setting). Regenerate everything here with `trajbench report` from `metrics.csv`; `trajbench plot curves`, "
             f"`plot ranks`, `plot samples` and `trajbench table` draw and compare chosen variants.", "",
             judges_line(everything), ""]
    if validity:
        lines += [validity, ""]
    for title, table in sections:
        lines += [f"## {title}", "", to_markdown(table), ""]
    lines += [f"Mean Kendall tau between the point ranking and the resampled rankings: "
              f"{stability.attrs['kendall_tau']:.3f} (nan: the point ranks are all tied).", ""]
    if seeds:
        lines += ["Kendall tau of rank_all between seeds: "
                  + ", ".join(f"{pair}: {tau:.3f}" for pair, tau in seeds.items()) + ".", ""]
    lines += [format_comparison(comparison).replace("## ", "## Paper: ", 1), "## Figures", ""]
    lines += [f"![{f}]({f})" for f in figures] + [""]
    if grids:
        lines += ["## Sample grids", ""] + [f"![{g.relative_to(out)}]({g.relative_to(out).as_posix()})"
                                             for g in grids] + [""]
    (out / "README.md").write_text("\n".join(lines))
    return {"table1": ranks, "table2": per_step, "stability": stability, "comparison": comparison,
            "figures": list(figures)}
