"""Run an experiment grid: every cell (variant x dataset x seed) trains once, is scored once, and lands in one
tidy table.

Layout under ``RESULTS/<spec name>/``::

    spec.json                 the resolved spec of the first run; a later run with another recipe is refused
    cells/<cell key>/run/     the training run (trajbench.train: resumable orbax checkpoints)
    cells/<cell key>/eval/    one JSON per (weights, sampler setting), written as each is scored
    cells/<cell key>/done.json | failed.json | running.json
    samples/<cell key>.png    a sample grid with its prompts
    metrics.csv, .parquet     the long-form table: one row per (cell, weights, setting, metric), with the identities
                              of its judges (``features``, ``clip_judge``; one set per folder)

Resuming: a done cell is skipped; a partial cell resumes its training from the last checkpoint and scores only
the settings it has not scored. Every file is written whole or not at all, so a kill at any moment loses at most
the work since the last checkpoint or scored setting. A cell that raises (a diverged loss, a crash) is recorded
in ``failed.json`` with its reason and the grid goes on; ``--retry-failed`` runs it again.

Sharding: worker i of n runs the cells whose index in :meth:`ExperimentSpec.cells` is i modulo n, so two
workers never write the same cell; each worker is an independent process using its own devices. The worker
with no shard (n = 1), or ``trajbench grid collect``, writes ``metrics.csv``.
"""

from __future__ import annotations

import json
import os
import socket
import time
import traceback
from pathlib import Path

import numpy as np
import pandas as pd

from trajbench.files import atomic_path, read_json, write_json_atomic
from trajbench.metrics.judges import INHOUSE_JUDGES
from trajbench.spec import Cell, ExperimentSpec, SpecError

METRIC_COLUMNS = ("spec", "variant", "family", "dataset", "seed", "weights", "setting", "steps", "guidance",
                  "sampler", "coordinates", "protocol", "role", "nfe", "metric", "value", "ci_low", "ci_high",
                  "samples", "train_step", "train_seconds", "sample_seconds", "features", "clip_judge", "versions")
JUDGE_COLUMNS = tuple(INHOUSE_JUDGES)
"""The identities of the networks behind FID / KID and behind CLIP score (``trajbench.metrics.judges``)."""
DEFAULTED_COLUMNS = {"protocol": "shared", "role": "ranked", **INHOUSE_JUDGES}
"""Columns added after the first tables were written, and their value in an older table."""
TIMING_COLUMNS = ("train_seconds", "sample_seconds")
"""Wall times: the only columns that differ between two runs of the same spec on the same machine."""


def sample_grid_path(root: str | Path, cell: Cell) -> Path:
    """A cell's sample grid under a spec's results folder."""
    return Path(root) / "samples" / f"{cell.key}.png"


