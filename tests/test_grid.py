"""Experiment specs and the grid runner: parsing and overrides, bad specs, kill-and-resume with sharding,
failure isolation, and the report regenerated from metrics.csv."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trajbench.cli import main
from trajbench.grid import METRIC_COLUMNS, TIMING_COLUMNS, read_metrics, shard_cells
from trajbench.spec import SpecError, load_spec, resolve_variants

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "experiments" / "smoke.toml"
KEYS = ["variant", "dataset", "seed", "weights", "setting", "metric"]


# ---- specs ---------------------------------------------------------------------------------------------
def test_shipped_specs_resolve():
    smoke = load_spec(SMOKE)
    assert len(smoke.cells()) == 3 and smoke.train_config(smoke.cells()[0]).depth == 1
    quick = load_spec(ROOT / "experiments" / "quick.toml")
    assert list(quick.variants) == resolve_variants("table1") and len(quick.variants) == 16
    study = load_spec(ROOT / "experiments" / "sd3_study.toml")
    assert len(study.variants) == 61 and len(study.datasets) == 2
    steps = [int(s.split("x")[0]) for s in study.eval.settings]
    assert len(study.eval.settings) * len(study.eval.weights) * len(study.datasets) == 24  # the paper's 24
    assert {5, 25, 50} <= set(steps) and len({s.split("x")[1] for s in study.eval.settings}) >= 2


def test_overrides_reach_every_section():
    spec = load_spec(SMOKE, ["train.steps=7", "seeds=[0, 1]", 'variants=["edm(-1.20, *)"]', "eval.samples=8",
                             "name=other"])
    assert spec.name == "other" and spec.seeds == (0, 1) and spec.eval.samples == 8
    assert list(spec.variants) == ["edm(-1.20, 0.60)", "edm(-1.20, 1.20)", "edm(-1.20, 1.80)"]
    assert len(spec.cells()) == 6 and spec.train_config(spec.cells()[0]).steps == 7


def test_per_dataset_train_tables():
    spec = load_spec(SMOKE, ['datasets=["synth-imagenet", "synth-cc12m"]', "train.synth-imagenet.text_words=5",
                             "train.synth-imagenet.steps=9"])
    by_dataset = {c.dataset: spec.train_config(c) for c in spec.cells()}
    assert by_dataset["synth-imagenet"].text_words == 5 and by_dataset["synth-imagenet"].steps == 9
    assert by_dataset["synth-cc12m"].text_words == 16 and by_dataset["synth-cc12m"].steps == spec.train["steps"]
    assert spec.recipe()["train"]["synth-imagenet"] == {"text_words": 5, "steps": 9}  # part of the recipe


def test_variant_selection_forms():
    modes = resolve_variants(["rf/mode"])  # the paper's 8 mode-sampling variants, not the extras
    assert len(modes) == 8 and modes[-2:] == ["rf/mode(1.29)", "rf/mode(1.75)"]
    assert resolve_variants(["rf", "rf/lognorm(0.5,0.6)", "rf"]) == ["rf", "rf/lognorm(0.50, 0.60)"]
    assert len(resolve_variants("paper")) == 61 and len(resolve_variants("extras")) == 6


def test_shards_partition_the_cells():
    spec = load_spec(SMOKE, ["seeds=[0, 1, 2]"])
    shards = [shard_cells(spec, (i, 4)) for i in range(4)]
    keys = [c.key for shard in shards for c in shard]
    assert sorted(keys) == sorted(c.key for c in spec.cells()) and len(set(keys)) == len(keys)


def test_a_datasets_own_judge_table_overrides_the_spec_wide_fields():
    spec = load_spec(SMOKE, ['datasets=["synth-imagenet", "synth-cc12m"]', "eval.evaluator.synth-cc12m.steps=7"])
    imagenet, cc12m = (spec.eval.judge_options(d)["evaluator_config"] for d in spec.datasets)
    assert imagenet["steps"] == 3 and cc12m == imagenet | {"steps": 7}  # smoke.toml's fields, then the table
    assert spec.eval.run_options("synth-cc12m")["evaluator_config"] == cc12m


def test_seed_order_runs_the_first_seed_of_every_variant_first():
    spec = load_spec(SMOKE, ["seeds=[0, 1]", "grid.order=seed"])
    assert [(c.variant, c.seed) for c in spec.run_order()] == [(v, s) for s in (0, 1) for v in spec.variants]
    assert spec.cells() == load_spec(SMOKE, ["seeds=[0, 1]"]).run_order()  # the table's order is unchanged
    shards = [shard_cells(spec, (i, 2)) for i in range(2)]
    assert [c.seed for c in shards[0]] == [0, 0, 1] and [c.seed for c in shards[1]] == [0, 1, 1]


@pytest.mark.parametrize("args, message", [
    (["--set", "train.nonsense=1"], "unknown or per-cell field"),
    (["--set", "train.synth-cc12m.steps=5"], "[train.synth-cc12m] names no dataset of this spec"),
    (["--set", "train.synth-imagenet.seed=5"], "[train.synth-imagenet] has unknown or per-cell field(s) seed"),
    (["--set", "train.synth-imagenet.text_words=0"], "text_words must be >= 1"),
    (["--set", "bogus=1"], "unknown field 'bogus'"),
    (["--set", 'variants=["rf/lognrm(0,1)"]'], "rf/lognorm"),
    (["--set", 'datasets=["imagenet"]'], "unknown dataset 'imagenet'"),
    (["--set", 'eval.settings=["25"]'], "malformed"),
    (["--set", "train.preset=huge"], "preset 'huge' is unknown"),
    (["--set", "train.steps=0"], "steps must be >= 1"),
    (["--set", "eval.weights=[\"best\"]"], "weights must be a subset"),
    (["--set", "noequals"], "expected key=value"),
    (["--shard", "3/2"], "--shard '3/2'"),
    (["--set", "eval.evaluator.synth-cc12m.steps=7"], "[eval.evaluator.synth-cc12m] names no dataset of this spec"),
    (["--set", "eval.classifier.depth=2"], "[eval.classifier] on synth-imagenet: unknown ClassifierConfig field(s)"),
    (["--set", "grid.order=dataset"], "[grid] order must be one of 'variant', 'seed', got 'dataset'"),
])
def test_bad_specs_are_one_line_errors(args, message, capsys, tmp_path):
    assert main(["grid", "run", str(SMOKE), "--dry-run", "--results", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_missing_and_malformed_spec_files(tmp_path, capsys):
    assert main(["grid", "run", str(tmp_path / "nope.toml"), "--dry-run"]) == 2
    assert "not found" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("name = 'x'\nvariants = [\n")
    assert main(["grid", "status", str(bad)]) == 2
    assert "not valid TOML" in capsys.readouterr().err
    with pytest.raises(SpecError, match="no 'datasets'"):
        (tmp_path / "partial.toml").write_text("name = 'x'\nvariants = ['rf']\nseeds = [0]\n")
        load_spec(tmp_path / "partial.toml")


def test_dry_run_prints_cells_and_an_estimate(capsys, tmp_path):
    assert main(["grid", "run", str(SMOKE), "--dry-run", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("synth-imagenet  seed 0") == 3 and "estimated wall time" in out
    assert not (tmp_path / "smoke").exists()  # a dry run writes nothing


def test_status_shows_each_started_cells_step_and_the_time_left_from_the_done_cells(capsys, tmp_path):
    """Three smoke cells: one done in 10 min (training 8 + scoring 2), one killed at step 30 of its 40 with its
    last checkpoint at step 20 (no live worker: partial, a rerun starts at 20), one pending. Left: (1 - 20/40) + 1
    cells at the done cell's 10 min = 15 min."""
    from trajbench.grid import GridLayout

    spec = load_spec(SMOKE)
    layout = GridLayout(spec, tmp_path)
    done, partial, pending = spec.cells()
    (layout.cell_dir(done)).mkdir(parents=True)
    (layout.cell_dir(done) / "done.json").write_text(json.dumps({"train_seconds": 480.0, "score_seconds": 120.0,
                                                                 "seconds_this_session": 600.0}))
    (layout.cell_dir(done) / "eval").mkdir()
    for weights, setting, steps, fid in (("ema", "10x2@paper", 10, 6.0), ("ema", "1x2@paper", 1, 15.0),
                                         ("raw", "10x2@paper", 10, 9.0), ("ema", "5x2@paper", 5, 7.0)):
        (layout.cell_dir(done) / "eval" / f"{weights}-{setting}.json").write_text(json.dumps(
            {"weights": weights, "setting": setting, "steps": steps, "fid": fid, "clip_score": 0.8, "accuracy": 0.9}))
    run = layout.cell_dir(partial) / "run"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"config": {"steps": 40}}))
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (10, 20, 30))
                                       + '{"step": 4')  # a line cut short by the kill
    (run / "checkpoints" / "20").mkdir(parents=True)
    assert main(["grid", "status", str(SMOKE), "--results", str(tmp_path), "--format", "json"]) == 0
    status = json.loads(capsys.readouterr().out)
    states = {(c["variant"], c["state"]): c for c in status["cells"]}
    assert states[(done.variant, "done")]["seconds"] == 600.0
    assert states[(done.variant, "done")]["headline"] == {  # EMA at the most steps, and its 1-step baseline
        "setting": "ema 10x2@paper", "fid": 6.0, "clip_score": 0.8, "accuracy": 0.9, "baseline_fid": 15.0,
        "baseline_steps": 1}
    assert (states[(partial.variant, "partial")]["step"], states[(partial.variant, "partial")]["steps"]) == (30, 40)
    assert "step" not in states[(pending.variant, "pending")]
    assert states[(partial.variant, "partial")]["resume_step"] == 20
    assert status["seconds_left"] == pytest.approx((0.5 + 1) * 600.0)
    assert main(["grid", "status", str(SMOKE), "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "(10 min; ema 10x2@paper: FID 6.00, CLIP 0.800, recognisability 0.900, 1-step FID / FID 2.50)" in out
    assert "(step 30 of 40, resumes from 20)" in out and "about 15 min left" in out


# ---- running -------------------------------------------------------------------------------------------
def grid_command(*args):
    return [sys.executable, "-m", "trajbench.cli", "grid", "run", str(SMOKE), "--no-progress", *args]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    results = tmp_path_factory.mktemp("uninterrupted")
    subprocess.run(grid_command("--results", str(results)), check=True, capture_output=True, text=True)
    return results


def comparable(table: pd.DataFrame) -> pd.DataFrame:
    return table.drop(columns=list(TIMING_COLUMNS)).sort_values(KEYS).reset_index(drop=True)


@pytest.mark.slow
def test_uninterrupted_grid_has_every_cell_exactly_once(uninterrupted):
    table = read_metrics(uninterrupted / "smoke" / "metrics.csv")
    assert list(table.columns) == list(METRIC_COLUMNS)
    assert not table.duplicated(KEYS).any()
    spec = load_spec(SMOKE)
    per_cell = table.groupby(["variant", "dataset", "seed"]).size()
    assert len(per_cell) == len(spec.cells())
    # ranked (2 settings x 2 weights) + control (1 x EMA) + 1-step baselines (paper x 2 weights, shared x EMA),
    # each with fid, kid, clip_score, accuracy, ref_distance and straightness
    assert (per_cell == (2 * 2 + 1 + 3) * 6).all()
    roles = table.groupby("role")["setting"].unique().map(sorted).to_dict()
    assert roles == {"ranked": ["10x2@paper", "5x2@paper"], "control": ["5x2"], "baseline": ["1x2", "1x2@paper"]}
    assert set(table["protocol"]) == {"paper", "shared"}
    assert table["value"].notna().all()
    with_ci = table[table["ci_low"].notna()]
    assert set(table["metric"]) - set(with_ci["metric"]) == {"ref_distance", "straightness"}
    assert (with_ci["ci_low"] <= with_ci["ci_high"]).all()
    assert table["nfe"].isin([1, 5, 10]).all() and (table["samples"] == spec.eval.samples).all()
    assert (uninterrupted / "smoke" / "validity" / "sensitivity-synth-imagenet.json").exists()
    assert len(list((uninterrupted / "smoke" / "samples").rglob("*.png"))) == 3


@pytest.mark.slow
def test_sigkilled_sharded_workers_end_with_the_uninterrupted_table(uninterrupted, tmp_path):
    """Two shard workers run side by side; each is killed with SIGKILL at random moments three times and
    restarted; `grid collect` then gives the uninterrupted metrics.csv (wall times aside)."""
    rng = np.random.default_rng(0)
    kills = 0
    workers = {shard: None for shard in ("0/2", "1/2")}
    budget = {shard: 3 for shard in workers}
    while workers:
        for shard in list(workers):
            proc = workers[shard]
            if proc is None:
                workers[shard] = subprocess.Popen(grid_command("--results", str(tmp_path), "--shard", shard),
                                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                workers[shard].deadline = time.time() + rng.uniform(3, 15)
            elif proc.poll() is not None:
                assert proc.returncode == 0, proc.stderr.read() + "".join(
                    f.read_text() for f in (tmp_path / "smoke" / "cells").rglob("failed.json"))
                del workers[shard]
            elif budget[shard] and time.time() > proc.deadline:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                budget[shard] -= 1
                kills += 1
                workers[shard] = None
        time.sleep(0.2)
    assert kills >= 4  # a worker may finish before its third kill
    assert not (tmp_path / "smoke" / "metrics.csv").exists()  # shard workers do not write the shared table
    assert main(["grid", "collect", str(SMOKE), "--results", str(tmp_path)]) == 0
    resumed = comparable(read_metrics(tmp_path / "smoke" / "metrics.csv"))
    reference = comparable(read_metrics(uninterrupted / "smoke" / "metrics.csv"))
    assert not resumed.duplicated(KEYS).any()
    numeric = ["value", "ci_low", "ci_high"]
    pd.testing.assert_frame_equal(resumed.drop(columns=numeric), reference.drop(columns=numeric))
    np.testing.assert_allclose(resumed[numeric].to_numpy(), reference[numeric].to_numpy(), rtol=1e-3, atol=1e-6)


@pytest.mark.slow
def test_a_failing_cell_is_recorded_and_the_grid_goes_on(uninterrupted, tmp_path, capsys):
    results = tmp_path / "results"
    shutil.copytree(uninterrupted, results)
    (tmp_path / "empty").mkdir()  # a folder dataset with no captions.jsonl: its cell fails when it loads the data
    args = ["--results", str(results), "--set", 'variants=["rf/lognorm(0.00, 1.00)"]',
            "--set", f'datasets=["folder:{tmp_path / "empty"}", "synth-imagenet"]', "--no-progress"]
    assert main(["grid", "run", str(SMOKE), *args]) == 2
    captured = capsys.readouterr()
    assert "1 cell(s) failed" in captured.err and len(captured.err.strip().splitlines()) == 1
    assert main(["grid", "status", str(SMOKE), *args[:-1], "--format", "json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["counts"]["done"] == 1 and status["counts"]["failed"] == 1
    failed = next(c for c in status["cells"] if c["state"] == "failed")
    assert "captions.jsonl" in failed["reason"]
    # the done cell was not redone and its rows are in the new table
    table = read_metrics(results / "smoke" / "metrics.csv")
    assert set(table["variant"]) == {"rf/lognorm(0.00, 1.00)"} and set(table["dataset"]) == {"synth-imagenet"}


@pytest.mark.slow
def test_a_different_recipe_in_the_same_folder_is_refused(uninterrupted, capsys):
    assert main(["grid", "run", str(SMOKE), "--results", str(uninterrupted), "--set", "train.steps=41"]) == 2
    assert "another recipe (changed: steps)" in capsys.readouterr().err


@pytest.mark.slow
def test_report_regenerates_every_table_from_metrics_csv_alone(uninterrupted, tmp_path, capsys):
    metrics = tmp_path / "metrics.csv"
    shutil.copy(uninterrupted / "smoke" / "metrics.csv", metrics)
    for results in (uninterrupted, tmp_path / "elsewhere"):
        assert main(["report", str(SMOKE), "--results", str(results), "--metrics", str(metrics)]) == 0
    first, second = uninterrupted / "smoke", tmp_path / "elsewhere" / "smoke"
    for name in ("table1.csv", "table2.csv", "tables.md", "tables.tex", "compare_paper.md"):
        assert (first / name).read_text() == (second / name).read_text(), name
    table1 = pd.read_csv(first / "table1.csv")
    assert list(table1.columns) == ["variant", "family", "rank_all", "rank_5_steps", "rank_50_steps"]
    assert len(table1) == 3 and table1["rank_all"].between(1, 3).all()
    readme = (first / "README.md").read_text()
    assert "figure3.png" in readme and "rank_vs_steps.png" in readme and "Sample grids" in readme
    capsys.readouterr()
    assert main(["compare-paper", str(SMOKE), "--results", str(uninterrupted), "--format", "json"]) == 0
    comparison = json.loads(capsys.readouterr().out)
    assert len(comparison["table"]) == 16 and len(comparison["findings"]) == 6


@pytest.mark.slow
def test_demo_runs_the_spec_and_prints_table1_beside_the_paper(uninterrupted, tmp_path, capsys):
    """The demo's grid finds every cell done (a copy of the finished grid), so it reports and compares only."""
    shutil.copytree(uninterrupted, tmp_path / "demo")
    (tmp_path / "demo" / "smoke" / "README.md").unlink(missing_ok=True)  # written by the report test, if it ran first
    assert main(["demo", "--out", str(tmp_path / "demo"), "--spec", str(SMOKE), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "3 cells for shard 0/1, 3 already finished, 0 to run" in out
    assert (tmp_path / "demo" / "smoke" / "README.md").exists() and (tmp_path / "demo" / "formulations.csv").exists()
    assert "Our Table 1 beside the paper's" in out and "spearman" in out and "eps/linear" in out


@pytest.mark.slow
def test_multivariant_grid_equals_the_one_by_one_grid(uninterrupted, tmp_path):
    """The two rf/lognorm cells of the smoke spec train together in one vmapped program; eps/linear alone."""
    from trajbench.grid import stack_groups

    spec = load_spec(SMOKE, ["grid.multivariant=true"])
    assert [len(g) for g in stack_groups(spec, spec.cells())] == [2, 1]
    subprocess.run(grid_command("--results", str(tmp_path), "--set", "grid.multivariant=true"), check=True,
                   capture_output=True, text=True)
    together = comparable(read_metrics(tmp_path / "smoke" / "metrics.csv"))
    reference = comparable(read_metrics(uninterrupted / "smoke" / "metrics.csv"))
    numeric = ["value", "ci_low", "ci_high"]
    pd.testing.assert_frame_equal(together.drop(columns=numeric), reference.drop(columns=numeric))
    # the step-axis distances are differences of nearly equal samples: they amplify float-level differences
    step_axis = reference["metric"].isin(["ref_distance", "straightness"]).to_numpy()
    np.testing.assert_allclose(together["value"][step_axis], reference["value"][step_axis], rtol=2e-2, atol=1e-6)
    together, reference = together[~step_axis], reference[~step_axis]
    np.testing.assert_allclose(together[numeric].to_numpy(), reference[numeric].to_numpy(), rtol=1e-3, atol=1e-5)
