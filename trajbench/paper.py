"""Our Table 1 beside the SD3 paper's: rank correlations per column and the paper's findings, each marked held
or not held with the numbers behind the verdict."""

from __future__ import annotations

import numpy as np
import pandas as pd

from trajbench import formulations
from trajbench.reference import paper_table1
from trajbench.tabletext import to_markdown

COLUMNS = ("rank_all", "rank_5_steps", "rank_50_steps")


def side_by_side(ours: pd.DataFrame) -> pd.DataFrame:
    """The paper's 16 rows with its ranks and ours (``ours_<column>``; NaN where we have no such variant)."""
    paper = paper_table1()
    mine = ours.set_index("variant")
    table = paper.rename(columns={c: f"paper_{c}" for c in COLUMNS})
    for column in COLUMNS:
        table[f"ours_{column}"] = table["variant"].map(mine[column]) if column in mine else np.nan
    return table


def correlations(side: pd.DataFrame) -> pd.DataFrame:
    """Spearman rho and Kendall tau between the paper's and our ranks, per column, over shared variants."""
    from scipy.stats import kendalltau, spearmanr

    rows = []
    for column in COLUMNS:
        pair = side[[f"paper_{column}", f"ours_{column}"]].dropna()
        n = len(pair)
        if n >= 3 and pair.iloc[:, 0].nunique() > 1 and pair.iloc[:, 1].nunique() > 1:
            rho = float(spearmanr(pair.iloc[:, 0], pair.iloc[:, 1]).statistic)
            tau = float(kendalltau(pair.iloc[:, 0], pair.iloc[:, 1]).statistic)
        else:
            rho = tau = float("nan")
        rows.append({"column": column, "n": n, "spearman": rho, "kendall": tau})
    return pd.DataFrame(rows)


def _rank_of(table: pd.DataFrame, variant: str, column: str) -> float:
    row = table[table["variant"] == variant]
    return float(row[column].iloc[0]) if len(row) else float("nan")


def _verdict(condition, evidence: str, needed) -> dict:
    missing = [v for v in needed if v is None]
    return {"held": None if missing else bool(condition), "evidence": evidence}


