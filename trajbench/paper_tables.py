"""The tables of a grid's report, computed from its long-form metrics table: Table 1 (ranks) and Table 2 (CLIP
score and FID) as the paper prints them, the step-axis table, seed agreement and discrimination."""

from __future__ import annotations

import numpy as np
import pandas as pd

from trajbench import formulations


def dataset_label(dataset: str) -> str:
    """``synth-imagenet`` -> ``imagenet`` (the paper's column prefix for its dataset analogue)."""
    return dataset.removeprefix("synth-").replace(":", "_").replace("/", "_")


def ranked_rows(metrics, role: str = "ranked") -> "pd.DataFrame":
    """The rows of one role: ``ranked`` (Table 1), ``control`` (the control protocol) or ``baseline`` (the
    conditional-mean sampler, never ranked). A table without a ``role`` column is all ranked."""
    if "role" not in metrics:
        return metrics if role == "ranked" else metrics.iloc[:0]
    return metrics[metrics["role"] == role]


def curve_rows(metrics) -> "pd.DataFrame":
    """The ranked protocol's rows and its baseline (1-step) rows: what the metric-vs-steps curves draw."""
    ranked = ranked_rows(metrics)
    if "role" not in metrics or ranked.empty:
        return ranked
    protocols = set(ranked["protocol"])
    baseline = ranked_rows(metrics, "baseline")
    return pd.concat([ranked, baseline[baseline["protocol"].isin(protocols)]], ignore_index=True)


def step_axis_table(metrics) -> "pd.DataFrame":
    """Per dataset, family, guidance and step count (EMA weights, the ranked protocol and its baseline): the mean
    distance to the accurate solve (``ref_distance``) and the mean ``straightness``."""
    rows = curve_rows(metrics)
    rows = rows[(rows["weights"] == "ema") & rows["metric"].isin(["ref_distance", "straightness"])]
    if rows.empty:
        return pd.DataFrame()
    table = rows.pivot_table(index=["dataset", "family", "guidance", "steps"], columns="metric", values="value",
                             aggfunc="mean")
    table.columns.name = None
    return table.reset_index()


def table1(metrics) -> "pd.DataFrame":
    """Average non-dominated-sorting ranks over all settings, the 5-step and the 50-step settings."""
    from trajbench.metrics.ranking import rank_table

    table = rank_table(metrics)
    table.insert(1, "family", [formulations.family_of(v) for v in table["variant"]])
    return table


def table1_two_best(table) -> "pd.DataFrame":
    """The paper's view of Table 1: the two best variants (by rank_all) of each family."""
    return table.groupby("family", sort=False).head(2).reset_index(drop=True)


def table2(metrics, setting: str, weights: str) -> "pd.DataFrame":
    """CLIP score and FID (means over seeds) at one sampler setting: variant, <dataset>_clip, <dataset>_fid."""
    rows = metrics[(metrics["setting"] == setting) & (metrics["weights"] == weights)
                   & metrics["metric"].isin(["clip_score", "fid"])]
    if rows.empty:
        return pd.DataFrame(columns=["variant"])
    wide = rows.pivot_table(index="variant", columns=["dataset", "metric"], values="value", aggfunc="mean")
    table = pd.DataFrame(index=wide.index)
    for dataset in dict.fromkeys(rows["dataset"]):
        for metric, suffix in (("clip_score", "clip"), ("fid", "fid")):
            table[f"{dataset_label(dataset)}_{suffix}"] = wide[(dataset, metric)]
    order = list(dict.fromkeys(rows["variant"]))
    return table.reindex(order).reset_index()


def seed_agreement(metrics) -> dict:
    """Kendall tau of rank_all between every pair of seeds (empty with one seed)."""
    from itertools import combinations

    from scipy.stats import kendalltau

    from trajbench.metrics.ranking import per_seed_rank_tables

    tables = {s: t.set_index("variant")["rank_all"] for s, t in per_seed_rank_tables(metrics).items()}
    out = {}
    for a, b in combinations(sorted(tables), 2):
        common = tables[a].index.intersection(tables[b].index)
        out[f"{a}-{b}"] = float(kendalltau(tables[a][common], tables[b][common]).statistic)
    return out


def discrimination(metrics, names=("fid", "clip_score")) -> "pd.DataFrame":
    """Do the results separate the variants beyond seed noise? Per metric and setting, over the variants run
    with at least two seeds: spread = max - min of the variants' seed means, seed_std = the pooled seed-to-seed
    standard deviation sqrt(mean_v s_v^2), and their ratio. Empty with one seed."""
    rows = metrics[metrics["metric"].isin(list(names))]
    keys = ["metric", "dataset", "weights", "setting"]
    per = rows.groupby([*keys, "variant"])["value"].agg(["mean", "std", "size"]).reset_index()
    per = per[per["size"] >= 2]
    out = []
    for key, part in per.groupby(keys, sort=False):
        if len(part) < 2:
            continue
        spread, seed_std = part["mean"].max() - part["mean"].min(), float(np.sqrt((part["std"] ** 2).mean()))
        out.append({**dict(zip(keys, key)), "variants": len(part), "seeds": int(part["size"].min()),
                    "spread": spread, "seed_std": seed_std, "ratio": spread / seed_std if seed_std else np.inf})
    return pd.DataFrame(out)


def curve_guidance(table: pd.DataFrame, requested: float | None = None) -> float:
    """The guidance of the metric-vs-steps curves: as requested, else the most common one."""
    return float(requested) if requested is not None else float(table["guidance"].mode().iloc[0])
