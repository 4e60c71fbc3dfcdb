"""A run's folder (trajbench.run.folder): a finished run is not redone, another config is refused, divergence
stops the run with one line and keeps its files, unreadable or missing checkpoints, a start that never reached a
checkpoint, and Ctrl-C held while a checkpoint is written."""

import json
import os
import shutil
import signal
import time

import numpy as np
import pytest

from trajbench.cli import main
from trajbench.run.config import RunError
from trajbench.train import train

from fixtures_data import TINY
from run_helpers import assert_same_metrics, metrics, strict_rows


def test_completed_run_is_not_redone_and_a_different_config_is_refused(finished_run, tiny_run):
    run, summary = finished_run
    before = (run / "metrics.jsonl").read_text()
    assert train(tiny_run(), run, progress=False) == summary and (run / "metrics.jsonl").read_text() == before
    with pytest.raises(RunError, match="different config .*lr"):
        train(tiny_run(lr=5e-4), run, progress=False)


def test_divergence_is_a_one_line_error_that_keeps_the_checkpoint(tmp_path, capsys):
    out = tmp_path / "nan"
    argv = ["train", "--formulation", "rf", "--dataset", "synth-imagenet", "--out", str(out), "--no-progress"]
    argv += [x for s in TINY + ["steps=40", "lr=1e30", "grad_clip=1e30", "warmup_steps=1"] for x in ("--set", s)]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and "diverged at step" in err and "lower lr" in err and err.count("\n") == 1
    assert not (out / "done.json").exists() and (out / "config.json").exists()


def test_unreadable_newest_checkpoint_is_set_aside_and_the_run_finishes(finished_run, tmp_path, capsys, tiny_run):
    reference, summary = finished_run
    run = tmp_path / "r"
    shutil.copytree(reference, run)
    (run / "done.json").unlink()
    for part in (run / "checkpoints" / "30" / "state" / "ocdbt.process_0" / "d").iterdir():
        part.write_bytes(part.read_bytes()[:10])
    resumed = train(tiny_run(), run, progress=False)
    assert "checkpoints/30 is unreadable" in capsys.readouterr().err
    assert resumed["complete"] and resumed["best"] == summary["best"]
    assert [p.name.split("-")[0] for p in (run / "unreadable-checkpoints").iterdir()] == ["30"]
    assert_same_metrics(metrics(run), metrics(reference))
    from trajbench.run.load import load_run

    assert load_run(run, "last").step == 30


def test_blown_up_finite_loss_is_divergence_and_the_log_stays_json(tmp_path, tiny_run):
    run = tmp_path / "big"
    with pytest.raises(RunError, match=r"diverged at step \d+ .*(grad_norm became inf|over 1000 times)"):
        train(tiny_run(steps=20, lr=1e6), run, progress=False)
    assert not (run / "done.json").exists()
    assert all(np.isfinite(r["loss"]) and np.isfinite(r["grad_norm"]) for r in strict_rows(run))


def test_resuming_after_checkpoints_were_deleted_is_refused_until_fresh(finished_run, tmp_path, tiny_run):
    reference, _ = finished_run
    run = tmp_path / "r"
    shutil.copytree(reference, run)
    (run / "done.json").unlink()
    shutil.rmtree(run / "checkpoints")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(RunError, match="no readable checkpoint .*--fresh"):
        train(tiny_run(), run, progress=False)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    assert train(tiny_run(), run, progress=False, fresh=True)["complete"]
    assert_same_metrics(metrics(run), metrics(reference))
    assert json.loads((run / "best.json").read_text()) == json.loads((reference / "best.json").read_text())


def test_a_start_that_never_reached_a_checkpoint_can_be_retried_with_a_corrected_config(tmp_path, capsys):
    out = tmp_path / "x"
    base = ["train", "--formulation", "rf", "--out", str(out), "--no-progress"]
    sets = [x for s in TINY + ["steps=10", "warmup_steps=1"] for x in ("--set", s)]
    assert main(base + ["--dataset", "imagenet"] + sets) == 2
    assert main(base + ["--dataset", "synth-imagenet"] + sets + ["--set", "width=65"]) == 2
    assert main(base + ["--dataset", "synth-imagenet"] + sets + ["--set", "lr=1e30", "--set", "grad_clip=1e30"]) == 2
    err = capsys.readouterr().err
    assert "no checkpoint was written, so the same --out takes the new config" in err and "step 0" not in err
    assert (out / "config.json").exists() and not list((out / "checkpoints").iterdir())
    assert main(base + ["--dataset", "synth-imagenet"] + sets) == 0
    assert json.loads((out / "config.json").read_text())["config"]["lr"] == 1e-3
    assert [r["step"] for r in strict_rows(out)] == [5, 10] and (out / "done.json").exists()


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs."""


@pytest.mark.parametrize("moment", ["after the first best save", "between a checkpoint and best.json"])
def test_a_kill_between_the_best_and_the_latest_checkpoint_resumes_to_the_same_run(
        finished_run, tmp_path, tiny_run, monkeypatch, moment):
    """The best checkpoint is saved before the step's checkpoint; a kill between the two (or before best.json
    follows the checkpoint) must neither block the restart nor leave best.json naming a step it lacks."""
    from trajbench.run import folder as run_folder
    from trajbench.run.load import load_run
    from run_helpers import assert_same_params, best_params

    reference, summary = finished_run
    run = tmp_path / "r"
    if moment == "after the first best save":
        def killed(self, step, state):
            raise Killed()
        monkeypatch.setattr(run_folder.RunFolder, "checkpoint", killed)
    else:
        def killed_when_writing(self):
            if self.best["step"] is not None:
                raise Killed()
        monkeypatch.setattr(run_folder.RunFolder, "_write_best", killed_when_writing)
    with pytest.raises(Killed):
        train(tiny_run(), run, progress=False)
    monkeypatch.undo()
    assert not (run / "best.json").exists() and list((run / "best").iterdir())
    assert bool(run_folder.checkpoint_steps(run)) == (moment != "after the first best save")
    resumed = train(tiny_run(), run, progress=False)
    assert resumed["complete"] and resumed["best"] == summary["best"]
    assert json.loads((run / "best.json").read_text()) == json.loads((reference / "best.json").read_text())
    assert_same_metrics(metrics(run), metrics(reference))
    assert_same_params(best_params(run), best_params(reference))
    assert load_run(run, "best").step == summary["best"]["step"]


def test_ctrl_c_while_a_checkpoint_is_written_takes_effect_after_it():
    import threading

    from trajbench.run.folder import holding_interrupts

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach the main thread only")
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    finished = []
    try:
        with pytest.raises(KeyboardInterrupt):
            with holding_interrupts():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.1)
                finished.append("the block ran to its end")
    finally:
        signal.signal(signal.SIGINT, previous)
    assert finished == ["the block ran to its end"]
