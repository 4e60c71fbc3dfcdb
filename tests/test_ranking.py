"""Non-dominated sorting, rank tables, and the paper comparison, against fronts worked out by hand."""

import numpy as np
import pandas as pd
import pytest

from trajbench.metrics.ranking import average_ranks, bootstrap_rank_stability, non_dominated_ranks, rank_table
from trajbench.paper import correlations, findings, side_by_side

MAX_MIN = (True, False)  # (CLIP up, FID down)


def test_fronts_by_hand():
    #        CLIP  FID
    points = [(0.30, 10.0),  # a: best CLIP          -> front 1
              (0.20, 5.0),   # b: best FID           -> front 1
              (0.25, 8.0),   # c: trade-off a / b    -> front 1
              (0.24, 9.0),   # d: dominated by c     -> front 2
              (0.10, 20.0),  # e: dominated by all, f included -> front 4
              (0.20, 9.5)]   # f: dominated by b (equal CLIP, better FID), c and d -> front 3
    assert non_dominated_ranks(points, MAX_MIN).tolist() == [1, 1, 1, 2, 4, 3]


def test_identical_points_share_a_front_and_ties_in_one_objective_dominate():
    points = [(0.3, 5.0), (0.3, 5.0),  # identical: neither dominates the other -> both front 1
              (0.3, 6.0),              # equal CLIP, worse FID: dominated by both -> front 2
              (0.2, 6.0),              # worse in both than the pair, worse CLIP than (0.3, 6) -> front 3
              (0.2, 6.0)]              # its twin -> front 3 as well
    assert non_dominated_ranks(points, MAX_MIN).tolist() == [1, 1, 2, 3, 3]


def test_all_on_one_front_and_a_total_order():
    front = [(0.1 * k, float(k)) for k in range(5)]  # each better CLIP costs FID: no one dominates
    assert non_dominated_ranks(front, MAX_MIN).tolist() == [1] * 5
    chain = [(0.1 * k, float(-k)) for k in range(5)]  # each point better in both than the previous
    assert non_dominated_ranks(chain, MAX_MIN).tolist() == [5, 4, 3, 2, 1]


def test_bad_points_are_refused():
    with pytest.raises(ValueError, match="finite"):
        non_dominated_ranks([(0.1, np.nan)], MAX_MIN)
    with pytest.raises(ValueError, match=r"\[n, 2\]"):
        non_dominated_ranks([0.1, 0.2], MAX_MIN)


def long_rows(values, seeds=(0,)):
    """values: {(variant, dataset, weights, steps): (clip, fid)} -> long-form metrics rows."""
    rows = []
    for (variant, dataset, weights, steps), (clip, fid) in values.items():
        for seed in seeds:
            for metric, value in (("clip_score", clip), ("fid", fid)):
                rows.append(dict(variant=variant, family=variant.split("(")[0], dataset=dataset, seed=seed,
                                 weights=weights, setting=f"{steps}x2", steps=steps, guidance=2.0, sampler="euler",
                                 metric=metric, value=value, ci_low=value - 0.01, ci_high=value + 0.01))
    return pd.DataFrame(rows)


def test_rank_table_averages_fronts_over_settings_by_hand():
    values = {
        # 5 steps: A and B trade off (front 1), C dominated by A (front 2)
        ("A", "d", "ema", 5): (0.30, 10.0), ("B", "d", "ema", 5): (0.20, 5.0), ("C", "d", "ema", 5): (0.25, 12.0),
        # 50 steps: C dominates both; A dominates B
        ("A", "d", "ema", 50): (0.30, 6.0), ("B", "d", "ema", 50): (0.20, 7.0), ("C", "d", "ema", 50): (0.40, 4.0),
    }
    table = rank_table(long_rows(values)).set_index("variant")
    assert table.loc["A"].tolist() == [1.5, 1.0, 2.0]
    assert table.loc["B"].tolist() == [2.0, 1.0, 3.0]
    assert table.loc["C"].tolist() == [1.5, 2.0, 1.0]
    assert list(table.index) == ["A", "C", "B"]  # sorted by rank_all, ties by name


def test_metrics_are_averaged_over_seeds_before_ranking():
    rows = long_rows({("A", "d", "ema", 5): (0.3, 5.0), ("B", "d", "ema", 5): (0.2, 6.0)}, seeds=(0, 1))
    # seed 1 of B is much better: its mean (0.35, 3.5) now dominates A
    better = (rows["variant"] == "B") & (rows["seed"] == 1)
    rows.loc[better & (rows["metric"] == "clip_score"), "value"] = 0.5
    rows.loc[better & (rows["metric"] == "fid"), "value"] = 1.0
    table = rank_table(rows).set_index("variant")
    assert table.loc["B", "rank_all"] == 1 and table.loc["A", "rank_all"] == 2