class GridLayout:
    """Where a spec's files live."""

    def __init__(self, spec: ExperimentSpec, results: str | Path = "results"):
        self.spec = spec
        self.root = Path(results) / spec.name

    def cell_dir(self, cell: Cell) -> Path:
        return self.root / "cells" / cell.key

    def sample_grid(self, cell: Cell) -> Path:
        return sample_grid_path(self.root, cell)

    @property
    def metrics_csv(self) -> Path:
        return self.root / "metrics.csv"


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"i/n"`` -> (i, n); ``"auto"`` reads the worker's index and count from the environment
    (TRAJBENCH_SHARD=i/n, else SLURM_PROCID / SLURM_NTASKS, else JAX_PROCESS_ID / JAX_NUM_PROCESSES); None -> (0, 1)."""
    if text is None:
        return 0, 1
    if text == "auto":
        env = os.environ
        if env.get("TRAJBENCH_SHARD"):
            return parse_shard(env["TRAJBENCH_SHARD"])
        for index, count in (("SLURM_PROCID", "SLURM_NTASKS"), ("JAX_PROCESS_ID", "JAX_NUM_PROCESSES")):
            if env.get(index) and env.get(count):
                return parse_shard(f"{env[index]}/{env[count]}")
        return 0, 1
    index, sep, count = text.partition("/")
    if not (sep and index.isdigit() and count.isdigit() and 0 <= int(index) < int(count)):
        raise SpecError(f"--shard {text!r}: expected i/n with 0 <= i < n (e.g. 0/4), or auto")
    return int(index), int(count)


def shard_cells(spec: ExperimentSpec, shard: tuple[int, int]) -> list[Cell]:
    index, count = shard
    return [cell for k, cell in enumerate(spec.run_order()) if k % count == index]


# ---- cell state ---------------------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _lock_holder(folder: Path) -> dict | None:
    """The live worker running this cell, if any (a lock left by a killed worker on this host is stale)."""
    try:
        lock = json.loads((folder / "running.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if lock.get("host") == socket.gethostname() and not _pid_alive(int(lock.get("pid", -1))):
        return None
    return lock


def cell_state(layout: GridLayout, cell: Cell) -> str:
    """done | failed | running | partial (started, not finished, no live worker) | pending."""
    folder = layout.cell_dir(cell)
    if (folder / "done.json").exists():
        return "done"
    if (folder / "failed.json").exists():
        return "failed"
    if _lock_holder(folder) is not None:
        return "running"
    return "partial" if folder.exists() else "pending"


def _acquire(folder: Path) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    holder = _lock_holder(folder)
    if holder is not None and holder.get("pid") != os.getpid():
        return False
    write_json_atomic(folder / "running.json", {"pid": os.getpid(), "host": socket.gethostname(),
                                                "since": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return True


def _eval_file(folder: Path, weights: str, label: str) -> Path:
    return folder / "eval" / f"{weights}-{label.replace('/', '-')}.json"


def read_eval_rows(folder: Path) -> list[dict]:
    rows = []
    for path in sorted((folder / "eval").glob("*.json")):
        try:
            rows.append(json.loads(path.read_text()))
        except json.JSONDecodeError:  # cannot happen with atomic writes; treat as not scored
            path.unlink()
    return rows


# ---- running ------------------------------------------------------------------------------------------


def check_judges(spec: ExperimentSpec) -> None:
    """Load every external judge's weights once, so a missing or wrong file stops a grid before any cell runs."""
    from trajbench.metrics.judges import check_choice

    for role in ("features", "clip_score"):
        check_choice(getattr(spec.eval, role), role)


def check_recipe(layout: GridLayout) -> None:
    """Refuse to mix results of two recipes in one folder; record the recipe on the first run."""
    path = layout.root / "spec.json"
    spec = layout.spec
    if path.exists():
        stored = json.loads(path.read_text())
        if stored.get("recipe") != spec.recipe():
            changed = sorted(k for part in ("train", "eval")
                             for k in set(stored.get("recipe", {}).get(part, {})) | set(spec.recipe()[part])
                             if stored.get("recipe", {}).get(part, {}).get(k) != spec.recipe()[part].get(k))
            raise SpecError(f"{layout.root} holds results of another recipe (changed: {', '.join(changed)}); "
                            f"use --results DIR or --set name=NEW_NAME")
    write_json_atomic(path, {"spec": spec.to_dict(), "recipe": spec.recipe()})


def run_cell(spec: ExperimentSpec, cell: Cell, layout: GridLayout) -> dict:
    """Train, score every (weights, setting) not yet scored, draw the sample grid; returns the done record."""
    from trajbench.evaluate import evaluate_run
    from trajbench.train import train

    folder = layout.cell_dir(cell)
    started = time.time()
    summary = train(spec.train_config(cell), folder / "run", progress=False)
    trained = time.time()
    ev = spec.eval
    scored = {(row["weights"], row["setting"]) for row in read_eval_rows(folder)}
    pairs = [(w, s) for w, s, _ in ev.scored()]
    if {(w, s.label) for w, s in pairs} - scored:
        evaluate_run(folder / "run", pairs=pairs, skip=scored, **ev.run_options(cell.dataset),
                     progress=lambda row: write_json_atomic(_eval_file(folder, row["weights"], row["setting"]), row))
    if ev.grid_images and not layout.sample_grid(cell).exists():
        write_sample_grid(spec, cell, layout)
    finished = time.time()
    record = {"cell": cell.key, "train_seconds": summary.get("wall_seconds"),
              "score_seconds": round(finished - trained, 2),
              "seconds_this_session": round(finished - started, 2), "best": summary.get("best")}
    write_json_atomic(folder / "done.json", record)
    return record


def _setting(text: str):
    from trajbench.samplers import SamplerSetting

    return SamplerSetting.parse(text)


