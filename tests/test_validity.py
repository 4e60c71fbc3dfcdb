"""Validity: the evaluator's sensitivity table, the gates and `trajbench validate`, the step-axis measurements."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trajbench.cli import main
from trajbench.grid import METRIC_COLUMNS
from trajbench.validity import (
    SENSITIVITY_VERSION,
    check_gates,
    disturbances,
    sensitivity_path,
    swapped_captions,
)

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "experiments" / "smoke.toml"
VARIANTS = ["rf/lognorm(0.00, 1.00)", "rf", "eps/linear"]


def sensitivity(**changes) -> dict:
    rows = {"real": (1.0, 0.90, 0.99), "blur 0.5 px": (3.0, 0.88, 0.98), "blur 1 px": (13.0, 0.8, 0.8),
            "blur 2 px": (60.0, 0.5, 0.3), "noise 0.1": (2.0, 0.89, 0.97), "noise 0.3": (12.0, 0.8, 0.88),
            "noise 0.6": (60.0, 0.6, 0.4), "flat mean colour": (85.0, 0.2, 0.1), "pixel shuffle": (90.0, 0.1, 0.13),
            "captions swapped": (None, 0.05, None)}
    rows |= changes
    return {"version": SENSITIVITY_VERSION, "n": 32, "rows": [
        {"disturbance": k, "fid": f, "clip_score": c, "accuracy": a} for k, (f, c, a) in rows.items()]}


def metrics_table(*, fid50=(5.0, 7.0, 9.0), fid1=20.0, clip=0.8, accuracy=0.95, seed_noise=0.1) -> pd.DataFrame:
    """A long-form table as the grid writes it: three variants x two seeds, ranked 5- and 50-step settings and
    the 1-step baseline, EMA weights, on synth-imagenet."""
    rows = []
    for v, variant in enumerate(VARIANTS):
        for seed in (0, 1):
            jitter = seed_noise * (1 if seed else -1)
            for steps, role in ((5, "ranked"), (50, "ranked"), (1, "baseline")):
                fid = {1: fid1, 5: fid50[v] * 1.2, 50: fid50[v]}[steps] + jitter
                values = {"fid": fid, "clip_score": clip - 0.05 * v + jitter / 100, "accuracy": accuracy - 0.1 * v}
                for metric, value in values.items():
                    rows.append({"spec": "smoke", "variant": variant, "family": variant.split("(")[0],
                                 "dataset": "synth-imagenet", "seed": seed, "weights": "ema",
                                 "setting": f"{steps}x5@paper", "steps": steps, "guidance": 5.0, "sampler": "ddim",
                                 "coordinates": "native", "protocol": "paper", "role": role, "nfe": steps,
                                 "metric": metric, "value": value, "ci_low": value, "ci_high": value, "samples": 32})
    return pd.DataFrame(rows).reindex(columns=list(METRIC_COLUMNS))


def failing(gates) -> list[str]:
    return [g.name for g in gates if not g.passed]


def test_gates_pass_on_a_valid_study():
    gates = check_gates(metrics_table(), {"synth-imagenet": sensitivity()}, 5.0)
    assert not failing(gates), [g.line() for g in gates]
    best = next(g for g in gates if g.name == "best-variant FID")
    assert best.value == pytest.approx(5.0 - 0.0) and "rf/lognorm(0.00, 1.00) at 50x5@paper" in best.detail
    median = next(g for g in gates if g.name.startswith("median FID"))  # 20 / (5, 7, 9): eps/linear lowest
    assert median.value == pytest.approx(20 / 7) and "0 under 2 (lowest eps/linear: 2.22)" in median.detail


@pytest.mark.parametrize("table, table_changes, gate", [
    (dict(clip=0.6), {}, "best-variant CLIP score"),
    (dict(accuracy=0.8), {}, "best-variant recognisability / real"),
    (dict(fid50=(9.0, 9.5, 9.9)), {}, "best-variant FID"),
    (dict(fid1=12.0), {}, "median FID(1 step) / FID(50 steps)"),
    (dict(seed_noise=2.0), {}, "discrimination (variant spread / seed std, worst setting)"),
    ({}, {"blur 2 px": (10.0, 0.5, 0.3)}, "evaluator sensitivity: non-monotone disturbances"),
    ({}, {"captions swapped": (None, 0.95, None)}, "evaluator sensitivity: non-monotone disturbances"),
    ({}, {"blur 1 px": (9.0, 0.8, 0.8), "blur 0.5 px": (2.0, 0.88, 0.98)}, "evaluator: FID(blur 1 px) / FID(real)"),
])
def test_each_gate_fails_alone_and_says_why(table, table_changes, gate):
    gates = check_gates(metrics_table(**table), {"synth-imagenet": sensitivity(**table_changes)}, 5.0)
    assert failing(gates) == [gate]
    line = next(g.line() for g in gates if g.name == gate)
    assert line.startswith(f"FAIL synth-imagenet: {gate} = ") and "needs" in line and "\n" not in line


def test_one_seed_cannot_show_discrimination():
    one_seed = metrics_table()
    gates = check_gates(one_seed[one_seed["seed"] == 0], {"synth-imagenet": sensitivity()}, 5.0)
    assert failing(gates) == ["discrimination (variant spread / seed std, worst setting)"]


def write_results(root: Path, table: pd.DataFrame, sens: dict) -> None:
    """The grid's files for ``table``, with ``sens`` stored as the smoke spec's sensitivity table (made with its
    judge networks' configs, so `validate` reads it rather than computing its own)."""
    from trajbench.spec import load_spec

    folder = root / "smoke"
    folder.mkdir(parents=True)
    table.to_csv(folder / "metrics.csv", index=False)
    path = sensitivity_path(folder, "synth-imagenet")
    path.parent.mkdir()
    ev = load_spec(SMOKE).eval
    path.write_text(json.dumps(sens | {"configs": {n: ev.judge_config(n, "synth-imagenet") for n in ev.JUDGE_NETWORKS}}))


def test_the_stored_sensitivity_table_is_recomputed_when_a_judge_networks_config_changes(monkeypatch, tmp_path):
    import trajbench.evaluate
    import trajbench.validity
    from trajbench.spec import load_spec
    from trajbench.validity import ensure_sensitivity

    computed = []

    def fake_sensitivity(judges, n, *, seed=0):
        computed.append(judges.options["evaluator_config"])
        return {"version": SENSITIVITY_VERSION, "n": n, "judges": {"features": "inhouse", "clip_judge": "inhouse"},
                "rows": []}

    class FakeJudges:
        def __init__(self, dataset, **options):
            self.options = options

    monkeypatch.setattr(trajbench.evaluate, "Judges", FakeJudges)
    monkeypatch.setattr(trajbench.validity, "evaluator_sensitivity", fake_sensitivity)
    for steps in (3, 3, 5):
        ensure_sensitivity(load_spec(SMOKE, [f"eval.evaluator.steps={steps}"]), tmp_path, "synth-imagenet")
    assert [config["steps"] for config in computed] == [3, 5]  # the second call read the stored table


def test_a_grid_with_cells_still_to_score_fails_completeness():
    from trajbench.spec import Cell

    cells = [Cell(v, d, s) for d in ("synth-imagenet", "synth-cc12m") for v in VARIANTS for s in (0, 1)]
    table = metrics_table()
    partial = table[(table["variant"] != "rf") | (table["seed"] != 1)]
    gates = check_gates(partial, {"synth-imagenet": sensitivity()}, 5.0, cells)
    assert failing(gates) == ["cells scored / the spec's cells"] * 2
    assert [g.dataset for g in gates if not g.passed] == ["synth-imagenet", "synth-cc12m"]
    assert "5 of 6 cells; 1 not scored yet" in gates[0].line() and gates[0].value == pytest.approx(5 / 6)
    assert [g.dataset for g in gates].count("synth-cc12m") == 1  # a dataset with no rows: that gate alone
    whole = check_gates(table, {"synth-imagenet": sensitivity()}, 5.0, cells[:6])
    assert not failing(whole) and whole[0].detail == "6 of 6 cells"
    foreign = check_gates(table, {"synth-imagenet": sensitivity()}, 5.0, cells[6:])
    assert "the table is another spec's" in next(g.line() for g in foreign if g.dataset == "synth-imagenet"
                                                 and g.name.startswith("cells"))


def test_validate_exits_0_1_2(tmp_path, capsys):
    spec_of_the_table = ["--set", "report.curve_guidance=5.0", "--set", "seeds=[0, 1]",
                         "--set", "variants=" + json.dumps(VARIANTS)]
    write_results(tmp_path / "good", metrics_table(), sensitivity())
    assert main(["validate", str(SMOKE), "--results", str(tmp_path / "good"), *spec_of_the_table]) == 0
    out = capsys.readouterr().out
    assert "evaluator sensitivity, synth-imagenet" in out and "8 of 8 gates pass" in out
    write_results(tmp_path / "bad", metrics_table(clip=0.5), sensitivity())
    with pytest.raises(SystemExit) as exit_:
        main(["validate", str(SMOKE), "--results", str(tmp_path / "bad"), *spec_of_the_table])
    assert exit_.value.code == 1
    out = capsys.readouterr().out
    assert "FAIL synth-imagenet: best-variant CLIP score = 0.5 (needs >= 0.65)" in out and "1 FAIL" in out
    with pytest.raises(SystemExit) as exit_:  # the smoke spec's own cells: one variant and a seed not scored
        main(["validate", str(SMOKE), "--results", str(tmp_path / "good"), "--set", "report.curve_guidance=5.0"])
    assert exit_.value.code == 1
    assert "FAIL synth-imagenet: cells scored / the spec's cells = 0.6667 (needs >= 1); 2 of 3 cells" in \
        capsys.readouterr().out
    assert main(["validate", str(SMOKE), "--results", str(tmp_path / "none")]) == 2
    assert "run `trajbench grid run SPEC`" in capsys.readouterr().err
    assert main(["validate", str(tmp_path / "missing.toml")]) == 2


def test_disturbances_keep_shapes_and_swapped_captions_differ():
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (6, 8, 8, 3)).astype(np.float32)
    out = disturbances(images)
    assert list(out)[0] == "real" and all(v.shape == images.shape for v in out.values())
    assert np.allclose(np.sort(out["pixel shuffle"].reshape(6, -1, 3), axis=1), np.sort(images.reshape(6, -1, 3), axis=1))
    assert np.allclose(out["flat mean colour"].std(axis=(1, 2)), 0, atol=1e-6)
    captions = ["a", "a", "b", "c", "c", "b"]
    swapped = swapped_captions(captions)
    assert all(s != c for s, c in zip(swapped, captions)) and sorted(set(swapped)) == ["a", "b", "c"]


