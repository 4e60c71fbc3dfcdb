"""Training runs: falling loss, exact resume after SIGKILL, 1 vs 4 devices, bad input."""

import json
import os
import shutil
import signal
import time

import numpy as np
import pytest

from trajbench.cli import main
from trajbench.run.config import RunError, resolve_config
from trajbench.train import train

from fixtures_data import TINY
from run_helpers import (assert_same_metrics, assert_same_params, best_params, cli_train, metrics,
                         strict_rows)


def test_presets_resolve_and_set_overrides():
    config = resolve_config("smoke", ["lr=3e-4", "depth=3"], formulation="rf/lognorm(0.3, 0.8)", dataset="synth-imagenet")
    assert config.lr == 3e-4 and config.depth == 3 and config.formulation == "rf/lognorm(0.30, 0.80)"
    assert resolve_config("study").lr == 1e-4 and resolve_config("study").warmup_steps == 1000
    for bad, message in [(["lr=fast"], "expected float"), (["nope=1"], "key one of"), (["eval_every=7"], "multiple")]:
        with pytest.raises(RunError, match=message):
            resolve_config("smoke", bad)
    with pytest.raises(RunError, match="unknown preset"):
        resolve_config("huge")


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


def test_completed_run_is_not_redone_and_a_different_config_is_refused(finished_run, tiny_run):
    run, summary = finished_run
    before = (run / "metrics.jsonl").read_text()
    assert train(tiny_run(), run, progress=False) == summary and (run / "metrics.jsonl").read_text() == before
    with pytest.raises(RunError, match="different config .*lr"):
        train(tiny_run(lr=5e-4), run, progress=False)


def test_text_words_sets_the_text_sequence_and_older_run_folders_still_match(finished_run, tiny_run):
    from trajbench.run.build import build_text_encoders
    from trajbench.run.config import model_config

    short = tiny_run(text_words=5)
    assert model_config(short).max_text_tokens == 10
    tokens, _ = build_text_encoders(short).encode(["a photo of a circle", "a red star to the left of a ring"])
    assert tokens.shape[1] == 10 and np.any(tokens[1, 4]) and np.any(tokens[1, 9])  # long caption cut at 5 words
    # a config.json written before text_words existed is the same config (the field had its default)
    run, summary = finished_run
    path = run / "config.json"
    record = json.loads(path.read_text())
    saved = path.read_text()
    try:
        del record["config"]["text_words"]
        path.write_text(json.dumps(record))
        assert train(tiny_run(), run, progress=False) == summary
    finally:
        path.write_text(saved)


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


def test_sigkill_then_same_command_resumes_to_the_uninterrupted_result(tmp_path):
    steps = 60
    reference = cli_train(tmp_path / "reference", steps)
    assert reference.wait(timeout=300) == 0, reference.stderr.read()
    killed = tmp_path / "killed"
    process = cli_train(killed, steps)
    deadline = time.time() + 300
    while time.time() < deadline:  # kill it once a checkpoint exists and training is under way past it
        rows = metrics(killed) if (killed / "metrics.jsonl").exists() else []
        if rows and rows[-1]["step"] >= 25:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "done.json").exists()
    resumed = cli_train(killed, steps)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    assert_same_metrics(metrics(killed), metrics(tmp_path / "reference"))
    assert_same_params(best_params(killed), best_params(tmp_path / "reference"))


def test_one_and_four_devices_give_the_same_loss_curve(tmp_path):
    runs = {}
    for devices in (1, 4):
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
        process = cli_train(tmp_path / f"d{devices}", 20, env=env)
        assert process.wait(timeout=300) == 0, process.stderr.read()
        runs[devices] = metrics(tmp_path / f"d{devices}")
    assert_same_metrics(runs[4], runs[1], rel=1e-4)


def test_divergence_is_a_one_line_error_that_keeps_the_checkpoint(tmp_path, capsys):
    out = tmp_path / "nan"
    argv = ["train", "--formulation", "rf", "--dataset", "synth-imagenet", "--out", str(out), "--no-progress"]
    argv += [x for s in TINY + ["steps=40", "lr=1e30", "grad_clip=1e30", "warmup_steps=1"] for x in ("--set", s)]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and "diverged at step" in err and "lower lr" in err and err.count("\n") == 1
    assert not (out / "done.json").exists() and (out / "config.json").exists()


def test_unknown_formulation_or_dataset_fails_before_training(tmp_path, capsys):
    code = main(["train", "--formulation", "rf/lognorm(0.0)", "--dataset", "synth-cc12m", "--out", str(tmp_path / "a")])
    assert code == 2 and "takes 2 parameter" in capsys.readouterr().err
    code = main(["train", "--formulation", "rf", "--dataset", "imagenet", "--out", str(tmp_path / "b")])
    assert code == 2 and "unknown dataset" in capsys.readouterr().err


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
