"""Is a study valid? Evidence that its models learned their data and that its evaluator can tell.

A ranking means what the paper's means only if (1) the evaluator gets worse on worse images, (2) the models
generate recognisable data, (3) more sampling steps buy something over the conditional mean, and (4) the
variants differ by more than seed noise. This module computes that evidence from what the grid stores
(``metrics.csv`` and ``validity/sensitivity-<dataset>.json``) and checks it against fixed gates.

Evaluator sensitivity (per dataset, :func:`evaluator_sensitivity`): the first ``n`` held-out ``val`` images,
scored as generated images are (same count, same reference split), clean and under graded disturbances:
Gaussian blur (sigma 0.5, 1, 2 px), additive Gaussian noise (std 0.1, 0.3, 0.6, clipped), each image replaced by
its mean colour, its pixels shuffled, and (CLIP score only) captions swapped between images. FID must rise and
CLIP score fall along each graded series, and every disturbance must score worse than the clean images.

Gates (:func:`check_gates`), per dataset, on the ranked protocol, EMA weights:

* ``best variant``: the variant with the lowest mean non-dominated rank over the most-step ranked settings; at
  its most-step setting of the curve guidance it needs CLIP score >= 0.65, recognisability (``accuracy``) >= 90 %
  of real images', FID <= FID_BOUND[dataset]; the CLIP and FID bounds are calibrated on the in-house evaluator,
  so with an external judge (``[eval] features`` / ``clip_score``) they become ratios to the real images' scores
  in the sensitivity table: CLIP score >= 90 % of real images', FID <= 3 x the real-vs-reference FID at the same
  sample count (starting values, not yet calibrated on a real study);
* ``conditional mean``: the median over variants of FID(baseline steps) / FID(most steps) >= 2 (one Euler step
  returns the conditional mean; a model whose many-step samples are not far better learned nothing beyond it);
* ``discrimination``: for FID and CLIP score in every ranked setting, the spread of the variants' seed means
  over the pooled seed-to-seed std >= 3 (needs >= 2 seeds);
* ``evaluator``: the sensitivity table is monotone, and real images blurred by 1 px score an FID >= 10 x the
  clean real images' FID;
* ``completeness`` (when the spec's cells are given): every cell of the spec on the dataset is in the table, so
  gates over a grid still running do not pass on the cells that happen to be done.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from trajbench.errors import UserError
from trajbench.files import write_json_atomic
from trajbench.metrics.judges import INHOUSE_JUDGES
from trajbench.tabletext import to_markdown

SENSITIVITY_VERSION = 1
BLUR_PX = (0.5, 1.0, 2.0)
NOISE_STD = (0.1, 0.3, 0.6)

MIN_CLIP = 0.65
MIN_ACCURACY_OF_REAL = 0.90
FID_BOUND = {"synth-imagenet": 8.0, "synth-cc12m": 12.0}
"""synth-cc12m's bound is looser: its scenes hold 1-3 objects with attribute binding, and its real-vs-real FID
floor at the same sample count is higher (both are printed by ``trajbench validate``)."""
DEFAULT_FID_BOUND = 8.0
MIN_BASELINE_RATIO = 2.0
MIN_DISCRIMINATION = 3.0
MIN_BLUR_OVER_REAL = 10.0
MIN_CLIP_OF_REAL = 0.90  # external CLIP judges: best-variant CLIP score / real images'
MAX_FID_OVER_REAL = 3.0  # external feature judges: best-variant FID / real-vs-reference FID


class ValidityError(UserError):
    """Validity cannot be judged (no results, no sensitivity table): one line saying what is missing."""


# ---- evaluator sensitivity -------------------------------------------------------------------------------


def disturbances(images: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """The disturbed copies of ``images`` ([N, H, W, 3] in [-1, 1]), in table order."""
    from trajbench.metrics.report import blur

    rng = np.random.default_rng(seed)
    out = {"real": images}
    out |= {f"blur {s:g} px": blur(images, s) for s in BLUR_PX}
    out |= {f"noise {s:g}": np.clip(images + rng.normal(0.0, s, images.shape), -1, 1).astype(np.float32)
            for s in NOISE_STD}
    out["flat mean colour"] = np.broadcast_to(images.mean(axis=(1, 2), keepdims=True), images.shape).astype(np.float32)
    n, h, w, c = images.shape
    flat = images.reshape(n, h * w, c)
    out["pixel shuffle"] = np.stack([f[rng.permutation(h * w)] for f in flat]).reshape(images.shape)
    return out


SERIES = {"blur": ["real", *(f"blur {s:g} px" for s in BLUR_PX)],
          "noise": ["real", *(f"noise {s:g}" for s in NOISE_STD)]}


def swapped_captions(captions: list[str], seed: int = 0) -> list[str]:
    """Each caption replaced by one of another image with a DIFFERENT caption (a derangement over captions)."""
    rng = np.random.default_rng(seed)
    captions = list(captions)
    out = []
    for i, caption in enumerate(captions):
        others = [j for j in range(len(captions)) if captions[j] != caption]
        out.append(captions[others[rng.integers(len(others))]] if others else caption)
    return out


def evaluator_sensitivity(judges, n: int, *, seed: int = 0) -> dict:
    """FID, CLIP score and recognisability of ``n`` held-out real images under each disturbance (a JSON-able
    dict; ``judges`` is a :class:`trajbench.evaluate.Judges`)."""
    prompts = judges.prompts("val", n)
    images = judges.dataset.images("val", np.arange(len(prompts["captions"])))
    rows = []
    for name, disturbed in disturbances(images, seed).items():
        scores = judges.score(disturbed, prompts, n_boot=2, seed=seed)
        rows.append({"disturbance": name, "fid": scores["fid"], "clip_score": scores["clip_score"],
                     "accuracy": scores.get("accuracy")})
    swapped = judges.clip_net.clip_score(images, swapped_captions(prompts["captions"], seed))
    rows.append({"disturbance": "captions swapped", "fid": None, "clip_score": float(swapped), "accuracy": None})
    return {"version": SENSITIVITY_VERSION, "dataset": judges.dataset.spec(), "n": len(images),
            "evaluator": judges.evaluator.key if judges.evaluator else None, "judges": judges.identity, "rows": rows}



def sensitivity_path(root: Path, dataset: str) -> Path:
    return Path(root) / "validity" / f"sensitivity-{dataset.replace(':', '_').replace('/', '_')}.json"


def ensure_sensitivity(spec, root: Path, dataset: str, *, cache_dir=None) -> dict:
    """The stored sensitivity table of ``dataset`` in a grid's results folder, computed and written once."""
    from trajbench.evaluate import EVALUATION_SEED, Judges
    from trajbench.data import get_dataset

    path = sensitivity_path(root, dataset)
    ev = spec.eval
    configs = {network: ev.judge_config(network, dataset) for network in ev.JUDGE_NETWORKS}
    if path.exists():
        stored = json.loads(path.read_text())
        if (stored.get("version") == SENSITIVITY_VERSION and stored.get("n") == ev.sensitivity_samples
                and stored.get("judges", INHOUSE_JUDGES) == ev.judges()
                and stored.get("configs", dict.fromkeys(configs)) == _plain_json(configs)):
            return stored
    config = spec.train_config(next(c for c in spec.cells() if c.dataset == dataset))
    judges = Judges(get_dataset(dataset, resolution=config.resolution, seed=EVALUATION_SEED), cache_dir=cache_dir,
                    **ev.judge_options(dataset))
    table = evaluator_sensitivity(judges, ev.sensitivity_samples, seed=ev.seed) | {"configs": configs}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, table)
    return table