# ---- the step axis ------------------------------------------------------------------------------------------
def test_straightness_is_zero_for_a_straight_path_and_positive_for_a_bent_one():
    from trajbench.stepaxis import relative_distance, straightness

    s = np.linspace(1.0, 0.0, 11)
    start, end = np.ones((4, 3)), -np.ones((4, 3))
    straight = np.stack([end + (start - end) * si for si in s])
    assert straightness(straight, s) == pytest.approx(0.0, abs=1e-12)
    bent = straight + np.sin(np.pi * s)[:, None, None] * np.array([1.0, -1.0, 0.5])
    assert straightness(bent, s) > 0.1
    ref = np.random.default_rng(0).normal(size=(5, 4, 4, 2))
    assert relative_distance(ref, ref) == 0.0 and relative_distance(np.roll(ref, 1, 0), ref) == pytest.approx(1.0)


@pytest.mark.parametrize("coordinates, solver", [("rf", "euler"), ("native", "ddim")])
def test_sample_path_ends_where_sample_does(coordinates, solver):
    import jax

    from trajbench import formulations
    from trajbench.samplers import sample, sample_path, time_grid

    formulation = formulations.get("edm(-1.20, 1.20)")
    model_fn = lambda z, c: 0.3 * z  # noqa: E731 - any network output
    noise = jax.random.normal(jax.random.key(0), (3, 4, 4, 2))
    grid = time_grid(6)
    x0, _ = sample(formulation, model_fn, noise, grid, solver=solver, coordinates=coordinates)
    end, ys, s = sample_path(formulation, model_fn, noise, grid, solver=solver, coordinates=coordinates)
    np.testing.assert_allclose(np.asarray(end), np.asarray(x0), rtol=1e-5, atol=1e-5)
    assert ys.shape == (7, 3, 4, 4, 2) and s.shape == (7,) and bool(np.all(np.diff(np.asarray(s)) <= 0))
