"""The training loop (trajbench.train): falling loss and the best checkpoint, exact resume after a stop or a
SIGKILL."""

import json
import signal
import time

import numpy as np

from trajbench.train import train

from run_helpers import assert_same_metrics, assert_same_params, best_params, cli_train, metrics


def test_run_trains_logs_and_marks_the_best_checkpoint(finished_run):
    run, summary = finished_run
    rows = metrics(run)
    assert [r["step"] for r in rows] == [5, 10, 15, 20, 25, 30]
    assert all(np.isfinite(r["loss"]) for r in rows) and rows[-1]["loss"] < rows[0]["loss"]
    evals = [r for r in rows if "ema_val_loss" in r]
    assert [r["step"] for r in evals] == [10, 20, 30] and all(len(r["ema_val_loss_at_t"]) == 8 for r in evals)
    best = json.loads((run / "best.json").read_text())
    assert best["ema_val_loss"] == min(r["ema_val_loss"] for r in evals)
    assert best["step"] == min(evals, key=lambda r: r["ema_val_loss"])["step"]
    assert set(best_params(run)) == {"params", "ema"}
    assert summary["complete"] and (run / "done.json").exists() and any((run / "tb").iterdir())


def test_stop_and_resume_gives_identical_results(finished_run, tmp_path, tiny_run):
    run, _ = finished_run
    train(tiny_run(), tmp_path / "r", progress=False, stop_after=15)
    assert not (tmp_path / "r" / "done.json").exists()
    train(tiny_run(), tmp_path / "r", progress=False)
    assert metrics(tmp_path / "r") == metrics(run)
    resumed, reference = best_params(tmp_path / "r"), best_params(run)
    import jax

    for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(reference)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def wait_for_logged_step(run, step: int, timeout: float = 300) -> None:
    """Return once the run in ``run`` has logged ``step`` or a later one."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        rows = metrics(run) if (run / "metrics.jsonl").exists() else []
        if rows and rows[-1]["step"] >= step:
            return
        time.sleep(0.05)
    raise TimeoutError(f"{run} logged no step >= {step} in {timeout} s")


def test_sigkill_then_same_command_resumes_to_the_uninterrupted_result(tmp_path):
    steps = 60
    reference = cli_train(tmp_path / "reference", steps)
    assert reference.wait(timeout=300) == 0, reference.stderr.read()
    killed = tmp_path / "killed"
    process = cli_train(killed, steps)
    wait_for_logged_step(killed, 25)  # kill it once a checkpoint exists and training is under way past it
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "done.json").exists()
    resumed = cli_train(killed, steps)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    assert_same_metrics(metrics(killed), metrics(tmp_path / "reference"))
    assert_same_params(best_params(killed), best_params(tmp_path / "reference"))


def test_sigterm_checkpoints_at_the_next_logged_step_and_the_same_command_resumes_to_the_same_result(tmp_path):
    """SIGTERM (preemption) loses nothing: the run stops at the logged step after the signal with a checkpoint
    there (eval_every is 10, so it is usually not an eval step), exits 143, and resumes to the uninterrupted run."""
    steps = 60
    reference = cli_train(tmp_path / "reference", steps)
    assert reference.wait(timeout=300) == 0, reference.stderr.read()
    stopped = tmp_path / "stopped"
    process = cli_train(stopped, steps)
    wait_for_logged_step(stopped, 25)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 143, process.stderr.read()
    assert "run the same command again to resume" in process.stderr.read()
    last_logged = metrics(stopped)[-1]["step"]
    assert last_logged < steps and not (stopped / "done.json").exists()
    assert max(int(p.name) for p in (stopped / "checkpoints").iterdir() if p.name.isdigit()) == last_logged
    resumed = cli_train(stopped, steps)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    assert_same_metrics(metrics(stopped), metrics(tmp_path / "reference"))
    assert_same_params(best_params(stopped), best_params(tmp_path / "reference"))
