"""The files of one run: what is restored on resume and what each logged, evaluated and checkpointed step
writes.

Run folder::

    config.json      the resolved configuration (a different one is refused once the run reached its first
                     checkpoint; before that the run restarts with the new one)
    metrics.jsonl    one JSON object per logged step: step, loss, grad_norm, lr (+ val losses at evals)
    tb/              the same scalars for TensorBoard
    checkpoints/     orbax checkpoints of the full state, for resuming (the last two)
    best/            params and EMA params at the step with the lowest EMA validation loss
    best.json        that step and its losses: the checkpoint to evaluate
    done.json        written when the run completes; a completed run is never redone
    unreadable-checkpoints/   checkpoints that failed to restore, set aside so their steps can be written again

``trajbench train --fresh`` (``train(..., fresh=True)``) removes these and starts over.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import jax
import numpy as np

from trajbench.files import read_json, write_json_atomic, write_text_atomic
from trajbench.run.config import RunError, TrainConfig

DIVERGENCE_FACTOR = 1e3
"""A logged loss this many times the run's first logged loss (that of the untrained network) is divergence."""


def package_versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("trajbench", "jax", "flax", "optax", "orbax-checkpoint", "numpy")}


@contextlib.contextmanager
def holding_interrupts():
    """Hold a Ctrl-C that arrives inside the block until the block ends, so that orbax finishes writing or
    reading a checkpoint (its threads otherwise die noisily at exit). Only where Ctrl-C raises KeyboardInterrupt."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    held = []
    signal.signal(signal.SIGINT, lambda *received: held.append(received))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if held:
            raise KeyboardInterrupt


class StopRequested(KeyboardInterrupt):
    """Training was asked to stop (SIGTERM) and stopped at a checkpoint: the same command resumes from ``step``
    with nothing lost."""

    def __init__(self, step: int):
        super().__init__(f"stopped at step {step} on SIGTERM, checkpointed")
        self.step = step


class SigtermStop:
    """Inside ``with SigtermStop() as stop``, SIGTERM (a scheduler's preemption, ``kill``) only sets
    ``stop.requested``; the training loop then checkpoints at its next logged step and raises
    :class:`StopRequested`. Elsewhere SIGTERM kills as usual. Only in the main thread of a single-process run
    (the processes of a distributed run would stop at different steps)."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self) -> "SigtermStop":
        if threading.current_thread() is threading.main_thread() and jax.process_count() == 1:
            self._previous = signal.signal(signal.SIGTERM, self._receive)
        return self

    def _receive(self, *received) -> None:
        self.requested = True
        print("trajbench: SIGTERM: stopping at the next logged step, after a checkpoint", file=sys.stderr, flush=True)

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def checkpoint_manager(directory: Path, keep: int):
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False)
    return ocp.CheckpointManager(directory.absolute(), options=options)


def _restore_latest(manager, abstract_state, aside: Path) -> tuple[dict | None, dict]:
    """The newest readable checkpoint; an unreadable one is reported and moved into ``aside`` (so the run can
    write that step again), and the one before it is used."""
    import orbax.checkpoint as ocp

    for step in sorted(manager.all_steps(), reverse=True):
        try:
            restored = manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
            return restored.state, dict(restored.meta)
        except Exception as error:  # noqa: BLE001 - any unreadable checkpoint is set aside, loudly
            target = aside / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
            aside.mkdir(parents=True, exist_ok=True)
            shutil.move(Path(manager.directory) / str(step), target)
            manager.reload()
            print(f"trajbench: warning: checkpoint {manager.directory}/{step} is unreadable "
                  f"({type(error).__name__}); moved it to {target} and trying the one before it", file=sys.stderr)
    return None, {}


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut short by a kill: it and anything after it are redone
    return rows


def training_progress(out: str | Path) -> tuple[int, int] | None:
    """``(last logged step, steps)`` of the run in ``out``, read from its files alone (no jax, no checkpoint);
    None before its first logged step."""
    out = Path(out)
    rows = _read_jsonl(out / "metrics.jsonl")
    try:
        steps = int(json.loads((out / "config.json").read_text())["config"]["steps"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    return (int(rows[-1]["step"]), steps) if rows else None


def _last_logged_loss(path: Path) -> float:
    rows = _read_jsonl(path)
    return rows[-1]["loss"] if rows else float("nan")


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))


