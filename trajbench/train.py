"""One training run: a formulation, a dataset, an MMDiT, AdamW with warm-up, EMA, checkpoints.

Everything a step does is a pure function of (config, step): the batch indices, the noise, the
training times and the text dropout are drawn from ``fold_in(key, step)``. A run killed at any
moment and started again resumes from its last orbax checkpoint and ends with the same parameters
and the same logged metrics as an uninterrupted run.

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
import functools
import json
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from trajbench import formulations, xla
from trajbench.errors import UserError, check_like
from trajbench.files import read_json, write_json_atomic, write_text_atomic
from trajbench.formulations import Formulation

VALIDATION_TIMES = tuple((k + 0.5) / 8 for k in range(8))
"""The paper validates at eight equally spaced t; we take the midpoints of eight equal cells of [0, 1]
(the ends are singular for some paths)."""


LR_SCHEDULES = ("constant", "cosine")
LR_FLOOR = 0.05
DTYPES = ("float32", "bfloat16", "float16")
DIVERGENCE_FACTOR = 1e3
"""A logged loss this many times the run's first logged loss (that of the untrained network) is divergence."""


class RunError(UserError):
    """A run that cannot start or go on (conflicting folder, divergence): one line says why and what to do."""


@dataclass(frozen=True)
class TrainConfig:
    formulation: str = "rf/lognorm(0.00, 1.00)"
    dataset: str = "synth-cc12m"
    resolution: int = 16
    seed: int = 0
    # model (width 0 -> 64 * depth, heads 0 -> depth, as in SD3)
    depth: int = 2
    width: int = 64
    heads: int = 2
    patch_size: int = 2
    dtype: str = "float32"  # compute dtype; "bfloat16" for accelerators (parameters stay float32)
    # latent space: 1 = pixels; f > 1 = the latents [res/f, res/f, latent_channels] of the dataset's autoencoder
    latent_factor: int = 1
    latent_channels: int = 4
    autoencoder_steps: int = 800  # the autoencoder's training budget (part of its cache key)
    # optimisation (paper: AdamW, lr 1e-4, 1000 warm-up steps, batch 1024)
    batch_size: int = 32
    steps: int = 600
    lr: float = 1e-3
    warmup_steps: int = 100
    lr_schedule: str = "constant"  # after warm-up: "constant", or "cosine" decay to lr * LR_FLOOR at `steps`
    weight_decay: float = 0.0
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    grad_clip: float = 1.0
    ema_decay: float = 0.999  # applied every ema_every steps (the paper is commonly read as 0.99 every 100)
    ema_every: int = 1
    # data
    train_examples: int = 8192  # the training pool rendered once and held in memory
    val_examples: int = 256
    text_drop_prob: float = 0.3162  # per text encoder; sqrt(0.1): both dropped on ~10 % of steps
    text_words: int = 16  # words kept per text encoder (2 x text_words text tokens); longer captions are cut
    # bookkeeping
    log_every: int = 10
    eval_every: int = 100  # validation loss, best-checkpoint selection, and the resume checkpoint
    keep_checkpoints: int = 2  # full-state checkpoints kept in checkpoints/ (the newest ones)

    def validate(self) -> None:
        """Raise :class:`RunError` (or the dataset's or formulation's error) for a config no run can train."""
        from trajbench.data import check_dataset_name

        for item in dataclasses.fields(self):
            check_like(item.name, getattr(self, item.name), item.default, RunError)
        formulations.parse(self.formulation)
        check_dataset_name(self.dataset)
        if self.dtype not in DTYPES:
            raise RunError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        for name in ("lr", "grad_clip"):
            if not 0 < getattr(self, name) < float("inf"):
                raise RunError(f"{name} must be a positive finite number, got {getattr(self, name)}")
        if self.eval_every % self.log_every:
            raise RunError(f"eval_every ({self.eval_every}) must be a multiple of log_every ({self.log_every})")
        for name in ("steps", "batch_size", "log_every", "eval_every", "ema_every", "train_examples", "val_examples",
                     "keep_checkpoints", "text_words", "autoencoder_steps"):
            if getattr(self, name) < 1:
                raise RunError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.latent_factor < 1 or self.latent_factor & (self.latent_factor - 1) or self.resolution % self.latent_factor:
            raise RunError(f"latent_factor must be 1 or a power of two dividing the resolution {self.resolution}, "
                           f"got {self.latent_factor}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise RunError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if not 0.0 <= self.text_drop_prob < 1.0:
            raise RunError(f"text_drop_prob must lie in [0, 1), got {self.text_drop_prob}")
        try:
            model_config(self)
        except ValueError as error:
            raise RunError(f"the model cannot be built: {error}; change it with --set") from None


PRESETS: dict[str, dict[str, Any]] = {
    # seconds on a laptop CPU: a falling loss, not a good model
    "smoke": dict(resolution=16, depth=2, width=64, heads=2, patch_size=4, batch_size=32, steps=400, lr=1e-3,
                  warmup_steps=50, ema_decay=0.99, train_examples=4096, val_examples=128, eval_every=100),
    # minutes on a laptop CPU
    "quick": dict(resolution=16, depth=3, width=96, heads=3, patch_size=2, batch_size=64, steps=2000, lr=1e-3,
                  warmup_steps=100, ema_decay=0.995, train_examples=16384, val_examples=256, eval_every=250),
    # the paper's recipe at small scale (lr 1e-4 with 1000 warm-up steps, EMA 0.99 every 100 steps)
    "study": dict(resolution=32, depth=4, width=0, heads=0, patch_size=2, batch_size=256, steps=20000, lr=1e-4,
                  warmup_steps=1000, ema_decay=0.99, ema_every=100, train_examples=50000, val_examples=512,
                  eval_every=1000, log_every=50),
}


def _coerce(field: dataclasses.Field, text: str):
    kind = field.type if isinstance(field.type, type) else {"int": int, "float": float, "str": str}[field.type]
    try:
        return kind(text)
    except ValueError:
        raise RunError(f"--set {field.name}={text!r}: expected {kind.__name__}") from None


def resolve_config(preset: str | None = None, overrides: list[str] | tuple[str, ...] = (), **values) -> TrainConfig:
    """Defaults < preset < keyword values < ``key=value`` overrides; validated."""
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    settings: dict[str, Any] = {}
    if preset is not None:
        if preset not in PRESETS:
            raise RunError(f"unknown preset {preset!r}; presets are {', '.join(PRESETS)}")
        settings.update(PRESETS[preset])
    settings.update({k: v for k, v in values.items() if v is not None})
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or key.strip() not in fields:
            raise RunError(f"--set {item!r}: expected key=value with key one of {', '.join(fields)}")
        settings[key.strip()] = _coerce(fields[key.strip()], text.strip())
    config = TrainConfig(**settings)
    config = dataclasses.replace(config, formulation=formulations.parse(config.formulation).name)
    config.validate()
    return config


# ---- model, data and state ------------------------------------------------------------------------


def text_config(config: TrainConfig):
    """The :class:`TextConfig` of a run's text encoders."""
    from trajbench.models.text import TextConfig

    return TextConfig(max_len=config.text_words, drop_probs=(config.text_drop_prob, config.text_drop_prob))


def build_text_encoders(config: TrainConfig):
    from trajbench.models.text import TextEncoders

    return TextEncoders(text_config(config))


def data_shape(config: TrainConfig) -> tuple[int, int, int]:
    """[H, W, C] of what the model denoises: the image, or its latent (``latent_factor > 1``)."""
    if config.latent_factor == 1:
        return config.resolution, config.resolution, 3
    side = config.resolution // config.latent_factor
    return side, side, config.latent_channels


def build_autoencoder(config: TrainConfig):
    """The run's autoencoder, None in pixel space. One per (dataset, resolution, latent shape), shared by every
    seed (it is trained on the dataset at seed 0) and cached; see :mod:`trajbench.models.autoencoder`."""
    if config.latent_factor == 1:
        return None
    from trajbench.data import get_dataset
    from trajbench.models.autoencoder import load_or_train_autoencoder

    dataset = get_dataset(config.dataset, resolution=config.resolution, seed=0)
    return load_or_train_autoencoder(dataset, config={"factor": config.latent_factor, "channels": config.latent_channels,
                                                      "steps": config.autoencoder_steps})


def model_config(config: TrainConfig):
    """The :class:`MMDiTConfig` of a run (text sizes from its text encoders' config)."""
    from trajbench.models.mmdit import MMDiTConfig

    side, _, channels = data_shape(config)
    return MMDiTConfig(
        depth=config.depth, width=config.width or None, heads=config.heads or None, patch_size=config.patch_size,
        image_size=side, channels=channels, dtype=config.dtype, **text_config(config).model_kwargs(),
    )


def build_model(config: TrainConfig):
    from trajbench.models.mmdit import MMDiT

    return MMDiT(model_config(config))


def load_split(dataset, text_encoders, split: str, count: int, autoencoder=None) -> dict[str, np.ndarray]:
    """Images (their standardised latents, given an autoencoder) and encoded captions of the first ``count``
    items of a split."""
    count = min(count, dataset.split_size(split))
    indices = np.arange(count)
    images = dataset.images(split, indices)
    if autoencoder is not None:
        images = autoencoder.to_latent(images)
    tokens, pooled = text_encoders.encode(dataset.captions(split, indices))
    return {"images": np.asarray(images, np.float32), "tokens": np.asarray(tokens, np.float32),
            "pooled": np.asarray(pooled, np.float32)}


def learning_rate_schedule(config: TrainConfig) -> optax.Schedule:
    """Linear warm-up from 0 to lr over ``warmup_steps``, then constant, or (``lr_schedule = "cosine"``)
    lr_k = lr (f + (1 - f) (1 + cos(pi (k - w) / (steps - w))) / 2) with f = LR_FLOOR, reaching lr f at ``steps``."""
    warmup = max(config.warmup_steps, 1)
    if config.lr_schedule == "constant":
        return optax.linear_schedule(0.0, config.lr, warmup)
    return optax.warmup_cosine_decay_schedule(0.0, config.lr, warmup, max(config.steps, warmup + 1),
                                              end_value=config.lr * LR_FLOOR)


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """AdamW on :func:`learning_rate_schedule`, after global-norm gradient clipping."""
    schedule = learning_rate_schedule(config)
    return optax.chain(
        optax.clip_by_global_norm(config.grad_clip),
        optax.adamw(schedule, b1=config.adam_b1, b2=config.adam_b2, weight_decay=config.weight_decay),
    )


def ema_update(ema, params, decay: float, apply):
    """ema <- decay ema + (1 - decay) params, where ``apply`` (a traced bool) says so."""
    return jax.tree.map(lambda e, p: jnp.where(apply, decay * e + (1.0 - decay) * p, e), ema, params)


def data_mesh() -> jax.sharding.Mesh:
    """A 1-D mesh over every device (all hosts), axis "data"."""
    return jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def variant_mesh() -> jax.sharding.Mesh:
    """A 1-D mesh over every device, axis "variant": stacked runs are split across devices."""
    return jax.make_mesh((jax.device_count(),), ("variant",), axis_types=(jax.sharding.AxisType.Auto,))


def maybe_initialize_distributed() -> None:
    """Join a multi-host job when the environment configures one (JAX_COORDINATOR_ADDRESS or a cluster
    that ``jax.distributed`` detects by itself, signalled by TRAJBENCH_DISTRIBUTED=1)."""
    if os.environ.get("JAX_COORDINATOR_ADDRESS") or os.environ.get("TRAJBENCH_DISTRIBUTED") == "1":
        if not jax.distributed.is_initialized():
            jax.distributed.initialize()


def stack_formulations(names) -> Formulation:
    """Formulations of one family (one tree structure) stacked on a leading axis of their parameters."""
    members = [formulations.get(n) for n in names]
    structures = {jax.tree.structure(m) for m in members}
    if len(structures) != 1:
        raise RunError(f"cannot train {list(names)} together: they are not one family with different parameters")
    return jax.tree.map(lambda *leaves: jnp.stack([jnp.asarray(x, jnp.float32) for x in leaves]), *members)


def recipe_of(config: TrainConfig) -> TrainConfig:
    """``config`` without its formulation: what runs that share one Trainer and its compiled programs have in
    common."""
    return dataclasses.replace(config, formulation=TrainConfig.formulation)


def trainer_for(config: TrainConfig, variants: int = 0) -> "Trainer":
    """The Trainer of ``config``'s recipe, shared (in this process) by every run that differs only in its
    formulation: a grid's cells then trace and compile their steps once per family, not once per cell."""
    return _shared_trainer(recipe_of(config), variants)


@functools.lru_cache(maxsize=4)
def _shared_trainer(recipe: TrainConfig, variants: int) -> "Trainer":
    return Trainer(recipe, variants)


class Trainer:
    """Compiled pieces of one run, or of K runs stepped together: ``init_state``, ``train_step``,
    ``validation_losses``.

    ``variants=K > 0``: K runs that share every setting but their formulation's parameters. Their states and
    formulations are stacked on a leading axis and one ``vmap``-ed program steps them all; every run sees the
    same batches, noise and text dropout as it would alone (all are drawn from its seed and the step), so each
    ends where it would have trained one by one, to float tolerance. With several devices and K divisible by
    their number, the variant axis is sharded over the devices; otherwise the batch is.

    The formulation is an argument of every compiled piece, never part of the Trainer: one Trainer serves every
    run of its recipe (see :func:`trainer_for`), ``config.formulation`` is ignored.
    """

    def __init__(self, config: TrainConfig, variants: int = 0):
        self.config = config
        self.variants = variants
        self.text_encoders = build_text_encoders(config)
        self.autoencoder = build_autoencoder(config)
        self.model = build_model(config)
        self.optimizer = make_optimizer(config)
        self.schedule = learning_rate_schedule(config)
        devices = jax.device_count()
        self.shard_variants = variants > 0 and devices > 1 and variants % devices == 0
        if self.shard_variants:
            self.mesh = variant_mesh()
            self.replicated = NamedSharding(self.mesh, P())
            self.batch_sharding = self.replicated
            self.state_sharding = NamedSharding(self.mesh, P("variant"))
        else:
            self.mesh = data_mesh()
            self.replicated = NamedSharding(self.mesh, P())
            self.batch_sharding = NamedSharding(self.mesh, P("data"))
            self.state_sharding = self.replicated
            if config.batch_size % devices:
                raise RunError(f"batch_size {config.batch_size} is not divisible by the {devices} devices")
        root = jax.random.key(config.seed)
        self.init_key, self.train_key, self.val_key = jax.random.split(root, 3)
        step, validation = self._train_step, self._validation_losses
        if variants:
            step, validation = self._stacked_train_step, jax.vmap(validation, in_axes=(0, 0, None))
        self.train_step = jax.jit(step, donate_argnums=(1,))
        self.validation_losses = jax.jit(validation, compiler_options=xla.FORWARD_COMPILER_OPTIONS)

    def init_state(self, pool) -> dict:
        images = jnp.zeros((1,) + pool["images"].shape[1:])
        params = jax.jit(self.model.init)(self.init_key, images, jnp.zeros((1,)), pool["tokens"][:1], pool["pooled"][:1])
        state = {"params": params, "ema": jax.tree.map(jnp.copy, params), "opt": self.optimizer.init(params), "step": jnp.int32(0)}
        return jax.device_put(state, self.replicated)

    def stack(self, states: list[dict]) -> dict:
        """K single-run states -> one stacked state on the variant axis (for ``variants=K``)."""
        stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)
        return jax.device_put(stacked, self.state_sharding)

    def model_fn(self, params, tokens, pooled):
        return lambda z, c_noise: self.model.apply(params, z, c_noise, tokens, pooled)

    def _batch(self, step, pool):
        """The batch of a step, drawn from the pool with key fold_in(train_key, step): images, the text
        conditioning after dropout, and the key of the loss's noise and times."""
        config = self.config
        key_batch, key_drop, key_loss = jax.random.split(jax.random.fold_in(self.train_key, step), 3)
        indices = jax.random.randint(key_batch, (config.batch_size,), 0, pool["images"].shape[0])
        batch = {k: jax.lax.with_sharding_constraint(v[indices], self.batch_sharding) for k, v in pool.items()}
        tokens, pooled = self.text_encoders.drop_text(key_drop, batch["tokens"], batch["pooled"])
        return batch["images"], tokens, pooled, key_loss

    def _update(self, formulation, state, images, tokens, pooled, key_loss):
        """One AdamW step (and EMA update) of one run on a given batch."""
        config = self.config
        step = state["step"] + 1

        def loss_fn(params):
            return formulation.loss(self.model_fn(params, tokens, pooled), images, key_loss)

        loss, grads = jax.value_and_grad(loss_fn)(state["params"])
        updates, opt = self.optimizer.update(grads, state["opt"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        ema = ema_update(state["ema"], params, config.ema_decay, step % config.ema_every == 0)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads)}
        return {"params": params, "ema": ema, "opt": opt, "step": step}, metrics

    def _train_step(self, formulation, state, pool):
        """One run's step on the batch of its next step."""
        return self._update(formulation, state, *self._batch(state["step"] + 1, pool))

    def _stacked_train_step(self, formulation, state, pool):
        """K stacked runs' step: the batch is drawn once (every run is at the same step and draws the same
        batch), the update is vmapped over the runs."""
        batch = self._batch(state["step"][0] + 1, pool)
        return jax.vmap(self._update, in_axes=(0, 0, None, None, None, None))(formulation, state, *batch)

    def _validation_losses(self, formulation, params, val):
        """Mean loss over the validation set at each of the eight VALIDATION_TIMES (no text dropout)."""
        eps = jax.random.normal(self.val_key, val["images"].shape)
        model_fn = self.model_fn(params, val["tokens"], val["pooled"])

        def at(t):
            times = jnp.full((val["images"].shape[0],), t, jnp.float32)
            return jnp.mean(formulation.loss_at(model_fn, val["images"], eps, times))

        return jax.lax.map(at, jnp.asarray(VALIDATION_TIMES, jnp.float32))

    def learning_rate(self, step: int) -> float:
        return float(self.schedule(step))


