"""A finished run read back (trajbench.run.load): its best and last checkpoints, and steps it does not keep."""

import json

import pytest

from trajbench.run.config import RunError

from run_helpers import assert_same_params, best_params


def test_load_run_reads_best_last_and_refuses_missing_steps(finished_run):
    from trajbench.run.load import load_run

    run, _ = finished_run
    best = load_run(run, "best")
    assert best.step == json.loads((run / "best.json").read_text())["step"]
    reference = best_params(run)
    assert_same_params(best.weights["ema"], reference["ema"], rtol=0, atol=0)
    assert_same_params(best.weights["raw"], reference["params"], rtol=0, atol=0)
    assert load_run(run, "last").step == 30
    with pytest.raises(RunError, match="keeps checkpoints at steps"):
        load_run(run, 5)
