"""A finished (or checkpointed) run read back for sampling: :func:`load_run` -> :class:`TrainedRun`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

from trajbench import formulations
from trajbench.files import read_json
from trajbench.formulations import Formulation
from trajbench.run.config import RunError, TrainConfig, data_shape
from trajbench.run.folder import checkpoint_manager
from trajbench.run.trainer import trainer_for

@dataclass
class TrainedRun:
    """A run's model and weights, ready to sample: ``weights["ema"]`` and ``weights["raw"]``; ``autoencoder``
    (None in pixel space) turns sampled latents into images."""

    config: TrainConfig
    formulation: Formulation
    model: Any
    text_encoders: Any
    weights: dict
    step: int
    autoencoder: Any = None

    def network(self, which: str = "ema"):
        """network(z_in, c_noise, tokens, pooled) -> F with the chosen weights."""
        params = self.weights[which]
        return lambda z, c_noise, tokens, pooled: self.model.apply(params, z, c_noise, tokens, pooled)


def read_config(run_dir: str | Path) -> TrainConfig:
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise RunError(f"{run_dir} is not a training run (no config.json); train one with `trajbench train`")
    try:
        return TrainConfig(**json.loads(path.read_text())["config"])
    except (json.JSONDecodeError, KeyError, TypeError):
        raise RunError(f"{path} is unreadable or from another version; retrain into a new folder") from None


def load_run(run_dir: str | Path, checkpoint: str | int = "best") -> TrainedRun:
    """Load a run's weights: ``"best"`` (lowest EMA validation loss), ``"last"``, or a step number kept in
    ``checkpoints/``."""
    import orbax.checkpoint as ocp

    run_dir = Path(run_dir)
    config = read_config(run_dir)
    trainer = trainer_for(config)
    dummy = {"images": np.zeros((1, *data_shape(config)), np.float32),
             "tokens": np.zeros((1, trainer.text_encoders.num_tokens, trainer.text_encoders.token_dim), np.float32),
             "pooled": np.zeros((1, trainer.text_encoders.pooled_dim), np.float32)}
    abstract = jax.eval_shape(trainer.init_state, dummy)  # shapes only: no parameters are initialised
    abstract = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=trainer.replicated),
                            abstract)
    if checkpoint == "best":
        if not (run_dir / "best.json").exists():
            raise RunError(f"{run_dir} has no best checkpoint yet; let the run reach its first evaluation")
        best = read_json(run_dir / "best.json", "retrain the run, or pick --checkpoint last")
        step = best.get("step") if isinstance(best, dict) else None
        if not isinstance(step, int):
            raise RunError(f"{run_dir / 'best.json'} names no step; retrain the run, or pick --checkpoint last")
        folder, args = run_dir / "best", ocp.args.StandardRestore({"params": abstract["params"], "ema": abstract["ema"]})
    else:
        folder = run_dir / "checkpoints"
        with checkpoint_manager(folder, keep=config.keep_checkpoints) as manager:
            steps = manager.all_steps()
        if checkpoint == "last":
            step = max(steps, default=None)
        else:
            step = int(checkpoint) if str(checkpoint).isdigit() else None
        if step is None or step not in steps:
            raise RunError(f"{run_dir} keeps checkpoints at steps {sorted(steps)}; ask for best, last or one of "
                           f"those steps, not {checkpoint!r}")
        args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
    try:
        with checkpoint_manager(folder, keep=config.keep_checkpoints) as manager:
            restored = manager.restore(step, args=args)
    except Exception as error:  # noqa: BLE001
        raise RunError(f"checkpoint {folder}/{step} is unreadable ({type(error).__name__}); "
                       f"retrain or pick another with --checkpoint") from None
    restored = restored["state"] if checkpoint != "best" else restored
    weights = {"ema": restored["ema"], "raw": restored["params"]}
    return TrainedRun(config, formulations.get(config.formulation), trainer.model, trainer.text_encoders, weights, step,
                      trainer.autoencoder)