def test_average_ranks_leaves_missing_step_counts_empty():
    ranked = pd.DataFrame({"variant": ["A", "B"], "rank": [1, 2], "steps": [5, 5]})
    table = average_ranks(ranked).set_index("variant")
    assert table.loc["A", "rank_5_steps"] == 1 and np.isnan(table.loc["A", "rank_50_steps"])


def test_rank_stability_is_exact_without_noise_and_spreads_with_it():
    values = {("A", "d", "ema", 5): (0.30, 5.0), ("B", "d", "ema", 5): (0.29, 5.1), ("C", "d", "ema", 5): (0.1, 9.0)}
    rows = long_rows(values)
    exact = bootstrap_rank_stability(rows.assign(ci_low=rows["value"], ci_high=rows["value"]), draws=20)
    assert (exact["q05"] == exact["rank_all"]).all() and (exact["q95"] == exact["rank_all"]).all()
    assert exact.attrs["kendall_tau"] == pytest.approx(1.0)
    noisy = bootstrap_rank_stability(rows.assign(ci_low=rows["value"] - 1, ci_high=rows["value"] + 1), draws=50)
    spread = noisy.set_index("variant")
    assert spread.loc["A", "q95"] > spread.loc["A", "q05"]  # A and B swap under noise of their size
    assert 0 < spread.loc["A", "p_first"] < 1


def test_paper_comparison_correlations_and_findings():
    from trajbench.reference import paper_table1

    paper = paper_table1()
    # our table = the paper's: correlations are 1 and the findings about Table 1 follow the paper's numbers
    ours = paper.copy()
    result = correlations(side_by_side(ours))
    assert result["n"].tolist() == [16, 16, 16]
    assert np.allclose(result["spearman"], 1.0) and np.allclose(result["kendall"], 1.0)
    verdicts = {f["finding"]: f["held"] for f in findings(ours)}
    assert verdicts["rf/lognorm(0.00, 1.00) ranks first overall"] is True
    assert verdicts["edm(-1.20, 1.20) ranks last of the paper's Table 1 rows"] is True
    assert verdicts["rf/lognorm(0.50, 0.60) is best at 50 steps but not at 5 steps"] is True
    # only rf/lognorm and rf/mode rows rank above eps/linear in the paper
    assert verdicts["only RF variants with a modified timestep density beat eps/linear"] is True
    # reverse our ranks: correlations become -1 and the first finding fails
    reversed_ = ours.assign(**{c: -ours[c] for c in ("rank_all", "rank_5_steps", "rank_50_steps")})
    assert np.allclose(correlations(side_by_side(reversed_))["spearman"], -1.0)
    verdicts = {f["finding"]: f["held"] for f in findings(reversed_)}
    assert verdicts["rf/lognorm(0.00, 1.00) ranks first overall"] is False
    assert verdicts["only RF variants with a modified timestep density beat eps/linear"] is False


def test_findings_say_cannot_tell_when_variants_or_step_counts_are_missing():
    ours = pd.DataFrame({"variant": ["rf", "v/cos"], "rank_all": [1.0, 2.0], "rank_5_steps": [1.0, 2.0],
                         "rank_50_steps": [np.nan, np.nan]})
    verdicts = {f["finding"]: f["held"] for f in findings(ours)}
    assert verdicts["rf/lognorm(0.00, 1.00) ranks first overall"] is None
    assert verdicts["rf/lognorm(0.50, 0.60) is best at 50 steps but not at 5 steps"] is None
    assert len(verdicts) == 6 - 1  # the step-degradation finding needs the metrics table


def test_discrimination_by_hand():
    from trajbench.paper_tables import discrimination

    # two variants, two seeds: A = 10, 12 (std sqrt 2), B = 20, 20 (std 0); spread 9, pooled std sqrt(1) = 1
    rows = pd.concat([long_rows({("A", "d", "ema", 5): (0.3, fid)}, seeds=(seed,))
                      for seed, fid in ((0, 10.0), (1, 12.0))]
                     + [long_rows({("B", "d", "ema", 5): (0.3, 20.0)}, seeds=(0, 1))])
    table = discrimination(rows, names=("fid",))
    assert len(table) == 1
    row = table.iloc[0]
    assert row["spread"] == pytest.approx(9.0) and row["seed_std"] == pytest.approx(1.0)
    assert row["ratio"] == pytest.approx(9.0) and (row["variants"], row["seeds"]) == (2, 2)
    assert discrimination(long_rows({("A", "d", "ema", 5): (0.3, 1.0)})).empty  # one seed: nothing to say