# ---- the run folder ---------------------------------------------------------------------------------


def package_versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("trajbench", "jax", "flax", "optax", "orbax-checkpoint", "numpy")}


@contextlib.contextmanager
def _holding_interrupts():
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


def _checkpoint_manager(directory: Path, keep: int):
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
        self.latest = _checkpoint_manager(out / "checkpoints", keep=config.keep_checkpoints)
        self.best_manager = _checkpoint_manager(out / "best", keep=1)
        with _holding_interrupts():
            restored, meta = _restore_latest(self.latest, jax.tree.map(ocp.utils.to_shape_dtype_struct, fresh_state),
                                             out / "unreadable-checkpoints")
        if restored is None:
            check_run_folder(out, config)  # refuses a run whose every checkpoint was unreadable
        state = fresh_state if restored is None else jax.device_put(restored, fresh_state["step"].sharding)
        self.start = int(state["step"])
        self.best = meta.get("best", {"step": None, "ema_val_loss": float("inf")})
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
        """Saves ``params_and_ema()`` as the best checkpoint when the row's EMA validation loss improves."""
        import orbax.checkpoint as ocp

        if row["ema_val_loss"] < self.best["ema_val_loss"]:
            self.best = {"step": step, "ema_val_loss": row["ema_val_loss"], "val_loss": row["val_loss"]}
            if step not in self.best_manager.all_steps():
                self.best_manager.save(step, args=ocp.args.StandardSave(params_and_ema()))
                self.best_manager.wait_until_finished()
            if self.is_main:
                write_json_atomic(self.out / "best.json", self.best)

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
    for step in range(start + 1, last + 1):
        state, metrics = trainer.train_step(formulation, state, pool)
        window.append(metrics)
        if step == start + 1:  # the rate shown leaves out compiling
            jax.block_until_ready(metrics)
            bar.unpause()
        if step % config.log_every and step != last:
            continue
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
            with _holding_interrupts():
                if evaluate:
                    folder.keep_best(step, row, lambda: lane({"params": state["params"], "ema": state["ema"]}, i))
                folder.record(step, row)
                if step % config.eval_every == 0 or step == last:
                    folder.checkpoint(step, lane(state, i))
        if not alive:
            break
        bar.update(step - bar.n)
        bar.set_postfix(loss=f"{float(np.mean(loss[alive])):.4g}")
    bar.close()
    for i in alive:
        results[pending[i]] = folders[pending[i]].close(last)
    return results


def _last_logged_loss(path: Path) -> float:
    rows = _read_jsonl(path)
    return rows[-1]["loss"] if rows else float("nan")


# ---- reading a finished run ---------------------------------------------------------------------------


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
        with _checkpoint_manager(folder, keep=config.keep_checkpoints) as manager:
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
        with _checkpoint_manager(folder, keep=config.keep_checkpoints) as manager:
            restored = manager.restore(step, args=args)
    except Exception as error:  # noqa: BLE001
        raise RunError(f"checkpoint {folder}/{step} is unreadable ({type(error).__name__}); "
                       f"retrain or pick another with --checkpoint") from None
    restored = restored["state"] if checkpoint != "best" else restored
    weights = {"ema": restored["ema"], "raw": restored["params"]}
    return TrainedRun(config, formulations.get(config.formulation), trainer.model, trainer.text_encoders, weights, step,
                      trainer.autoencoder)