def findings(ours: pd.DataFrame, metrics: pd.DataFrame | None = None) -> list[dict]:
    """The paper's Section 5.1 findings, each ``{finding, held (True / False / None = cannot tell), evidence}``."""
    lognorm, eps, mid, edm = "rf/lognorm(0.00, 1.00)", "eps/linear", "rf/lognorm(0.50, 0.60)", "edm(-1.20, 1.20)"
    have = set(ours["variant"])
    out = []

    def need(*variants):
        return [v if v in have else None for v in variants]

    best_all = ours.nsmallest(1, "rank_all")
    r = _rank_of(ours, lognorm, "rank_all")
    out.append({"finding": f"{lognorm} ranks first overall", **_verdict(
        r <= ours["rank_all"].min(),
        f"its rank_all {r:.2f}; the best is {best_all['variant'].iloc[0]} with {best_all['rank_all'].iloc[0]:.2f}",
        need(lognorm))})

    r_eps = _rank_of(ours, eps, "rank_all")
    above = ours[ours["rank_all"] < r_eps]["variant"].tolist()
    intruders = [v for v in above if not (formulations.family_of(v).startswith("rf/"))]
    out.append({"finding": f"only RF variants with a modified timestep density beat {eps}", **_verdict(
        not intruders,
        f"{len(above)} variants rank above {eps} ({r_eps:.2f})"
        + (f"; not modified-density RF: {', '.join(intruders)}" if intruders else ", all rf/lognorm, rf/mode or rf/cosmap"),
        need(eps))})

    mid_finding = f"{mid} is best at 50 steps but not at 5 steps"
    reversal = "the variants that rank best with 5 steps are not those that rank best with 50"
    both = ours[["variant", "rank_5_steps", "rank_50_steps"]].dropna()
    if len(both) < 2:
        out += [{"finding": f, "held": None, "evidence": "needs 5-step and 50-step settings for at least two variants"}
                for f in (mid_finding, reversal)]
    else:
        from scipy.stats import kendalltau

        r5, r50 = _rank_of(both, mid, "rank_5_steps"), _rank_of(both, mid, "rank_50_steps")
        best5, best50 = both["rank_5_steps"].min(), both["rank_50_steps"].min()
        out.append({"finding": mid_finding, **_verdict(
            r50 <= best50 and r5 > best5,
            f"its rank at 50 steps {r50:.2f} (best {best50:.2f}), at 5 steps {r5:.2f} (best {best5:.2f})",
            need(mid))})
        first5 = both[both["rank_5_steps"] == best5]["variant"].tolist()
        first50 = both[both["rank_50_steps"] == best50]["variant"].tolist()
        varied = both["rank_5_steps"].nunique() > 1 and both["rank_50_steps"].nunique() > 1
        tau = float(kendalltau(both["rank_5_steps"], both["rank_50_steps"]).statistic) if varied else float("nan")
        out.append({"finding": reversal, "held": not set(first5) & set(first50),
                    "evidence": f"best at 5 steps: {', '.join(first5)}; best at 50 steps: {', '.join(first50)}; "
                                f"Kendall tau between the two rank columns {tau:.2f}"})

    if metrics is not None:
        out.append(_few_step_degradation(metrics))

    table1_rows = [v for v in paper_table1()["variant"] if v in have]
    shown = ours[ours["variant"].isin(table1_rows)]
    worst = shown.nlargest(1, "rank_all")
    r_edm = _rank_of(ours, edm, "rank_all")
    out.append({"finding": f"{edm} ranks last of the paper's Table 1 rows", **_verdict(
        len(worst) and r_edm >= shown["rank_all"].max(),
        f"its rank_all {r_edm:.2f}; the worst of the {len(shown)} Table 1 rows we ran is "
        f"{worst['variant'].iloc[0] if len(worst) else '-'} ({shown['rank_all'].max():.2f})", need(edm))})
    return out


def _few_step_degradation(metrics: pd.DataFrame) -> dict:
    """Mean FID ratio (fewest steps / most steps), rectified flows vs the other families."""
    finding = "rectified flows lose less quality than the other families when the number of steps drops"
    fid = metrics[(metrics["metric"] == "fid") & (metrics["sampler"] == "euler")]
    if fid["steps"].nunique() < 2:
        return {"finding": finding, "held": None, "evidence": "needs at least two step counts"}
    few, many = fid["steps"].min(), fid["steps"].max()
    keys = ["variant", "family", "dataset", "weights", "guidance", "seed"]
    pivot = fid.pivot_table(index=keys, columns="steps", values="value", aggfunc="mean").reset_index()
    pivot["ratio"] = pivot[few] / pivot[many]
    is_rf = pivot["family"].str.fullmatch(r"rf(/.*)?")
    rf, other = pivot[is_rf]["ratio"].mean(), pivot[~is_rf]["ratio"].mean()
    held = None if np.isnan(rf) or np.isnan(other) else rf < other
    return {"finding": finding, "held": held,
            "evidence": f"mean FID({few} steps) / FID({many} steps): rectified flows {rf:.2f}, others {other:.2f}"}


def compare(ours: pd.DataFrame, metrics: pd.DataFrame | None = None) -> dict:
    side = side_by_side(ours)
    return {"table": side, "correlations": correlations(side), "findings": findings(ours, metrics)}


def format_comparison(result: dict) -> str:
    """Markdown: the side-by-side table, the correlations, the findings."""
    lines = ["## Our Table 1 beside the paper's", "", to_markdown(result["table"]), "",
             "## Rank correlation with the paper (over the variants both ran)", "",
             to_markdown(result["correlations"], digits=3), "", "## The paper's findings", ""]
    for item in result["findings"]:
        mark = {True: "held", False: "not held", None: "cannot tell"}[item["held"]]
        lines.append(f"- **{mark}**: {item['finding']} ({item['evidence']})")
    return "\n".join(lines) + "\n"
