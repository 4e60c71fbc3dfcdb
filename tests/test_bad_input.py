"""Bad input to every command: exit non-zero with one line on stderr naming the problem and the fix, and leave
every file that existed before untouched."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from trajbench.cli import main

from fixtures_data import tiny_settings

SPEC = str(Path(__file__).resolve().parents[1] / "experiments" / "smoke.toml")
TINY = tiny_settings(eval_every=5, steps=10)
TRAIN = ["train", "--formulation", "rf", "--dataset", "synth-imagenet", "--no-progress"] + [
    x for s in TINY for x in ("--set", s)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished tiny run, trained by the same command the cases use."""
    run = tmp_path_factory.mktemp("trained") / "run"
    assert main(TRAIN + ["--out", str(run)]) == 0
    return run


def garbage(*parts):
    """A setup that overwrites ``ws/<parts>`` with text that is not JSON."""
    def setup(ws):
        path = ws.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{not json")
    return setup


def empty_metrics(ws):
    from trajbench.grid import METRIC_COLUMNS

    (ws / "empty.csv").write_text(",".join(METRIC_COLUMNS) + "\n")


def smoke_cell(ws) -> Path:
    from trajbench.grid import GridLayout
    from trajbench.spec import load_spec

    spec = load_spec(SPEC)
    return GridLayout(spec, ws / "res").cell_dir(spec.cells()[0]).relative_to(ws)


def garbage_cell_file(name):
    def setup(ws):
        garbage(*smoke_cell(ws).parts, name)(ws)
    return setup


def no_checkpoints(ws):
    (ws / "run" / "done.json").unlink()
    shutil.rmtree(ws / "run" / "checkpoints")


# (id, argv ("{ws}" is the case's folder, which holds a copy of the trained run as run/), setup, problem, fix)
CASES = [
    ("dtype", TRAIN + ["--set", "dtype=float8", "--out", "{ws}/x"], None, "dtype must be one of", "float32"),
    ("width", TRAIN + ["--set", "width=65", "--out", "{ws}/x"], None, "width 65 must be divisible by 4", "--set"),
    ("patch", TRAIN + ["--set", "patch_size=3", "--out", "{ws}/x"], None, "not divisible by patch_size 3", "--set"),
    ("lr-zero", TRAIN + ["--set", "lr=0", "--out", "{ws}/x"], None, "lr must be", "positive finite"),
    ("lr-nan", TRAIN + ["--set", "lr=nan", "--dry-run", "--out", "{ws}/x"], None, "lr must be", "positive finite"),
    ("int-text", TRAIN + ["--set", "steps=abc", "--out", "{ws}/x"], None, "steps='abc'", "expected int"),
    ("unknown-key", TRAIN + ["--set", "nope=1", "--out", "{ws}/x"], None, "'nope=1'", "key one of"),
    ("no-value", TRAIN + ["--set", "steps", "--out", "{ws}/x"], None, "'steps'", "expected key=value"),
    ("eval-every", TRAIN + ["--set", "eval_every=7", "--out", "{ws}/x"], None, "eval_every", "multiple of"),
    ("dataset", TRAIN + ["--dataset", "imagenet", "--dry-run", "--out", "{ws}/x"], None, "unknown dataset",
     "did you mean 'synth-imagenet'"),
    ("dataset-folder", TRAIN + ["--dataset", "folder:{ws}/nope", "--dry-run", "--out", "{ws}/x"], None,
     "image folder not found", "captions.jsonl"),
    ("nan-param", TRAIN + ["--formulation", "edm(nan, 1)", "--dry-run", "--out", "{ws}/x"], None,
     "'edm(nan, 1)'", "finite numbers"),
    ("param-count", TRAIN + ["--formulation", "rf/lognorm(0.0)", "--out", "{ws}/x"], None, "takes 2 parameter",
     "e.g."),
    ("formulation", TRAIN + ["--formulation", "rf/lognrm(0.00, 1.00)", "--out", "{ws}/x"], None,
     "unknown formulation", "closest valid names"),
    ("preset", TRAIN + ["--preset", "huge", "--out", "{ws}/x"], None, "invalid choice: 'huge'", "--help"),
    ("out-file", TRAIN + ["--out", "{ws}/run/config.json"], None, "is a file", "choose another --out"),
    ("other-config", TRAIN + ["--set", "lr=5e-4", "--out", "{ws}/run"], None, "different config (lr)", "--fresh"),
    ("other-config-dry", TRAIN + ["--set", "lr=5e-4", "--dry-run", "--out", "{ws}/run"], None,
     "different config (lr)", "--fresh"),
    ("done-json", TRAIN + ["--out", "{ws}/run"], garbage("run", "done.json"), "done.json is not valid JSON",
     "delete it"),
    ("no-checkpoints", TRAIN + ["--out", "{ws}/run"], no_checkpoints, "no readable checkpoint", "--fresh"),
    ("sample-n", ["sample", "{ws}/run", "-n", "0", "--out", "{ws}/s.png"], None, "argument -n", ">= 1"),
    ("sample-steps", ["sample", "{ws}/run", "--steps", "0", "--out", "{ws}/s.png"], None, "argument --steps",
     ">= 1"),
    ("best-json", ["sample", "{ws}/run", "--out", "{ws}/s.png"], garbage("run", "best.json"),
     "best.json is not valid JSON", "--checkpoint last"),
    ("not-a-run", ["sample", "{ws}/nothing", "--out", "{ws}/s.png"], None, "is not a training run",
     "trajbench train"),
    ("no-such-step", ["sample", "{ws}/run", "--checkpoint", "7", "--out", "{ws}/s.png"], None,
     "keeps checkpoints at steps", "ask for best, last"),
    ("out-folder", ["sample", "{ws}/run", "--out", "{ws}/run"], None, "is a folder", "give a file name"),
    ("eval-samples", ["eval", "{ws}/run", "--samples", "0"], None, "argument --samples", ">= 1"),
    ("eval-n-boot", ["eval", "{ws}/run", "--n-boot", "0"], None, "argument --n-boot", ">= 1"),
    ("evaluator-set", ["eval", "{ws}/run", "--evaluator-set", "steps=abc", "--samples", "4", "--settings", "2x1.0",
                       "--weights", "ema"], None, "steps must be an integer", "got 'abc'"),
    ("evaluator-set-form", ["eval", "{ws}/run", "--evaluator-set", "steps"], None, "'steps'", "expected key=value"),
    ("step-axis", ["eval", "{ws}/run", "--step-axis", "1"], None, "--step-axis 1", "use 0 (off) or at least 2"),
    ("spec-width", ["grid", "run", SPEC, "--set", "train.width=32.5", "--dry-run"], None,
     "width must be an integer", "32.5"),
    ("spec-samples", ["grid", "run", SPEC, "--set", 'eval.samples="many"', "--dry-run"], None,
     "samples must be an integer", "'many'"),
    ("spec-steps", ["grid", "run", SPEC, "--set", 'train.steps="abc"', "--dry-run"], None,
     "steps must be an integer", "'abc'"),
    ("spec-lr", ["grid", "run", SPEC, "--set", 'train.lr="fast"', "--dry-run"], None, "lr must be a number",
     "'fast'"),
    ("spec-file", ["grid", "run", "{ws}/nope.toml", "--dry-run"], None, "nope.toml not found", "experiments/"),
    ("shard", ["grid", "run", SPEC, "--shard", "3/2", "--dry-run"], None, "--shard '3/2'", "0 <= i < n"),
    ("report-empty", ["report", SPEC, "--results", "{ws}/res", "--metrics", "{ws}/empty.csv"], empty_metrics,
     "has no rows", "grid status"),
    ("compare-empty", ["compare-paper", SPEC, "--results", "{ws}/res", "--metrics", "{ws}/empty.csv"],
     empty_metrics, "has no rows", "--retry-failed"),
    ("failed-json", ["grid", "status", SPEC, "--results", "{ws}/res"], garbage_cell_file("failed.json"),
     "failed.json is not valid JSON", "--retry-failed"),
    ("cell-done-json", ["grid", "collect", SPEC, "--results", "{ws}/res"], garbage_cell_file("done.json"),
     "done.json is not valid JSON", "rerun the grid"),
    ("plot-out", ["plot", "densities", "--out", "{ws}/run", "rf"], None, "is a folder", "give a file name"),
    ("family", ["list", "--family", "ddpm"], None, "no formulation in family 'ddpm'", "families are"),
    ("preview", ["data", "preview", "imagenet", "--out", "{ws}/p.png"], None, "unknown dataset", "valid names"),
]


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): hashlib.sha1(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("argv, setup, problem, fix", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_naming_the_problem_and_the_fix(argv, setup, problem, fix, trained, tmp_path, capsys):
    shutil.copytree(trained, tmp_path / "run")
    if setup:
        setup(tmp_path)
    before = snapshot(tmp_path)
    try:
        code = main([a.replace("{ws}", str(tmp_path)) for a in argv])
    except SystemExit as exit_:  # argparse
        code = exit_.code
    err = capsys.readouterr().err
    assert code != 0 and err.count("\n") == 1 and err.startswith("trajbench"), err
    assert problem in err and fix in err, err
    after = snapshot(tmp_path)
    assert {path: after.get(path) for path in before} == before


def test_the_table_covers_at_least_thirty_cases():
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)


def test_ctrl_c_during_training_exits_quietly_with_the_resume_hint(monkeypatch, tmp_path, capsys):
    import trajbench.train

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(trajbench.train, "train", interrupted)
    assert main(TRAIN + ["--out", str(tmp_path / "x")]) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "interrupted" in err and "same command again to resume" in err
