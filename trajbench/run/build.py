"""What a run is built of: its text encoders, autoencoder and MMDiT, its data split in memory, its optimiser and
learning-rate schedule, and the EMA update."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from trajbench.run.config import LR_FLOOR, TrainConfig, model_config, text_config

def build_text_encoders(config: TrainConfig):
    from trajbench.models.text import TextEncoders

    return TextEncoders(text_config(config))




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
