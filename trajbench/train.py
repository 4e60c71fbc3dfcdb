"""Training: :func:`train` one run, or :func:`train_together` runs that differ only in their formulation's
parameters in one vmapped program.

Everything a step does is a pure function of (config, step): the batch indices, the noise, the
training times and the text dropout are drawn from ``fold_in(key, step)``. A run killed at any
moment and started again resumes from its last orbax checkpoint and ends with the same parameters
and the same logged metrics as an uninterrupted run. SIGTERM (a scheduler's preemption) stops it at its next
logged step with a checkpoint there, so nothing is lost (:class:`~trajbench.run.folder.SigtermStop`). The pieces: :mod:`trajbench.run` (config, builders, meshes,
the Trainer, the run folder and its files, loading a finished run).
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import numpy as np

from trajbench import formulations
from trajbench.run.build import load_split
from trajbench.run.config import RunError, TrainConfig, recipe_of
from trajbench.run.folder import RunFolder, SigtermStop, StopRequested, holding_interrupts
from trajbench.run.mesh import maybe_initialize_distributed
from trajbench.run.trainer import stack_formulations, trainer_for


def train(config: TrainConfig, out_dir: str | Path, *, progress: bool = True, stop_after: int | None = None,
          fresh: bool = False) -> dict:
    """Train (or resume, or return the summary of a completed run) in ``out_dir``.

    ``stop_after``: stop (checkpointed) after this step, as if killed there; for tests and time slicing.
    ``fresh``: discard the run ``out_dir`` holds and start over.
    """
    result = train_together([config], [out_dir], progress=progress, stop_after=stop_after, fresh=fresh)[0]
    if isinstance(result, Exception):
        raise result
    return result


def _same_recipe(configs: list[TrainConfig]) -> bool:
    recipes = [recipe_of(c) for c in configs]
    return all(r == recipes[0] for r in recipes)


def train_together(configs: list[TrainConfig], out_dirs: list, *, progress: bool = True,
                   stop_after: int | None = None, fresh: bool = False) -> list:
    """Train runs that differ only in their formulation's parameters in one vmapped program (see
    :class:`Trainer`); one run (or runs that cannot be stacked) trains alone. Each run's folder ends exactly as
    :func:`train` leaves it, so any of them can later be resumed, loaded or evaluated alone.

    Returns, per run, its summary, or the :class:`RunError` that stopped it (a diverged run stops; the others
    go on).
    """
    from tqdm.auto import tqdm

    folders = [RunFolder(c, o, fresh) for c, o in zip(configs, out_dirs)]
    results: list = [f.done for f in folders]
    pending = [k for k, r in enumerate(results) if r is None]
    if not pending:
        return results
    config = configs[pending[0]]
    names = [configs[k].formulation for k in pending]
    stacked = len(pending) > 1
    if stacked and not _same_recipe([configs[k] for k in pending]):
        raise RunError("train_together needs runs that differ only in their formulation")
    if stacked:
        stack_formulations(names)  # raises unless one family

    maybe_initialize_distributed()
    trainer = trainer_for(config, variants=len(pending) if stacked else 0)
    from trajbench.data import get_dataset

    dataset = get_dataset(config.dataset, resolution=config.resolution, seed=config.seed)
    pool = jax.device_put(load_split(dataset, trainer.text_encoders, "train", config.train_examples,
                                     trainer.autoencoder), trainer.replicated)
    val = jax.device_put(load_split(dataset, trainer.text_encoders, "val", config.val_examples, trainer.autoencoder),
                         trainer.replicated)
    fresh = trainer.init_state(pool)
    states = [folders[k].open(fresh) for k in pending]
    starts = {folders[k].start for k in pending}
    if len(starts) > 1:  # resumed from different steps: cannot step together
        for k in pending:
            folders[k].close(folders[k].start)
        for k in pending:
            try:
                results[k] = train(configs[k], out_dirs[k], progress=progress, stop_after=stop_after)
            except RunError as error:
                results[k] = error
        return results
    start = starts.pop()
    if stacked:
        state, formulation = trainer.stack(states), stack_formulations(names)
    else:
        state, formulation = states[0], formulations.get(config.formulation)

    def lane(tree, i):
        return jax.tree.map(lambda x: x[i], tree) if stacked else tree

    last = config.steps if stop_after is None else min(config.steps, stop_after)
    alive = list(range(len(pending)))  # lanes still training (a diverged lane stops logging and saving)
    window: list = []
    bar = tqdm(total=config.steps, initial=start, desc=names[0] if not stacked else f"{len(names)} variants",
               disable=not (progress and folders[pending[0]].is_main), dynamic_ncols=True, file=sys.stderr)
    with SigtermStop() as stop:
        for step in range(start + 1, last + 1):
            state, metrics = trainer.train_step(formulation, state, pool)
            window.append(metrics)
            if step == start + 1:  # the rate shown leaves out compiling
                jax.block_until_ready(metrics)
                bar.unpause()
            if step % config.log_every and step != last:
                continue
            stopping = stop.requested and step != last  # SIGTERM: checkpoint at this logged step, then stop
            loss = np.atleast_1d(np.mean([np.asarray(m["loss"]) for m in window], axis=0))
            grad_norm = np.atleast_1d(np.mean([np.asarray(m["grad_norm"]) for m in window], axis=0))
            window = []
            evaluate = step % config.eval_every == 0 or step == config.steps
            if evaluate:
                raw = np.atleast_2d(trainer.validation_losses(formulation, state["params"], val))
                ema = np.atleast_2d(trainer.validation_losses(formulation, state["ema"], val))
            for i in list(alive):
                folder = folders[pending[i]]
                row = {"loss": float(loss[i]), "grad_norm": float(grad_norm[i]), "lr": trainer.learning_rate(step)}
                if evaluate:
                    row |= folder.validation_row(raw[i], ema[i])
                try:
                    folder.check_diverged(step, row)
                except RunError as error:
                    results[pending[i]] = error
                    folder.close(folder.start)
                    alive.remove(i)
                    continue
                with holding_interrupts():
                    if evaluate:
                        folder.keep_best(step, row, lambda: lane({"params": state["params"], "ema": state["ema"]}, i))
                    folder.record(step, row)
                    if step % config.eval_every == 0 or step == last or stopping:
                        folder.checkpoint(step, lane(state, i))
            if not alive:
                break
            if stopping:
                bar.close()
                for i in alive:
                    folders[pending[i]].close(step)
                raise StopRequested(step)
            bar.update(step - bar.n)
            bar.set_postfix(loss=f"{float(np.mean(loss[alive])):.4g}")
    bar.close()
    for i in alive:
        results[pending[i]] = folders[pending[i]].close(last)
    return results