RUN_FILES = ("config.json", "metrics.jsonl", "tb", "checkpoints", "best", "best.json", "done.json",
             "unreadable-checkpoints")
"""What a run folder holds (see the module docstring); ``--fresh`` removes these and nothing else."""


def checkpoint_steps(out: Path) -> list[int]:
    """The steps saved under ``out/checkpoints`` (without reading them)."""
    folder = out / "checkpoints"
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []


def _reached_checkpoint(out: Path) -> bool:
    """Whether the run in ``out`` ever reached its first checkpoint (before that it holds nothing to keep)."""
    return bool(checkpoint_steps(out)) or any((out / name).exists() for name in ("best.json", "done.json"))


def check_run_folder(out: str | Path, config: TrainConfig) -> None:
    """Raise :class:`RunError` unless ``out`` can take (or resume) a run of ``config``: a file is refused; so is a
    run that reached its first checkpoint with another config, or that lost its checkpoints. A run that never
    reached its first checkpoint may restart with any config. Writes nothing."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunError(f"--out {out} is a file, not a folder; choose another --out")
    if not _reached_checkpoint(out):
        return
    path = out / "config.json"
    try:
        existing = json.loads(path.read_text())["config"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        raise RunError(f"{path} is missing or unreadable; add --fresh to start over, or choose another --out") from None
    existing = {**dataclasses.asdict(TrainConfig()), **existing}  # a field added later had its default
    wanted = dataclasses.asdict(config)
    if existing != wanted:
        changed = sorted(k for k in wanted if existing.get(k) != wanted[k])
        raise RunError(f"{out} holds a run with a different config ({', '.join(changed)}); "
                       f"choose another --out, or add --fresh to discard that run")
    if not checkpoint_steps(out) and not (out / "done.json").exists():
        raise RunError(f"{out} has logged training but no readable checkpoint under {out / 'checkpoints'} to "
                       f"resume from; add --fresh to start over, or delete the folder")


class RunFolder:
    """The files of one run (see the module docstring): what is restored on resume, and what each logged,
    evaluated and checkpointed step writes. ``fresh``: remove the run ``out_dir`` holds first."""

    def __init__(self, config: TrainConfig, out_dir: str | Path, fresh: bool = False):
        self.config = config
        self.out = Path(out_dir)
        if fresh and self.out.is_dir():
            for name in RUN_FILES:
                path = self.out / name
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        check_run_folder(self.out, config)
        if not _reached_checkpoint(self.out):  # (re)start: the config is this one
            # a start killed between its first best save and its first checkpoint left a best/ of its own
            shutil.rmtree(self.out / "best", ignore_errors=True)
            self.out.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.out / "config.json", {"config": dataclasses.asdict(config),
                                                         "versions": package_versions()})
        self.is_main = jax.process_index() == 0

    @property
    def done(self) -> dict | None:
        path = self.out / "done.json"
        return read_json(path, "delete it and rerun to finish the run again") if path.exists() else None

    def open(self, fresh_state: dict) -> dict:
        """Restore the newest readable checkpoint (else keep ``fresh_state``); trim the log to it; open the log,
        TensorBoard and the checkpoint managers. Returns the state to continue from."""
        import orbax.checkpoint as ocp
        from tensorboardX import SummaryWriter

        config, out = self.config, self.out
        self.started = time.time()
        self.latest = checkpoint_manager(out / "checkpoints", keep=config.keep_checkpoints)
        self.best_manager = checkpoint_manager(out / "best", keep=1)
        with holding_interrupts():
            restored, meta = _restore_latest(self.latest, jax.tree.map(ocp.utils.to_shape_dtype_struct, fresh_state),
                                             out / "unreadable-checkpoints")
        if restored is None:
            check_run_folder(out, config)  # refuses a run whose every checkpoint was unreadable
        state = fresh_state if restored is None else jax.device_put(restored, fresh_state["step"].sharding)
        self.start = int(state["step"])
        self.best = meta.get("best", {"step": None, "ema_val_loss": float("inf")})
        self._write_best()  # a kill between a checkpoint and its best.json left an older one
        self.wall_before = float(meta.get("wall_seconds", 0.0))
        rows = [r for r in _read_jsonl(out / "metrics.jsonl") if r["step"] <= self.start]
        self.first_loss = rows[0]["loss"] if rows else None
        _write_jsonl(out / "metrics.jsonl", rows)
        self.writer = SummaryWriter(str(out / "tb"), purge_step=self.start + 1) if self.is_main else None
        self.log = open(out / "metrics.jsonl", "a")
        return state

    def check_diverged(self, step: int, row: dict) -> None:
        """Raise :class:`RunError` when a step's row shows divergence: a value that is not finite, or a loss
        DIVERGENCE_FACTOR times the run's first logged loss. Nothing of that step has been written yet."""
        values = {k: v for k, v in row.items() if isinstance(v, float)}
        values |= {f"{k}[{i}]": v for k, vs in row.items() if isinstance(vs, list) for i, v in enumerate(vs)}
        bad = [f"{k} became {v}" for k, v in values.items() if not np.isfinite(v)]
        if self.first_loss is None and not bad:
            self.first_loss = row["loss"]
        elif not bad and row["loss"] > DIVERGENCE_FACTOR * self.first_loss:
            bad = [f"loss reached {row['loss']:.3g}, over {DIVERGENCE_FACTOR:g} times its first logged "
                   f"{self.first_loss:.3g}"]
        if not bad:
            return
        kept = self.latest.latest_step()
        fix = ("rerun with a lower lr or grad_clip (--set); no checkpoint was written, so the same --out takes the "
               "new config" if kept is None else
               f"the run keeps its checkpoint at step {kept}; to retrain with a lower lr or grad_clip (--set), add "
               f"--fresh or choose another --out")
        raise RunError(f"training diverged at step {step} ({self.config.formulation}): {', '.join(bad[:2])}; {fix}")

    @staticmethod
    def validation_row(raw_losses, ema_losses) -> dict:
        raw, ema = np.asarray(raw_losses, np.float64), np.asarray(ema_losses, np.float64)
        return {"val_loss": float(raw.mean()), "ema_val_loss": float(ema.mean()),
                "ema_val_loss_at_t": [round(float(v), 6) for v in ema]}

    def keep_best(self, step: int, row: dict, params_and_ema) -> None:
        """Saves ``params_and_ema()`` as the best checkpoint when the row's EMA validation loss improves;
        ``best.json`` follows with the step's checkpoint (:meth:`checkpoint`), so it never names a step that a
        resumed run would not have reached."""
        import orbax.checkpoint as ocp

        if row["ema_val_loss"] < self.best["ema_val_loss"]:
            self.best = {"step": step, "ema_val_loss": row["ema_val_loss"], "val_loss": row["val_loss"]}
            if step not in self.best_manager.all_steps():
                self.best_manager.save(step, args=ocp.args.StandardSave(params_and_ema()))
                self.best_manager.wait_until_finished()

    def record(self, step: int, row: dict) -> None:
        if self.is_main:
            self.log.write(json.dumps({"step": step, **row}) + "\n")
            self.log.flush()
            for key, value in row.items():
                if isinstance(value, float):
                    self.writer.add_scalar(key, value, step)

    def checkpoint(self, step: int, state: dict) -> None:
        import orbax.checkpoint as ocp

        meta = {"best": self.best, "wall_seconds": self.wall_before + time.time() - self.started}
        self.latest.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                       meta=ocp.args.JsonSave(meta)), force=True)
        self.latest.wait_until_finished()
        self._write_best()

    def _write_best(self) -> None:
        if self.is_main and self.best.get("step") is not None:
            write_json_atomic(self.out / "best.json", self.best)

    def close(self, last: int) -> dict:
        """Close the files; at the final step write ``done.json``. Returns the run's summary."""
        self.log.close()
        if self.writer is not None:
            self.writer.close()
        self.latest.close()
        self.best_manager.close()
        if last < self.config.steps:
            return {"step": last, "complete": False}
        summary = {"complete": True, "step": self.config.steps,
                   "final_loss": _last_logged_loss(self.out / "metrics.jsonl"), "best": self.best,
                   "wall_seconds": self.wall_before + time.time() - self.started}
        if self.is_main:
            write_json_atomic(self.out / "done.json", summary)
        return summary