def write_sample_grid(spec: ExperimentSpec, cell: Cell, layout: GridLayout) -> Path:
    """The first ``grid_images`` validation prompts, sampled with ``grid_setting`` and EMA weights."""
    from trajbench.data.preview import write_image_grid
    from trajbench.evaluate import evaluation_dataset, generate_images
    from trajbench.run.load import load_run

    run = load_run(layout.cell_dir(cell) / "run", spec.eval.checkpoint)
    dataset = evaluation_dataset(run.config)
    captions = dataset.captions("val", np.arange(spec.eval.grid_images))
    tokens, pooled = run.text_encoders.encode(captions)
    setting = _setting(spec.eval.grid_setting)
    images, _ = generate_images(run, "ema", setting, tokens, pooled, seed=spec.eval.seed)
    path = layout.sample_grid(cell)
    with atomic_path(path) as tmp:
        write_image_grid(images, captions, tmp, title=f"{cell.variant} ({cell.dataset}), {setting.label}, EMA")
    return path


def stack_groups(spec: ExperimentSpec, cells: list[Cell]) -> list[list[Cell]]:
    """Cells to train together: with ``grid.multivariant``, those sharing their whole training config but the
    formulation's parameters (one ``formulations.program_key``), in chunks of ``grid.max_stack``; otherwise one
    cell each."""
    if not spec.grid.multivariant:
        return [[cell] for cell in cells]
    from trajbench.formulations import program_key
    from trajbench.run.config import recipe_of

    groups: dict = {}
    for cell in cells:
        groups.setdefault((recipe_of(spec.train_config(cell)), program_key(cell.variant)), []).append(cell)
    size = max(1, spec.grid.max_stack)
    return [group[i:i + size] for group in groups.values() for i in range(0, len(group), size)]


def train_stack(spec: ExperimentSpec, cells: list[Cell], layout: GridLayout, log) -> dict:
    """Train a group of cells in one vmapped program; returns {cell: error} for lanes that diverged. If the
    group cannot train together, its cells train one by one later (in :func:`run_cell`)."""
    from trajbench.train import train_together

    try:
        results = train_together([spec.train_config(c) for c in cells],
                                 [layout.cell_dir(c) / "run" for c in cells], progress=False)
    except Exception as error:  # noqa: BLE001 - fall back to one-by-one training, which reports per cell
        log(f"training {len(cells)} cells together failed ({type(error).__name__}: {error}); one by one instead")
        return {}
    return {cell: result for cell, result in zip(cells, results) if isinstance(result, Exception)}


def run_grid(spec: ExperimentSpec, results: str | Path = "results", *, shard: tuple[int, int] = (0, 1),
             retry_failed: bool = False, progress: bool = True, log=print) -> dict:
    """Run this worker's cells (skipping done ones, and failed ones unless ``retry_failed``); isolate failures.
    Returns ``{state: count}`` over this worker's cells. With no sharding, also writes ``metrics.csv``."""
    from tqdm.auto import tqdm

    layout = GridLayout(spec, results)
    check_judges(spec)
    check_recipe(layout)
    mine = shard_cells(spec, shard)
    todo = [c for c in mine if cell_state(layout, c) not in ("done",) + (() if retry_failed else ("failed",))]
    log(f"{spec.name}: {len(mine)} cells for shard {shard[0]}/{shard[1]}, {len(mine) - len(todo)} already "
        f"finished, {len(todo)} to run")
    bar = tqdm(total=len(todo), desc=spec.name, unit="cell", disable=not progress)
    for group in stack_groups(spec, todo):
        acquired = []
        for cell in group:
            if _acquire(layout.cell_dir(cell)):
                (layout.cell_dir(cell) / "failed.json").unlink(missing_ok=True)
                acquired.append(cell)
            else:
                log(f"skip {cell.key}: another worker is running it")
                bar.update(1)
        group = acquired
        lane_errors = train_stack(spec, group, layout, log) if len(group) > 1 else {}
        for cell in group:
            folder = layout.cell_dir(cell)
            bar.set_postfix_str(f"{cell.variant} / {cell.dataset} / seed {cell.seed}")
            try:
                if cell in lane_errors:
                    raise lane_errors[cell]
                run_cell(spec, cell, layout)
            except KeyboardInterrupt:
                raise
            except Exception as error:  # isolate the cell: record why and go on
                reason = f"{type(error).__name__}: {error}".splitlines()[0]
                write_json_atomic(folder / "failed.json", {"cell": cell.key, "reason": reason,
                                                           "traceback": traceback.format_exc()})
                log(f"FAILED {cell.key}: {reason}")
            finally:
                (folder / "running.json").unlink(missing_ok=True)
            bar.update(1)
    bar.close()
    counts = grid_status(spec, results, cells=mine)["counts"]
    if shard[1] == 1:
        table = collect(spec, results)
        log(f"wrote {layout.metrics_csv} ({len(table)} rows)")
        from trajbench.validity import ensure_sensitivity

        for dataset in dict.fromkeys(table["dataset"]):  # the evaluator's sensitivity, once per dataset
            ensure_sensitivity(spec, layout.root, dataset)
    return counts


