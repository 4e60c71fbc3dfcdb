"""Training and caching an auxiliary network: the config base, the optimiser, the batches, the fit loop, and
load-or-train.

Every auxiliary network (the CLIP-style evaluator, the GenEval detector, the shape classifier, the latent
autoencoder) is trained the same way; each supplies only its network and its loss.

* optimiser: global-norm clipping at 1, then AdamW with a learning rate warmed up linearly from 0 to ``lr`` over
  ``warmup_steps`` and decayed by a cosine to ``0.02 lr`` at ``steps`` (:func:`make_optimizer`);
* batches: shuffled epochs without replacement, the last partial batch of each epoch dropped
  (:func:`batch_schedule`, seeded by ``seed``);
* step ``i`` gets the random key ``fold_in(key(seed + 1), i)`` for its augmentation or noise (:func:`fit`);
* a trained network is cached by :func:`load_or_train` (:mod:`trajbench.auxnet.cache`).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import time
import warnings
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from trajbench.auxnet.cache import EvaluatorCacheError, EvaluatorConfigError, cache_key, cache_root, entry_dir
from trajbench.auxnet.cache import load_entry, save_entry
from trajbench.errors import check_like

log = logging.getLogger("trajbench.auxnet")

TRAINING_RUNS: collections.Counter = collections.Counter()
"""How many times each kind of auxiliary network was trained in this process (a cache hit does not count)."""

RECORD_EVERY = 50  # steps between the rows of a fit's history


@dataclass(frozen=True)
class FitConfig:
    """The training budget every auxiliary network's config has; a subclass adds its architecture fields and
    overrides the defaults it needs.  Every field is part of the cache key, so changing a default here changes
    the key of every network that keeps it."""

    label: ClassVar[str] = "auxiliary network"  # names the network in error messages

    steps: int = 800
    batch_size: int = 128
    lr: float = 2e-3  # peak learning rate
    warmup_steps: int = 100
    weight_decay: float = 1e-4
    train_examples: int = 0  # items of the training split to train on (capped at its size); 0 = all of it

    def validate(self):
        """``self``, or raise :class:`EvaluatorConfigError` for a budget that cannot train."""
        if (self.steps < 1 or self.batch_size < 2 or self.lr <= 0 or self.warmup_steps < 0 or self.weight_decay < 0
                or self.train_examples < 0):
            raise EvaluatorConfigError(f"invalid {self.label} config: {self}")
        return self

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_any(cls, config):
        """A config from ``None`` (the defaults), an instance, or a dict of fields (lists become tuples)."""
        if config is None:
            return cls()
        if isinstance(config, cls):
            return config
        if isinstance(config, dict):
            names = {f.name for f in dataclasses.fields(cls)}
            bad = sorted(set(config) - names)
            if bad:
                raise EvaluatorConfigError(f"unknown {cls.__name__} field(s) {bad}; valid: {', '.join(sorted(names))}")
            defaults = cls()
            for key, value in config.items():
                check_like(f"{cls.__name__} {key}", value, getattr(defaults, key), EvaluatorConfigError)
            fixed = {k: (tuple(v) if isinstance(v, list) else v) for k, v in config.items()}
            return cls(**fixed)
        raise TypeError(f"config must be None, a dict or a {cls.__name__}, got {type(config).__name__}")

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


def make_optimizer(config: FitConfig):
    """Clip to global norm 1, then AdamW on a warm-up + cosine schedule (see the module docstring)."""
    import optax

    schedule = optax.warmup_cosine_decay_schedule(
        0.0, config.lr, max(1, min(config.warmup_steps, config.steps - 1)), config.steps, end_value=config.lr * 0.02
    )
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=config.weight_decay))


def batch_schedule(n: int, batch_size: int, steps: int, seed: int) -> np.ndarray:
    """``[steps, batch_size]`` example indices: shuffled epochs without replacement (batch <= n)."""
    rng = np.random.default_rng(seed)
    bs = min(batch_size, n)
    per_epoch = n // bs
    epochs = -(-steps // per_epoch)
    rows = [rng.permutation(n)[: per_epoch * bs].reshape(per_epoch, bs) for _ in range(epochs)]
    return np.concatenate(rows)[:steps]


def training_count(dataset, split: str, config: FitConfig) -> int:
    """How many items of ``dataset``'s ``split`` a fit uses: ``config.train_examples`` capped at the split's size,
    0 meaning all of it (at least 2, else ``ValueError``)."""
    n = dataset.split_size(split)
    if config.train_examples:
        n = min(n, config.train_examples)
    if n < 2:
        raise ValueError(f"the {split} split of {dataset.name!r} has {n} items; need at least 2")
    return n


def fit(loss_fn, params, data, config: FitConfig, seed: int, name: str, aux_names=()) -> tuple:
    """Minimise ``loss_fn(params, data, idx, key) -> (loss, aux)`` from ``params``: ``config.steps`` jitted steps
    of :func:`make_optimizer` on the batches ``idx`` of :func:`batch_schedule` over the leading axis of ``data``
    (a pytree of arrays), with the step's key ``fold_in(key(seed + 1), step)``; ``aux`` is a tuple of scalars.

    Returns ``(params, info)``, ``info`` holding ``steps``, ``final_loss``, ``history`` (rows ``[step, loss,
    *aux]`` every :data:`RECORD_EVERY` steps and at the last), ``compile_seconds`` and ``seconds_per_step``.
    ``name`` and ``aux_names`` label the log lines."""
    import jax
    import jax.numpy as jnp
    import optax

    n = jax.tree_util.tree_leaves(data)[0].shape[0]
    opt = make_optimizer(config)
    opt_state = jax.jit(opt.init)(params)

    @jax.jit
    def step(p, s, data, idx, key):
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, data, idx, key)
        updates, s = opt.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss, aux

    key = jax.random.key(seed + 1)
    line = f"{name} step %d: loss %.4f" + "".join(f" {a} %.4f" for a in aux_names)
    history = []
    t_start = time.perf_counter()
    for i, idx in enumerate(batch_schedule(n, config.batch_size, config.steps, seed)):
        params, opt_state, loss, aux = step(params, opt_state, data, jnp.asarray(idx), jax.random.fold_in(key, i))
        if i == 0:
            jax.block_until_ready(loss)
            t_compiled = time.perf_counter()
        if (i + 1) % RECORD_EVERY == 0 or i + 1 == config.steps:
            history.append([i + 1, float(loss), *(float(a) for a in aux)])
            log.info(line, *history[-1])
    t_end = time.perf_counter()
    info = {"steps": config.steps, "final_loss": round(history[-1][1], 5),
            "compile_seconds": round(t_compiled - t_start, 2),
            "seconds_per_step": round((t_end - t_compiled) / max(1, config.steps - 1), 4), "history": history}
    return jax.device_get(params), info


def load_or_train(kind, dataset, config, seed, cache_dir, template_fn, train_fn, on_corrupt, retrain, version):
    """The cache protocol of every auxiliary network: ``(params, meta, path, source)``.

    ``template_fn()`` gives the expected parameter tree (shapes), ``train_fn()`` gives ``(params, info)``.
    ``on_corrupt``: ``"retrain"`` (warn in one line, retrain, overwrite) or ``"error"`` (raise
    :class:`EvaluatorCacheError`).  ``source`` is ``"cache"`` or ``"trained"``.
    """
    if on_corrupt not in ("retrain", "error"):
        raise ValueError(f"on_corrupt must be 'retrain' or 'error', got {on_corrupt!r}")
    spec = dataset.spec()
    key = cache_key(kind, spec, config.to_dict(), seed, version)
    path = entry_dir(cache_root(cache_dir), kind, spec, key)
    if path.exists() and not retrain:
        try:
            params, meta = load_entry(path, template_fn(), key=key)
            log.info("loaded %s evaluator %s from %s", kind, key, path)
            return params, meta, path, "cache"
        except EvaluatorCacheError as exc:
            if on_corrupt == "error":
                raise
            warnings.warn(f"{exc}; retraining it now", RuntimeWarning, stacklevel=3)
    t0 = time.perf_counter()
    params, info = train_fn()
    info = dict(info, train_seconds=round(time.perf_counter() - t0, 2))
    TRAINING_RUNS[kind] += 1
    meta = {"kind": kind, "version": version, "key": key, "dataset": spec, "config": config.to_dict(),
            "seed": int(seed), "train": info}
    try:
        save_entry(path, params, meta)
    except OSError as exc:  # an unwritable cache is not fatal: the network still works in memory
        warnings.warn(f"could not write the evaluator cache {path}: {exc}", RuntimeWarning, stacklevel=3)
    return params, dict(meta), path, "trained"
