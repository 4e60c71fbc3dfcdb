"""A run's configuration: :class:`TrainConfig`, the presets, ``key=value`` overrides, and the configs derived from
it (the model's, the text encoders', the shape of what the model denoises)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from trajbench import formulations
from trajbench.errors import UserError, check_like
from trajbench.overrides import parse_assignment

LR_SCHEDULES = ("constant", "cosine")
LR_FLOOR = 0.05
DTYPES = ("float32", "bfloat16", "float16")


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
    # the smallest useful run: a falling loss, not a good model
    "smoke": dict(resolution=16, depth=2, width=64, heads=2, patch_size=4, batch_size=32, steps=400, lr=1e-3,
                  warmup_steps=50, ema_decay=0.99, train_examples=4096, val_examples=128, eval_every=100),
    # a small model on 16 px latents (whose cost per cell benchmarks/README.md records)
    "quick": dict(resolution=16, depth=3, width=96, heads=3, patch_size=2, batch_size=64, steps=2000, lr=1e-3,
                  warmup_steps=100, ema_decay=0.995, train_examples=16384, val_examples=256, eval_every=250),
    # the paper's recipe at small scale (lr 1e-4 with 1000 warm-up steps, EMA 0.99 every 100 steps)
    "study": dict(resolution=32, depth=4, width=0, heads=0, patch_size=2, batch_size=256, steps=20000, lr=1e-4,
                  warmup_steps=1000, ema_decay=0.99, ema_every=100, train_examples=50000, val_examples=512,
                  eval_every=1000, log_every=50),
}


def _coerce(field: dataclasses.Field, text: str, value):
    """A ``--set`` value (:func:`trajbench.overrides.parse_assignment`) as the field's kind: a string field takes a
    TOML string or else the text; a number field its TOML number, or the text as Python reads it (``.5``)."""
    kind = field.type if isinstance(field.type, type) else {"int": int, "float": float, "str": str}[field.type]
    if kind is str:
        return value if isinstance(value, str) else text
    if not isinstance(value, bool) and isinstance(value, (int, float) if kind is float else int):
        return kind(value)
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
        parsed = parse_assignment(item)
        if parsed is None or parsed[0] not in fields:
            raise RunError(f"--set {item!r}: expected key=value with key one of {', '.join(fields)}")
        key, text, value = parsed
        settings[key] = _coerce(fields[key], text, value)
    config = TrainConfig(**settings)
    config = dataclasses.replace(config, formulation=formulations.parse(config.formulation).name)
    config.validate()
    return config



def recipe_of(config: TrainConfig) -> TrainConfig:
    """``config`` without its formulation: what runs that share one Trainer and its compiled programs have in
    common."""
    return dataclasses.replace(config, formulation=TrainConfig.formulation)


def text_config(config: TrainConfig):
    """The :class:`TextConfig` of a run's text encoders."""
    from trajbench.models.text import TextConfig

    return TextConfig(max_len=config.text_words, drop_probs=(config.text_drop_prob, config.text_drop_prob))


def data_shape(config: TrainConfig) -> tuple[int, int, int]:
    """[H, W, C] of what the model denoises: the image, or its latent (``latent_factor > 1``)."""
    if config.latent_factor == 1:
        return config.resolution, config.resolution, 3
    side = config.resolution // config.latent_factor
    return side, side, config.latent_channels


def model_config(config: TrainConfig):
    """The :class:`MMDiTConfig` of a run (text sizes from its text encoders' config)."""
    from trajbench.models.mmdit import MMDiTConfig

    side, _, channels = data_shape(config)
    return MMDiTConfig(
        depth=config.depth, width=config.width or None, heads=config.heads or None, patch_size=config.patch_size,
        image_size=side, channels=channels, dtype=config.dtype, **text_config(config).model_kwargs(),
    )