def cell_seconds(done: dict) -> float | None:
    """The wall time a done cell cost: training plus scoring. A record without ``score_seconds`` (written before
    it was kept) counts the longer of its training and its last session, which is right for a cell trained and
    scored in one session."""
    train, score, session = (done.get(k) for k in ("train_seconds", "score_seconds", "seconds_this_session"))
    if train is not None and score is not None:
        return float(train) + float(score)
    known = [float(v) for v in (train, session) if v is not None]
    return max(known) if known else None


def headline_settings(spec: ExperimentSpec) -> tuple[str, str, str | None] | None:
    """``(weights, setting, baseline setting)`` whose scores ``grid status`` shows for a done cell: the first
    weights' ranked setting with the most steps at the report's curve guidance (else at the most common
    guidance), and the baseline of that guidance and protocol (None without one)."""
    ranked = [(w, s) for w, s, role in spec.eval.scored() if role == "ranked" and w == spec.eval.weights[0]]
    if not ranked:
        return None
    guidances = [s.guidance for _, s in ranked]
    wanted = spec.report.curve_guidance
    guidance = wanted if wanted in guidances else max(set(guidances), key=guidances.count)
    weights, top = max(((w, s) for w, s in ranked if s.guidance == guidance), key=lambda pair: pair[1].steps)
    base = top.with_steps(spec.eval.baseline_steps).label if spec.eval.baseline_steps else None
    return weights, top.label, base


def _headline(folder: Path, settings: tuple[str, str, str | None]) -> dict | None:
    """A done cell's FID, CLIP score and recognisability at the headline setting, and FID at its baseline."""
    weights, label, base = settings
    rows = {(r["weights"], r["setting"]): r for r in read_eval_rows(folder)}
    top = rows.get((weights, label))
    if top is None:
        return None
    out = {"setting": f"{weights} {label}", **{k: top.get(k) for k in ("fid", "clip_score", "accuracy")}}
    if base is not None and (weights, base) in rows:
        out["baseline_fid"], out["baseline_steps"] = rows[(weights, base)].get("fid"), rows[(weights, base)]["steps"]
    return out


def grid_status(spec: ExperimentSpec, results: str | Path = "results", *, cells=None) -> dict:
    """``{"counts": {state: n}, "cells": [...], "seconds_left": s | None}``.

    Each cell has its state; a failed cell its reason; a done cell the ``seconds`` it cost and its ``headline``
    scores (:func:`headline_settings`); a started one its last logged training ``step`` of ``steps``, and a
    partial one the ``resume_step`` of its last checkpoint (where a rerun starts). ``seconds_left`` = (cells not done - the fraction of started ones that a rerun
    keeps) x the median cost of a done cell, on the machine and with the load the done cells had (None before
    one is done)."""
    from trajbench.run.folder import checkpoint_steps, training_progress

    layout = GridLayout(spec, results)
    headline = headline_settings(spec)
    rows = []
    for cell in cells if cells is not None else spec.run_order():
        folder = layout.cell_dir(cell)
        state = cell_state(layout, cell)
        row = {"variant": cell.variant, "dataset": cell.dataset, "seed": cell.seed, "state": state}
        if state == "failed":
            failed = read_json(folder / "failed.json", "delete it, then rerun the grid with --retry-failed")
            row["reason"] = failed.get("reason", "unknown") if isinstance(failed, dict) else "unknown"
        elif state == "done":
            done = read_json(folder / "done.json", "delete the cell's folder and rerun the grid")
            row["seconds"] = cell_seconds(done) if isinstance(done, dict) else None
            row["headline"] = _headline(folder, headline) if headline else None
        elif state in ("running", "partial"):
            progress = training_progress(folder / "run")
            if progress is not None:
                row["step"], row["steps"] = progress
                if state == "partial":
                    row["resume_step"] = max(checkpoint_steps(folder / "run"), default=0)
        rows.append(row)
    counts = {s: sum(r["state"] == s for r in rows) for s in ("done", "running", "failed", "partial", "pending")}
    costs = [r["seconds"] for r in rows if r.get("seconds") is not None]
    seconds_left = None
    if costs:
        remaining = sum(1 - (r.get("resume_step", r["step"]) / r["steps"] if r.get("steps") else 0.0)
                        for r in rows if r["state"] != "done")
        seconds_left = remaining * float(np.median(costs))
    return {"counts": counts, "cells": rows, "seconds_left": seconds_left}


