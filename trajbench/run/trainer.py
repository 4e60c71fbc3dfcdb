"""The compiled pieces of one run, or of K runs stepped together (:class:`Trainer`), shared by every run of one
recipe."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from trajbench import formulations, xla
from trajbench.formulations import Formulation
from trajbench.run.build import (build_autoencoder, build_model, build_text_encoders, ema_update,
                                 learning_rate_schedule, make_optimizer)
from trajbench.run.config import RunError, TrainConfig, recipe_of
from trajbench.run.mesh import data_mesh, variant_mesh

VALIDATION_TIMES = tuple((k + 0.5) / 8 for k in range(8))
"""The paper validates at eight equally spaced t; we take the midpoints of eight equal cells of [0, 1]
(the ends are singular for some paths)."""


def stack_formulations(names) -> Formulation:
    """Formulations of one family (one tree structure) stacked on a leading axis of their parameters."""
    members = [formulations.get(n) for n in names]
    if len({formulations.program_key(n) for n in names}) != 1:
        raise RunError(f"cannot train {list(names)} together: they are not one family with different parameters")
    return jax.tree.map(lambda *leaves: jnp.stack([jnp.asarray(x, jnp.float32) for x in leaves]), *members)




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
