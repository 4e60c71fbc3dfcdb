"""`trajbench eval` end to end on a smoke run (early vs late checkpoint, JSON rows)."""

import json

import numpy as np
import pytest


def test_every_training_seed_is_scored_on_the_same_evaluation_data():
    from trajbench.data import get_dataset
    from trajbench.evaluate import evaluation_dataset
    from trajbench.run.config import resolve_config

    config = resolve_config("smoke", formulation="rf", dataset="synth-cc12m", seed=3)
    index = np.arange(16)
    scored = evaluation_dataset(config)
    assert scored.captions("val", index) == get_dataset("synth-cc12m", resolution=16, seed=0).captions("val", index)
    assert scored.captions("val", index) != get_dataset("synth-cc12m", resolution=16, seed=3).captions("val", index)




def test_a_spec_scores_ranked_control_and_one_step_baseline_settings():
    from trajbench.spec import EvalSpec

    ev = EvalSpec(settings=("5x5.0@paper", "50x5.0@paper", "50x1.0@paper"), weights=("ema", "raw"),
                  control_settings=("5x5.0",), control_weights=("ema",))
    scored = [(w, s.label, role) for w, s, role in ev.scored()]
    assert ("raw", "50x1@paper", "ranked") in scored and ("ema", "5x5", "control") in scored
    baselines = sorted((w, label) for w, label, role in scored if role == "baseline")
    assert baselines == [("ema", "1x1@paper"), ("ema", "1x5"), ("ema", "1x5@paper"), ("raw", "1x1@paper"),
                         ("raw", "1x5@paper")]
    assert ev.role_of("5x5") == "control" and ev.role_of("1x5@paper") == "baseline"
    assert not [r for r in EvalSpec(baseline_steps=0).scored() if r[2] == "baseline"]





# ---- end to end: a smoke run, scored by `trajbench eval` at an early and a late checkpoint ------------------
EVALUATOR_SMALL = ["--evaluator-set", "steps=250"]  # the retrieval-passing budget of tests/test_evaluator.py


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    from trajbench.run.config import resolve_config
    from trajbench.train import train

    out = tmp_path_factory.mktemp("smoke-run")
    config = resolve_config("smoke", ["eval_every=50", "keep_checkpoints=8"], formulation="rf/lognorm(0.00, 1.00)",
                            dataset="synth-imagenet")
    train(config, out, progress=False)
    return out


@pytest.fixture(scope="module")
def evaluator_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def eval_json(run_dir, cache, capsys, monkeypatch, *args):
    from trajbench.cli import main

    monkeypatch.setenv("TRAJBENCH_CACHE", str(cache))
    assert main(["eval", str(run_dir), "--format", "json", "--samples", "128", "--n-boot", "40", *EVALUATOR_SMALL,
                 *args]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


@pytest.mark.slow
def test_late_checkpoint_beats_early_and_real_data_beats_both(smoke_run, evaluator_cache, capsys, monkeypatch):
    from trajbench.data import get_dataset
    from trajbench.metrics import frechet_distance
    from trajbench.metrics.evaluator import load_or_train_evaluator

    early, late = (eval_json(smoke_run, evaluator_cache, capsys, monkeypatch, "--checkpoint", step,
                             "--settings", "10x2.0", "--weights", "ema")[0] for step in ("50", "last"))
    assert (early["checkpoint_step"], late["checkpoint_step"]) == (50, 400)
    print(f"early FID {early['fid']:.2f} CLIP {early['clip_score']:.3f}; late FID {late['fid']:.2f} "
          f"CLIP {late['clip_score']:.3f}")
    assert late["fid"] < early["fid"] and late["fid_ci"][1] < early["fid_ci"][0]
    assert late["clip_score"] > early["clip_score"]

    dataset = get_dataset("synth-imagenet", resolution=16)
    evaluator = load_or_train_evaluator(dataset, cache_dir=evaluator_cache / "evaluators", config={"steps": 250})
    real = evaluator.fid_features(dataset.images("val", np.arange(128)))
    reference = evaluator.fid_features(dataset.images("reference", np.arange(dataset.split_size("reference"))))
    real_fid = frechet_distance(real, reference)
    print(f"real-vs-real FID {real_fid:.2f}")
    assert real_fid < late["fid"] / 3


@pytest.mark.slow
def test_eval_json_has_one_row_per_setting_and_weights_with_cis_that_bracket_the_estimates(
        smoke_run, evaluator_cache, capsys, monkeypatch):
    rows = eval_json(smoke_run, evaluator_cache, capsys, monkeypatch, "--settings", "4x2.0", "3x2.0/heun",
                     "--weights", "ema", "raw")
    assert [(r["weights"], r["setting"]) for r in rows] == [
        (w, s) for w in ("ema", "raw") for s in ("4x2", "3x2/heun")]
    assert [r["nfe"] for r in rows] == [4, 5, 4, 5]  # cond/uncond share one batched call; Heun: 2N - 1
    for row in rows:
        for metric in ("fid", "kid", "clip_score"):
            low, high = row[f"{metric}_ci"]
            assert np.isfinite(row[metric]) and low <= row[metric] <= high and low < high, (metric, row)
        assert row["samples"] == 128
        assert row["checkpoint_step"] == json.loads((smoke_run / "best.json").read_text())["step"]


@pytest.mark.slow
def test_eval_rejects_unknown_evaluator_fields_and_checkpoints(smoke_run, capsys):
    from trajbench.cli import main

    assert main(["eval", str(smoke_run), "--evaluator-set", "depth=3"]) == 2
    assert "unknown EvaluatorConfig field" in capsys.readouterr().err
    assert main(["eval", str(smoke_run), "--checkpoint", "latest"]) == 2
    err = capsys.readouterr().err
    assert "ask for best, last" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_sample_writes_a_grid_with_its_prompts(smoke_run, tmp_path, capsys):
    from PIL import Image

    from trajbench.cli import main

    out = tmp_path / "grid.png"
    assert main(["sample", str(smoke_run), "--steps", "4", "--guidance", "2.0", "--out", str(out),
                 "--prompt", "a photo of a circle", "--prompt", "a photo of a star"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    width, height = Image.open(out).size
    assert width > 64 and height > 32  # two 16x16 samples, upscaled, with their captions and a title
    assert main(["sample", str(smoke_run), "--solver", "rk4", "--out", str(out)]) == 2
    assert "unknown solver" in capsys.readouterr().err


def test_eval_step_axis_needs_two_prompts(tmp_path, capsys):
    from trajbench.cli import main

    assert main(["eval", str(tmp_path), "--step-axis", "1"]) == 2
    assert "--step-axis 1: use 0 (off) or at least 2 prompts" in capsys.readouterr().err