# ---- the results table --------------------------------------------------------------------------------


STEP_AXIS_METRICS = ("ref_distance", "straightness")


def metric_rows(spec: ExperimentSpec, cell: Cell, row: dict, done: dict, versions: str) -> list[dict]:
    """The long-form rows of one scored (weights, setting): fid, kid, clip_score, accuracy, geneval_<category>,
    and the step-axis measurements (no interval) where they were made."""
    from trajbench import formulations

    base = {"spec": spec.name, "variant": cell.variant, "family": formulations.family_of(cell.variant),
            "dataset": cell.dataset, "seed": cell.seed, "weights": row["weights"], "setting": row["setting"],
            "steps": row["steps"], "guidance": row["guidance"], "sampler": row["solver"],
            "coordinates": row["coordinates"], "protocol": row.get("protocol", "shared"),
            "role": spec.eval.role_of(row["setting"]), "nfe": row["nfe"], "samples": row["samples"],
            "train_step": row["checkpoint_step"], "train_seconds": done.get("train_seconds"),
            "sample_seconds": row["sample_seconds"], "versions": versions,
            **{column: row.get(column, default) for column, default in INHOUSE_JUDGES.items()}}
    values = [(m, row[m], row[f"{m}_ci"]) for m in ("fid", "kid", "clip_score", "accuracy") if m in row]
    values += [(f"geneval_{k}", v, row["geneval_ci"][k]) for k, v in row.get("geneval", {}).items()]
    values += [(m, row[m], (np.nan, np.nan)) for m in STEP_AXIS_METRICS if m in row]
    return [{**base, "metric": m, "value": v, "ci_low": ci[0], "ci_high": ci[1]} for m, v, ci in values]


def collect(spec: ExperimentSpec, results: str | Path = "results") -> pd.DataFrame:
    """Assemble ``metrics.csv`` and ``metrics.parquet`` from every done cell, in the spec's cell order."""
    layout = GridLayout(spec, results)
    order = {(w, s.label): i for i, (w, s, _) in enumerate(spec.eval.scored())}
    records = []
    for cell in spec.cells():
        folder = layout.cell_dir(cell)
        if not (folder / "done.json").exists():
            continue
        done = read_json(folder / "done.json", "delete it and rerun the grid to finish the cell again")
        versions = json.loads((folder / "run" / "config.json").read_text()).get("versions", {})
        versions = " ".join(f"{k}={v}" for k, v in sorted(versions.items()))
        rows = [r for r in read_eval_rows(folder) if (r["weights"], r["setting"]) in order]
        for row in sorted(rows, key=lambda r: order[(r["weights"], r["setting"])]):
            records += metric_rows(spec, cell, row, done, versions)
    table = pd.DataFrame.from_records(records, columns=list(METRIC_COLUMNS))
    for path, write in ((layout.metrics_csv, lambda p: table.to_csv(p, index=False)),
                        (layout.root / "metrics.parquet", lambda p: table.to_parquet(p, index=False))):
        with atomic_path(path) as tmp:
            write(tmp)
    return table


def read_metrics(path: str | Path) -> pd.DataFrame:
    """Read a ``metrics.csv`` (or ``.parquet``) and check it has the long-form columns."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; run `trajbench grid run SPEC` (or `grid collect SPEC`) first")
    table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    for column, value in DEFAULTED_COLUMNS.items():
        if column not in table:
            table.insert(list(METRIC_COLUMNS).index(column), column, value)
    missing = [c for c in METRIC_COLUMNS if c not in table]
    if missing:
        raise SpecError(f"{path} lacks the column(s) {', '.join(missing)}; regenerate it with `trajbench grid collect`")
    judges = table[list(JUDGE_COLUMNS)].drop_duplicates()
    if len(judges) > 1:
        found = "; ".join(" / ".join(map(str, row)) for row in judges.itertuples(index=False))
        raise SpecError(f"{path} mixes rows scored by different judges (features / clip_judge: {found}); "
                        "report each on its own, e.g. keep the rows of one features value")
    return table
