"""Choosing the judges (trajbench.metrics.judges): spec and CLI forms, identity by content, results tables that
never mix judges, and a smoke grid scored end to end by a random-weight CLIP."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from trajbench.cli import main
from trajbench.grid import METRIC_COLUMNS, GridLayout, check_recipe, read_metrics
from trajbench.metrics.clip import save_random_clip_weights
from trajbench.metrics.judges import JudgeChoiceError, identity, resolve_choice
from trajbench.spec import SpecError, load_spec

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "experiments" / "smoke.toml"


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory, tiny_clip_arch):
    return save_random_clip_weights(tmp_path_factory.mktemp("judges") / "tiny-clip.npz", tiny_clip_arch)


def test_choices_expand_variables_and_take_the_first_usable_entry(monkeypatch, tmp_path):
    monkeypatch.delenv("TRAJBENCH_INCEPTION", raising=False)
    entries = ["inception:$TRAJBENCH_INCEPTION", "inhouse"]
    assert resolve_choice(entries, "features") == "inhouse"
    monkeypatch.setenv("TRAJBENCH_INCEPTION", str(tmp_path / "inc.npz"))
    assert resolve_choice(entries, "features") == f"inception:{tmp_path / 'inc.npz'}"
    assert resolve_choice("clip:${TRAJBENCH_INCEPTION}", "clip_score") == f"clip:{tmp_path / 'inc.npz'}"
    monkeypatch.delenv("TRAJBENCH_INCEPTION")
    with pytest.raises(JudgeChoiceError, match="unset: TRAJBENCH_INCEPTION"):
        resolve_choice("inception:$TRAJBENCH_INCEPTION", "features")
    for bad, role in (("inception:x.npz", "clip_score"), ("clip", "features"), ("inhouse:x", "features"),
                      ("clip:", "features"), ("resnet:x", "features")):
        with pytest.raises(JudgeChoiceError, match=f"{role} = .* is not one of"):
            resolve_choice(bad, role)


def test_identity_is_the_content_not_the_path(clip_file, tiny_clip_arch, tmp_path):
    moved = tmp_path / "elsewhere.npz"
    shutil.copy(clip_file, moved)
    first = identity(f"clip:{clip_file}", "clip_score")
    assert first.startswith("clip:tiny:") and len(first) == len("clip:tiny:") + 16
    assert identity(f"clip:{moved}", "features") == first
    save_random_clip_weights(moved, tiny_clip_arch, seed=1)
    assert identity(f"clip:{moved}", "features") != first
    with pytest.raises(FileNotFoundError, match="nothing.npz; convert them once with: trajbench convert-weights"):
        identity(f"inception:{tmp_path / 'nothing.npz'}", "features")


def test_a_results_folder_keeps_its_judges(clip_file, tmp_path):
    inhouse = load_spec(SMOKE)
    check_recipe(GridLayout(inhouse, tmp_path))
    assert "features" not in inhouse.recipe()["eval"]  # in-house judges leave older recipes unchanged
    external = load_spec(SMOKE, [f'eval.features="clip:{clip_file}"'])
    assert external.recipe()["eval"]["features"] == identity(f"clip:{clip_file}", "features")
    with pytest.raises(SpecError, match=r"another recipe \(changed: features\)"):
        check_recipe(GridLayout(external, tmp_path))


def test_a_table_that_mixes_judges_is_refused(tmp_path):
    row = {column: 0 for column in METRIC_COLUMNS} | {"features": "inhouse", "clip_judge": "inhouse"}
    path = tmp_path / "metrics.csv"
    pd.DataFrame([row, row | {"features": "inception:0123456789abcdef"}]).to_csv(path, index=False)
    with pytest.raises(SpecError, match="mixes rows scored by different judges"):
        read_metrics(path)
    pd.DataFrame([row]).drop(columns=["features", "clip_judge"]).to_csv(path, index=False)
    assert set(read_metrics(path)["features"]) == {"inhouse"}  # a table from before judges could be chosen


def test_bad_judges_in_a_spec_are_one_line_errors(capsys):
    assert main(["grid", "run", str(SMOKE), "--dry-run", "--set", 'eval.clip_score="inception:x.npz"']) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("trajbench: error: [eval] clip_score = 'inception:x.npz' is not one of inhouse | clip:PATH")
    assert "\n" not in error


def test_cifar10_spec_scores_with_inception_when_its_variable_is_set(monkeypatch, capsys, tmp_path, cifar_folder):
    spec = ROOT / "experiments" / "cifar10.toml"
    cifar_folder(tmp_path / "cifar")  # the spec's data folder must exist when it loads
    here = [f'datasets=["cifar10:{tmp_path / "cifar"}"]']
    monkeypatch.delenv("TRAJBENCH_INCEPTION", raising=False)
    assert load_spec(spec, here).eval.features == "inhouse"
    monkeypatch.setenv("TRAJBENCH_INCEPTION", "/weights/inception.npz")
    loaded = load_spec(spec, here)
    assert loaded.eval.features == "inception:/weights/inception.npz" and loaded.train["dtype"] == "bfloat16"


@pytest.mark.slow
def test_a_grid_scored_by_clip_records_its_identity_and_keeps_its_rows(clip_file, tmp_path, capsys):
    results = tmp_path / "results"
    judge = f"clip:{clip_file}"
    small = ["--set", 'variants=["rf/lognorm(0.00, 1.00)"]', "--set", 'eval.settings=["5x2.0@paper"]',
             "--set", "eval.control_settings=[]", "--set", "eval.baseline_steps=0", "--set", "eval.samples=16",
             "--set", "eval.step_axis_samples=0", "--set", "eval.grid_images=0", "--set", "eval.n_boot=10"]
    run = ["grid", "run", str(SMOKE), "--results", str(results), *small, "--no-progress"]
    assert main([*run, "--set", f'eval.features="{judge}"', "--set", f'eval.clip_score="{judge}"']) == 0
    table = read_metrics(results / "smoke" / "metrics.csv")
    expected = identity(judge, "features")
    assert set(table["features"]) == {expected} and set(table["clip_judge"]) == {expected}
    assert {"fid", "kid", "clip_score", "accuracy"} <= set(table["metric"]) and table["value"].notna().all()
    sensitivity = json.loads((results / "smoke" / "validity" / "sensitivity-synth-imagenet.json").read_text())
    assert sensitivity["judges"] == {"features": expected, "clip_judge": expected} and sensitivity["evaluator"] is None
    same = [*run[2:-1], "--set", f'eval.features="{judge}"', "--set", f'eval.clip_score="{judge}"']
    capsys.readouterr()
    with pytest.raises(SystemExit, match="1"):  # 40 training steps: gates fail, judged relative to real images
        main(["validate", *same])
    out = capsys.readouterr().out
    assert "best-variant CLIP score / real" in out and "best-variant FID / real-vs-real" in out
    assert main(["report", *same]) == 0
    assert f"FID and KID on `{expected}` features, CLIP score by `{expected}`" in (
        results / "smoke" / "README.md").read_text()
    capsys.readouterr()

    before = (results / "smoke" / "metrics.csv").read_bytes()
    missing = tmp_path / "moved-away.npz"
    assert main([*run, "--set", f'eval.features="clip:{missing}"', "--set", f'eval.clip_score="{judge}"']) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "moved-away.npz" in error and "trajbench convert-weights clip" in error
    assert main([*run]) == 2  # the in-house judges would mix with the CLIP-scored rows
    assert "another recipe (changed: clip_score, features)" in capsys.readouterr().err
    assert (results / "smoke" / "metrics.csv").read_bytes() == before
