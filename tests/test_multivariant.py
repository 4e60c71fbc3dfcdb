"""Several formulations of one family trained together in one vmapped program: each run ends where it would
have alone; a diverging run stops without stopping the others; the variant axis shards over devices."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from trajbench import train as train_module
from trajbench.run.config import RunError
from trajbench.train import train, train_together

from run_helpers import (assert_same_metrics, assert_same_params, best_params, host_devices_env, metrics,
                         on_every_core)

VARIANTS = ["rf/lognorm(0.00, 1.00)", "rf/lognorm(0.50, 0.60)", "rf/lognorm(-0.50, 1.00)"]


@pytest.fixture(scope="module")
def solo_runs(tmp_path_factory, tiny_run):
    root = tmp_path_factory.mktemp("solo")
    for k, name in enumerate(VARIANTS):
        train(tiny_run(20, name), root / str(k), progress=False)
    return root


def test_runs_trained_together_equal_their_solo_runs(solo_runs, tmp_path, tiny_run):
    configs = [tiny_run(20, name) for name in VARIANTS]
    results = train_together(configs, [tmp_path / str(k) for k in range(len(VARIANTS))], progress=False)
    assert all(r["complete"] for r in results)
    for k in range(len(VARIANTS)):
        assert_same_metrics(metrics(tmp_path / str(k)), metrics(solo_runs / str(k)), rel=1e-4)
        assert_same_params(best_params(tmp_path / str(k)), best_params(solo_runs / str(k)), rtol=1e-3, atol=1e-5)
    # the folders are ordinary runs: a second call finds them done and trains nothing
    again = train_together(configs, [tmp_path / str(k) for k in range(len(VARIANTS))], progress=False)
    assert [r["wall_seconds"] for r in again] == [r["wall_seconds"] for r in results]


def test_a_diverging_lane_stops_alone(solo_runs, tmp_path, monkeypatch, tiny_run):
    """Lane 1's density parameter is made NaN: its loss is NaN from the first step, the other lanes go on."""
    stack = train_module.stack_formulations

    def poisoned(names):
        stacked = stack(names)
        return jax.tree.map(lambda leaf: leaf.at[1].set(jnp.nan), stacked)

    monkeypatch.setattr(train_module, "stack_formulations", poisoned)
    configs = [tiny_run(20, name) for name in VARIANTS]
    results = train_together(configs, [tmp_path / str(k) for k in range(len(VARIANTS))], progress=False)
    assert isinstance(results[1], RunError) and "loss became nan" in str(results[1])
    assert not (tmp_path / "1" / "done.json").exists()
    for k in (0, 2):
        assert results[k]["complete"]
        assert_same_metrics(metrics(tmp_path / str(k)), metrics(solo_runs / str(k)), rel=1e-4)


def test_only_one_family_with_one_recipe_stacks(tmp_path, tiny_run):
    with pytest.raises(RunError, match="not one family"):
        train_together([tiny_run(5, "rf"), tiny_run(5, "eps/linear")], [tmp_path / "a", tmp_path / "b"], progress=False)
    with pytest.raises(RunError, match="differ only in their formulation"):
        train_together([tiny_run(5, VARIANTS[0]), tiny_run(6, VARIANTS[1])], [tmp_path / "c", tmp_path / "d"],
                       progress=False)


SHARDED = """
import json, sys
import jax
from fixtures_data import tiny_config as tiny
from trajbench.run.trainer import Trainer
from trajbench.train import train_together
names = {names!r}
out = sys.argv[1]
assert Trainer(tiny(10, names[0]), variants=len(names)).shard_variants == (jax.device_count() > 1)
train_together([tiny(10, n) for n in names], [f"{{out}}/{{k}}" for k in range(len(names))], progress=False)
"""


@pytest.mark.slow
def test_variant_axis_sharded_over_four_devices_matches_one_device(tmp_path):
    names = VARIANTS + ["rf/lognorm(1.00, 0.60)"]
    script = SHARDED.format(names=names)
    tests = Path(__file__).parent
    for devices in (1, 4):
        env = host_devices_env(devices, PYTHONPATH=os.pathsep.join([str(tests), os.environ.get("PYTHONPATH", "")]))
        with on_every_core():
            done = subprocess.run([sys.executable, "-c", script, str(tmp_path / f"d{devices}")], env=env,
                                  capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    for k in range(len(names)):
        assert_same_metrics(metrics(tmp_path / "d4" / str(k)), metrics(tmp_path / "d1" / str(k)), rel=1e-4)
        assert json.loads((tmp_path / "d4" / str(k) / "done.json").read_text())["complete"]