def _plain_json(value):
    """``value`` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(value))


def sensitivity_frame(table: dict) -> pd.DataFrame:
    return pd.DataFrame(table["rows"]).set_index("disturbance")


# ---- gates ------------------------------------------------------------------------------------------------


@dataclass
class Gate:
    dataset: str
    name: str
    value: float
    threshold: float
    op: str  # ">=" or "<="
    detail: str = ""

    @property
    def passed(self) -> bool:
        if self.value is None or not np.isfinite(self.value):
            return False
        return self.value >= self.threshold if self.op == ">=" else self.value <= self.threshold

    def line(self) -> str:
        value = "n/a" if self.value is None or not np.isfinite(self.value) else f"{self.value:.4g}"
        return (f"{'PASS' if self.passed else 'FAIL'} {self.dataset}: {self.name} = {value} "
                f"(needs {self.op} {self.threshold:g}){'; ' + self.detail if self.detail else ''}")


def _means(rows: pd.DataFrame) -> pd.DataFrame:
    """variant x setting means over seeds, one column per metric."""
    return rows.pivot_table(index=["variant", "setting", "steps", "guidance"], columns="metric", values="value",
                            aggfunc="mean").reset_index()


def dataset_gates(metrics: pd.DataFrame, sensitivity: dict, dataset: str, curve_guidance=None) -> list[Gate]:
    """The gates of one dataset (see the module docstring)."""
    from trajbench.metrics.ranking import rank_table
    from trajbench.paper_tables import curve_guidance as choose_guidance
    from trajbench.paper_tables import discrimination

    gates = []
    rows = metrics[metrics["dataset"] == dataset]
    ranked = rows[rows["role"] == "ranked"]
    ema = ranked[ranked["weights"] == "ema"]
    if ema.empty:
        raise ValidityError(f"no ranked EMA results for {dataset}; run `trajbench grid run SPEC` first")
    real = sensitivity_frame(sensitivity)
    most = int(ema["steps"].max())
    guidance = choose_guidance(ema, curve_guidance)
    # best variant: lowest mean rank over the most-step settings
    ranks = rank_table(ema[ema["steps"] == most], step_counts=())
    best = ranks.iloc[0]["variant"]
    at = _means(ema[(ema["steps"] == most) & np.isclose(ema["guidance"], guidance) & (ema["variant"] == best)])
    if at.empty:
        raise ValidityError(f"{dataset}: no {most}-step ranked setting at guidance {guidance:g}; "
                            f"set [report] curve_guidance")
    best_row = at.iloc[0]
    where = f"{best} at {best_row['setting']}"
    first = rows.iloc[0]  # a table without judge columns (or with them empty) was scored in-house
    judged_by = {column: first[column] if isinstance(first.get(column), str) else default
                 for column, default in INHOUSE_JUDGES.items()}
    if judged_by["clip_judge"] == "inhouse":
        gates.append(Gate(dataset, "best-variant CLIP score", float(best_row["clip_score"]), MIN_CLIP, ">=",
                          f"{where}; real images {real.loc['real', 'clip_score']:.3f}"))
    else:
        real_clip = real.loc["real", "clip_score"]  # a ratio needs real images that score above 0
        gates.append(Gate(dataset, "best-variant CLIP score / real",
                          float(best_row["clip_score"]) / real_clip if real_clip > 0 else np.nan, MIN_CLIP_OF_REAL, ">=",
                          f"{where}: {best_row['clip_score']:.4f}, real images {real.loc['real', 'clip_score']:.4f} "
                          f"({judged_by['clip_judge']})"))
    real_accuracy = real.loc["real", "accuracy"]
    if "accuracy" in best_row and real_accuracy and np.isfinite(real_accuracy):
        gates.append(Gate(dataset, "best-variant recognisability / real", float(best_row["accuracy"]) / real_accuracy,
                          MIN_ACCURACY_OF_REAL, ">=",
                          f"{where}: accuracy {best_row['accuracy']:.3f}, real images {real_accuracy:.3f}"))
    else:
        gates.append(Gate(dataset, "best-variant recognisability / real", np.nan, MIN_ACCURACY_OF_REAL, ">=",
                          "no accuracy measured (no classifier for this dataset)"))
    if judged_by["features"] == "inhouse":
        gates.append(Gate(dataset, "best-variant FID", float(best_row["fid"]), FID_BOUND.get(dataset, DEFAULT_FID_BOUND),
                          "<=", f"{where}; real-vs-real {real.loc['real', 'fid']:.3f}"))
    else:
        gates.append(Gate(dataset, "best-variant FID / real-vs-real", float(best_row["fid"]) / real.loc["real", "fid"],
                          MAX_FID_OVER_REAL, "<=", f"{where}: {best_row['fid']:.3f}, real-vs-real "
                                                    f"{real.loc['real', 'fid']:.3f} ({judged_by['features']})"))
    # conditional-mean baseline
    baseline = rows[(rows["role"] == "baseline") & (rows["weights"] == "ema") & (rows["metric"] == "fid")
                    & np.isclose(rows["guidance"], guidance)]
    protocol = ema["protocol"].iloc[0]
    baseline = baseline[baseline["protocol"] == protocol]
    many = ema[(ema["steps"] == most) & np.isclose(ema["guidance"], guidance) & (ema["metric"] == "fid")]
    ratio = (baseline.groupby("variant")["value"].mean() / many.groupby("variant")["value"].mean()).dropna()
    gates.append(Gate(dataset, f"median FID({int(baseline['steps'].min()) if len(baseline) else '?'} step) / "
                               f"FID({most} steps)", float(ratio.median()) if len(ratio) else np.nan,
                      MIN_BASELINE_RATIO, ">=", f"guidance {guidance:g}, {len(ratio)} variants"
                                                + (f", {(ratio < MIN_BASELINE_RATIO).sum()} under {MIN_BASELINE_RATIO:g} "
                                                   f"(lowest {ratio.idxmin()}: {ratio.min():.2f})" if len(ratio) else "")))
    # discrimination
    separation = discrimination(ranked)
    if len(separation):
        worst = separation.loc[separation["ratio"].idxmin()]
        gates.append(Gate(dataset, "discrimination (variant spread / seed std, worst setting)", float(worst["ratio"]),
                          MIN_DISCRIMINATION, ">=",
                          f"{worst['metric']} at {worst['weights']} {worst['setting']}, {int(worst['variants'])} "
                          f"variants x {int(worst['seeds'])} seeds"))
    else:
        gates.append(Gate(dataset, "discrimination (variant spread / seed std, worst setting)", np.nan,
                          MIN_DISCRIMINATION, ">=", "needs >= 2 seeds of >= 2 variants"))
    # the evaluator
    bad = [f"{metric} {series}" for series, names in SERIES.items() for metric, sign in (("fid", 1), ("clip_score", -1))
           if not np.all(sign * np.diff(real.loc[names, metric].to_numpy(float)) > 0)]
    for name in ("flat mean colour", "pixel shuffle"):
        if not real.loc[name, "fid"] > real.loc["real", "fid"] or not real.loc[name, "clip_score"] < real.loc["real", "clip_score"]:
            bad.append(name)
    if not real.loc["captions swapped", "clip_score"] < real.loc["real", "clip_score"]:
        bad.append("captions swapped")
    gates.append(Gate(dataset, "evaluator sensitivity: non-monotone disturbances", float(len(bad)), 0, "<=",
                      ", ".join(bad)))
    gates.append(Gate(dataset, "evaluator: FID(blur 1 px) / FID(real)",
                      float(real.loc["blur 1 px", "fid"] / real.loc["real", "fid"]), MIN_BLUR_OVER_REAL, ">="))
    return gates


def completeness_gate(metrics: pd.DataFrame, cells, dataset: str) -> Gate:
    """The share of the spec's ``cells`` (variant, dataset, seed) on ``dataset`` that the table holds."""
    expected = {(c.variant, int(c.seed)) for c in cells if c.dataset == dataset}
    rows = metrics[metrics["dataset"] == dataset]
    scored = expected & {(v, int(s)) for v, s in zip(rows["variant"], rows["seed"])}
    if not expected:
        return Gate(dataset, "cells scored / the spec's cells", np.nan, 1.0, ">=",
                    "the spec has no cell on this dataset: the table is another spec's")
    missing = len(expected) - len(scored)
    return Gate(dataset, "cells scored / the spec's cells", len(scored) / len(expected), 1.0, ">=",
                f"{len(scored)} of {len(expected)} cells" + (
                    f"; {missing} not scored yet (`trajbench grid status SPEC` lists them)" if missing else ""))


