"""A small convolutional autoencoder: the latent space a run trains in when ``TrainConfig.latent_factor > 1``.

SD3 trains its MMDiT in the latent space of a pretrained autoencoder. With no downloads, trajbench trains its
own, once per dataset (on the ``train`` split; never on ``reference`` or ``evaluator``), and caches it like the
evaluators (``load_or_train_autoencoder``; the cache key holds the dataset spec and the whole config).

* ``encode``: x [B, H, W, 3] in [-1, 1] -> z [B, H/f, W/f, C] (f = 2^k): a stride-2 convolution and a residual
  block per halving, the width doubling each time.
* ``decode``: z -> x-hat [B, H, W, 3]: the mirror image (residual block, nearest-neighbour x2, convolution).
* Training loss: ``||x - D(E(x) + s eps)||^2 + beta ||E(x)||^2`` with eps ~ N(0, I): the decoder learns to
  read a slightly noisy latent (so a sampled latent that is a little off still decodes to a clean image, the
  role of the VAE's KL term in SD), and ``beta`` keeps the latent scale from growing to drown the noise.
* The MMDiT sees standardised latents ``(z - mu_c) / sigma_c`` per channel (SD3's shift and scale factors),
  with mu and sigma measured on the training split: :meth:`Autoencoder.to_latent` / :meth:`Autoencoder.to_image`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from trajbench.auxnet.apply import resolve_dataset
from trajbench.auxnet.cache import EvaluatorConfigError
from trajbench.auxnet.fit import FitConfig, fit, load_or_train, training_count

VERSION = 1  # of the autoencoder's code (architecture, loss): part of the cache key


@dataclass(frozen=True)
class AutoencoderConfig(FitConfig):
    """Architecture and training budget (all of it is part of the cache key); trained on the ``train`` split."""

    label: ClassVar[str] = "autoencoder"

    factor: int = 2  # spatial downsampling (a power of two)
    channels: int = 4  # latent channels
    width: int = 16  # convolution width at full resolution, doubled at each halving
    latent_noise: float = 0.1  # s: noise added to the latent the decoder reads during training
    latent_penalty: float = 1e-3  # beta
    batch_size: int = 64
    weight_decay: float = 0.0
    train_examples: int = 20000

    def validate(self) -> "AutoencoderConfig":
        if self.factor < 2 or self.factor & (self.factor - 1):
            raise EvaluatorConfigError(f"autoencoder factor must be a power of two >= 2, got {self.factor}")
        if self.channels < 1 or self.width < 1:
            raise EvaluatorConfigError(f"invalid {self.label} config: {self}")
        return super().validate()

    @property
    def halvings(self) -> int:
        return self.factor.bit_length() - 1

    def latent_shape(self, resolution: int) -> tuple[int, int, int]:
        """[H/f, W/f, C] of the latent of a resolution x resolution image."""
        side = resolution // self.factor
        return side, side, self.channels


def _modules():
    import flax.linen as nn

    class ResBlock(nn.Module):
        width: int

        @nn.compact
        def __call__(self, x):
            h = nn.Conv(self.width, (3, 3))(nn.silu(x))
            h = nn.Conv(self.width, (3, 3))(nn.silu(h))
            skip = x if x.shape[-1] == self.width else nn.Conv(self.width, (1, 1))(x)
            return skip + h

    class Encoder(nn.Module):
        config: AutoencoderConfig

        @nn.compact
        def __call__(self, x):
            cfg = self.config
            h = nn.Conv(cfg.width, (3, 3))(x)
            for level in range(1, cfg.halvings + 1):
                h = nn.Conv(cfg.width * 2**level, (3, 3), strides=(2, 2))(nn.silu(h))
                h = ResBlock(cfg.width * 2**level)(h)
            return nn.Conv(cfg.channels, (1, 1))(nn.silu(h))

    class Decoder(nn.Module):
        config: AutoencoderConfig

        @nn.compact
        def __call__(self, z):
            cfg = self.config
            h = nn.Conv(cfg.width * 2**cfg.halvings, (3, 3))(z)
            for level in range(cfg.halvings, 0, -1):
                h = ResBlock(cfg.width * 2**level)(h)
                h = nn.Conv(cfg.width * 2 ** (level - 1), (3, 3))(upsample(nn.silu(h)))
            return nn.Conv(3, (3, 3))(nn.silu(h))

    class AutoencoderNet(nn.Module):
        config: AutoencoderConfig

        def setup(self):
            self.encoder = Encoder(self.config)
            self.decoder = Decoder(self.config)

        def __call__(self, x, noise):
            z = self.encoder(x)
            return z, self.decoder(z + noise)

        def encode(self, x):
            return self.encoder(x)

        def decode(self, z):
            return self.decoder(z)

    return AutoencoderNet


def upsample(h):
    """Nearest-neighbour x2 upsampling of [B, H, W, C]."""
    import jax.numpy as jnp

    return jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)


def _net(config: AutoencoderConfig):
    return _modules()(config)


def train_autoencoder(dataset, config: AutoencoderConfig, seed: int = 0):
    """Train on the first ``train_examples`` items of the ``train`` split: ``(params, info)``; ``info`` holds the
    per-channel latent mean and std (the standardisation) and the reconstruction error on held-out ``val``."""
    import jax
    import jax.numpy as jnp

    n = training_count(dataset, "train", config)
    images = jnp.asarray(dataset.images("train", np.arange(n)))
    model = _net(config)

    def loss_fn(p, images, idx, key):
        x = images[idx]
        z = model.apply(p, x, method="encode")
        noise = config.latent_noise * jax.random.normal(key, z.shape)
        x_hat = model.apply(p, z + noise, method="decode")
        reconstruction = jnp.mean((x_hat - x) ** 2)
        return reconstruction + config.latent_penalty * jnp.mean(z**2), (reconstruction,)

    latents = jnp.zeros((1, *config.latent_shape(dataset.resolution)))
    params = jax.jit(model.init)(jax.random.key(seed), images[:1], latents)
    params, info = fit(loss_fn, params, images, config, seed, "autoencoder", ("reconstruction",))
    ae = Autoencoder(params, config, {})
    latents = ae.encode(np.asarray(images[: min(n, 4096)]))
    mean, std = latents.mean(axis=(0, 1, 2)), latents.std(axis=(0, 1, 2)) + 1e-6
    val = dataset.images("val", np.arange(min(512, dataset.split_size("val"))))
    val_mse = float(np.mean((ae.decode(ae.encode(val)) - val) ** 2))
    info.update(examples=n, val_mse=round(val_mse, 6), latent_mean=[float(v) for v in mean],
                latent_std=[float(v) for v in std])
    return ae.params, info


class Autoencoder:
    """A trained autoencoder with its latent standardisation (``mean`` / ``std`` per channel)."""

    def __init__(self, params, config: AutoencoderConfig, meta: dict, path=None):
        import jax

        self.params, self.config, self.meta, self.path = params, config, meta, path
        train = meta.get("train", {})
        self.mean = np.asarray(train.get("latent_mean", np.zeros(config.channels)), np.float32)
        self.std = np.asarray(train.get("latent_std", np.ones(config.channels)), np.float32)
        model = _net(config)
        self._encode = jax.jit(lambda p, x: model.apply(p, x, method="encode"))
        self._decode = jax.jit(lambda p, z: model.apply(p, z, method="decode"))

    def encode(self, images, batch_size: int = 512) -> np.ndarray:
        """Raw latents of images [N, H, W, 3] in [-1, 1]."""
        return self._batched(self._encode, images, batch_size)

    def decode(self, latents, batch_size: int = 512) -> np.ndarray:
        """Images (not clipped) of raw latents."""
        return self._batched(self._decode, latents, batch_size)

    def to_latent(self, images) -> np.ndarray:
        """Standardised latents ``(E(x) - mu) / sigma``: what the MMDiT is trained on."""
        return (self.encode(images) - self.mean) / self.std

    def to_image(self, latents):
        """``D(sigma z + mu)`` of standardised latents; jit-able (a jax array in, a jax array out)."""
        return self._decode(self.params, latents * self.std + self.mean)

    def _batched(self, fn, x, batch_size: int) -> np.ndarray:
        x = np.asarray(x, np.float32)
        return np.concatenate([np.asarray(fn(self.params, x[i:i + batch_size])) for i in range(0, len(x), batch_size)])


def load_or_train_autoencoder(dataset, *, cache_dir=None, config=None, seed: int = 0, resolution=None,
                              on_corrupt: str = "retrain", retrain: bool = False) -> Autoencoder:
    """The autoencoder of ``dataset`` (a Dataset, or a name with ``resolution``): from the cache, else trained
    and cached (:func:`trajbench.auxnet.fit.load_or_train`; the arguments as for the evaluators')."""
    dataset = resolve_dataset(dataset, resolution)
    config = AutoencoderConfig.from_any(config).validate()
    if dataset.resolution % config.factor:
        raise EvaluatorConfigError(f"resolution {dataset.resolution} is not divisible by the autoencoder factor "
                                   f"{config.factor}")

    def template():
        import jax
        import jax.numpy as jnp

        images = jnp.zeros((1, dataset.resolution, dataset.resolution, 3))
        latents = jnp.zeros((1, *config.latent_shape(dataset.resolution)))
        return jax.eval_shape(lambda: _net(config).init(jax.random.key(0), images, latents))

    params, meta, path, _ = load_or_train("autoencoder", dataset, config, seed, cache_dir, template,
                                          lambda: train_autoencoder(dataset, config, seed), on_corrupt, retrain,
                                          VERSION)
    return Autoencoder(params, config, meta, path)
