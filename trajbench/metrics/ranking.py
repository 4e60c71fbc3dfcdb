"""Ranking by non-dominated sorting, as the SD3 paper ranks its 61 formulations.

In each setting (dataset x weights x sampler setting) the variants are points in (CLIP score up, FID down).
Point a dominates b when a is at least as good in every objective and strictly better in one. The variants
no one dominates get rank 1 and are removed; the non-dominated ones among the rest get rank 2; and so on.
Identical points never dominate each other, so they share a front. Ranks are then averaged over settings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

OBJECTIVES = {"clip_score": "max", "fid": "min"}
SETTING_COLUMNS = ("dataset", "weights", "setting")


def non_dominated_ranks(points, maximize: Sequence[bool]) -> np.ndarray:
    """Front index (1 = Pareto-optimal) of each row of ``points`` [n, k]; ``maximize[j]`` per objective."""
    points = np.asarray(points, np.float64)
    if points.ndim != 2 or points.shape[1] != len(maximize):
        raise ValueError(f"points must be [n, {len(maximize)}], got shape {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError("points must be finite; drop failed variants before ranking")
    cost = np.where(np.asarray(maximize, bool), -points, points)  # lower is better everywhere
    no_worse = (cost[:, None, :] <= cost[None, :, :]).all(-1)
    better = (cost[:, None, :] < cost[None, :, :]).any(-1)
    dominates = no_worse & better  # dominates[a, b]: a dominates b
    ranks = np.zeros(len(points), np.int64)
    remaining = np.ones(len(points), bool)
    front = 0
    while remaining.any():
        front += 1
        dominated = (dominates & remaining[:, None]).any(0)
        current = remaining & ~dominated
        ranks[current] = front
        remaining &= ~current
    return ranks


def setting_means(metrics: pd.DataFrame, objectives: Mapping[str, str] = OBJECTIVES) -> pd.DataFrame:
    """One row per (variant, setting) with each objective averaged over seeds, from the long-form table."""
    rows = metrics[metrics["metric"].isin(list(objectives))]
    keys = ["variant", "family", *SETTING_COLUMNS, "steps", "guidance"]
    wide = rows.pivot_table(index=keys, columns="metric", values="value", aggfunc="mean").reset_index()
    wide.columns.name = None
    missing = [m for m in objectives if m not in wide]
    if missing:
        raise ValueError(f"the metrics table has no {missing} rows to rank on")
    return wide.dropna(subset=list(objectives))


def rank_per_setting(means: pd.DataFrame, objectives: Mapping[str, str] = OBJECTIVES) -> pd.DataFrame:
    """Add a ``rank`` column: non-dominated sorting within each setting."""
    maximize = [objectives[m] == "max" for m in objectives]
    parts = []
    for _, group in means.groupby(list(SETTING_COLUMNS), sort=True):
        group = group.copy()
        group["rank"] = non_dominated_ranks(group[list(objectives)].to_numpy(), maximize)
        parts.append(group)
    return pd.concat(parts, ignore_index=True)


def average_ranks(ranked: pd.DataFrame, step_counts: Sequence[int] = (5, 50)) -> pd.DataFrame:
    """``variant, rank_all, rank_<N>_steps...``: mean rank over all settings and over those with N steps
    (NaN where a spec has no N-step setting), sorted by ``rank_all``."""
    table = ranked.groupby("variant")["rank"].mean().rename("rank_all").to_frame()
    for steps in step_counts:
        subset = ranked[ranked["steps"] == steps]
        table[f"rank_{steps}_steps"] = subset.groupby("variant")["rank"].mean()
    table = table.reset_index().sort_values(["rank_all", "variant"], kind="stable")
    return table.reset_index(drop=True)


def rank_table(metrics: pd.DataFrame, step_counts: Sequence[int] = (5, 50)) -> pd.DataFrame:
    """The paper's Table 1 from the long-form metrics table (metrics averaged over seeds first)."""
    return average_ranks(rank_per_setting(setting_means(metrics)), step_counts)


def per_seed_rank_tables(metrics: pd.DataFrame, step_counts: Sequence[int] = (5, 50)) -> dict[int, pd.DataFrame]:
    """Table 1 computed separately from each seed's results."""
    return {int(seed): rank_table(group, step_counts) for seed, group in metrics.groupby("seed")}


def bootstrap_rank_stability(metrics: pd.DataFrame, *, draws: int = 200, seed: int = 0,
                             step_counts: Sequence[int] = (5, 50)) -> pd.DataFrame:
    """How stable ``rank_all`` is under the sampling noise of the metrics.

    Each draw replaces every (variant, setting, seed) value by a normal draw with the standard error its 95 %
    bootstrap interval implies, se = (ci_high - ci_low) / (2 x 1.96), and ranks again. Returns per variant the
    point rank, the median and the 5 / 95 % quantiles of rank_all over draws, and the fraction of draws in which
    it ranks first; the draws' Kendall tau with the point ranking is in ``attrs["kendall_tau"]``.
    """
    from scipy.stats import kendalltau

    point = rank_table(metrics, step_counts)
    point_order = point.set_index("variant")["rank_all"]
    rng = np.random.default_rng(seed)
    se = ((metrics["ci_high"] - metrics["ci_low"]) / (2 * 1.959964)).fillna(0.0).clip(lower=0.0).to_numpy()
    samples, taus = [], []
    for _ in range(draws):
        drawn = metrics.assign(value=metrics["value"].to_numpy() + rng.standard_normal(len(metrics)) * se)
        table = rank_table(drawn, step_counts).set_index("variant")["rank_all"]
        samples.append(table)
        drawn_order = table.reindex(point_order.index)
        varied = point_order.nunique() > 1 and drawn_order.nunique() > 1
        taus.append(kendalltau(point_order, drawn_order).statistic if varied else np.nan)
    stacked = pd.concat(samples, axis=1)
    best = stacked.eq(stacked.min(axis=0), axis=1).mean(axis=1)
    out = pd.DataFrame({"rank_all": point_order, "median": stacked.median(axis=1),
                        "q05": stacked.quantile(0.05, axis=1), "q95": stacked.quantile(0.95, axis=1),
                        "p_first": best}).reset_index()
    out.attrs["kendall_tau"] = float(np.nanmean(taus)) if np.isfinite(taus).any() else float("nan")
    return out