def check_gates(metrics: pd.DataFrame, sensitivities: dict[str, dict], curve_guidance=None, cells=None) -> list[Gate]:
    """Every gate of every dataset in the table; with the spec's ``cells``, also each of their datasets'
    completeness (a dataset with no rows yet gets that gate alone)."""
    if metrics.empty:
        raise ValidityError("the metrics table has no rows; run `trajbench grid run SPEC` first")
    present = list(dict.fromkeys(metrics["dataset"]))
    gates = []
    for dataset in dict.fromkeys([c.dataset for c in cells or ()] + present):
        if cells is not None:
            gates.append(completeness_gate(metrics, cells, dataset))
        if dataset in present:
            gates += dataset_gates(metrics, sensitivities[dataset], dataset, curve_guidance)
    return gates


# ---- text -------------------------------------------------------------------------------------------------


def sensitivity_markdown(table: dict) -> str:
    frame = sensitivity_frame(table).reset_index()
    return to_markdown(frame)


def validity_markdown(gates: list[Gate], sensitivities: dict[str, dict], metrics: pd.DataFrame) -> str:
    """The "Validity" section of a results README and of compare-paper."""
    passed = all(g.passed for g in gates)
    lines = ["## Validity", "",
             f"**{'All gates pass' if passed else 'Some gates FAIL'}** (`trajbench validate`); a ranking counts only "
             "when they all pass.", ""]
    lines += ["| gate | dataset | value | needs | detail |", "|---|---|---|---|---|"]
    for g in gates:
        value = "n/a" if g.value is None or not np.isfinite(g.value) else f"{g.value:.4g}"
        lines.append(f"| {'PASS' if g.passed else '**FAIL**'} {g.name} | {g.dataset} | {value} | "
                     f"{g.op} {g.threshold:g} | {g.detail} |")
    lines.append("")
    for dataset, table in sensitivities.items():
        lines += [f"Evaluator sensitivity on {dataset} ({table['n']} held-out real images, the generated sets' "
                  "size, against the reference split):", "", sensitivity_markdown(table), ""]
    from trajbench.paper_tables import step_axis_table

    steps = step_axis_table(metrics)
    if len(steps):
        lines += ["The step axis without the evaluator: RMS latent distance of the N-step sample to an accurate "
                  "(Dopri5) solve from the same noise and prompt, over the RMS distance between different samples, "
                  "and the trajectory's straightness (0 = straight), per family (EMA weights):", "",
                  to_markdown(steps), ""]
    return "\n".join(lines)


def gate_lines(gates: list[Gate]) -> list[str]:
    return [g.line() for g in gates]
