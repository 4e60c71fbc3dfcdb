"""The in-house CLIP-style evaluator: a small image tower and text tower trained contrastively, per dataset.

SD3 scores its Section 5.1 models by FID on CLIP image features and by CLIP score.  With no downloads, this
module trains a small CLIP on the dataset's ``evaluator`` split (rendered data disjoint from the generators'
``train`` split), once per (dataset spec, config, seed), freezes it and caches it on disk
(:mod:`trajbench.auxnet`).

Model (:class:`trajbench.metrics.nets.ClipModel`)
    * image tower: a CNN (:class:`~trajbench.metrics.nets.ConvTrunk`) -> ``feature_dim`` (256) PENULTIMATE
      features -> linear projection -> L2-normalised ``embed_dim`` (128) embedding;
    * text tower: the caption's words (this module's own vocabulary: the dataset's word list, plus a few
      hashed buckets for unknown words; 0 = padding) -> learned word + position embeddings -> 2 pre-LN
      transformer blocks -> masked mean -> linear projection -> L2-normalised ``embed_dim`` embedding.

Training: symmetric InfoNCE with a learned temperature, ``logits = exp(s) I T^T`` (``s`` initialised to
``log(1 / 0.07)``, capped at ``log 100`` as in CLIP),
``L = 1/2 [CE_rows(logits, Y) + CE_cols(logits, Y)]``, where the target ``Y`` of a row spreads its mass
uniformly over every example in the batch with the SAME caption (several images share a caption -- all of
synth-imagenet's ten captions recur in every batch -- so one-hot targets would push true pairs apart).
AdamW with linear warm-up and cosine decay; no augmentation (flips would swap "left of" and "right of").

Features used by the metrics:
    * FID / KID use the PENULTIMATE image features (:meth:`Evaluator.fid_features`, 256-d, the analogue of
      Inception's pool3 features; they keep more than the caption-level content the embedding is trained
      to carry, e.g. object colour on synth-imagenet whose captions only name the class);
    * CLIP score uses the L2-normalised embeddings (:meth:`Evaluator.image_features`,
      :meth:`Evaluator.text_features`), cosine similarity of each image with its own prompt.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from trajbench.auxnet.apply import batched, check_images, resolve_dataset
from trajbench.auxnet.cache import EvaluatorCacheError, EvaluatorConfigError, cache_key, canonical_json
from trajbench.auxnet.fit import TRAINING_RUNS, FitConfig, fit, load_or_train, training_count
from trajbench.files import atomic_path
from trajbench.metrics import stats

log = logging.getLogger("trajbench.metrics")

VERSION = 1  # of the CLIP evaluator's code (architecture, loss, data): part of the cache key

__all__ = [
    "TRAINING_RUNS",
    "CaptionTokenizer",
    "Evaluator",
    "EvaluatorCacheError",
    "EvaluatorConfig",
    "evaluator_key",
    "load_or_train_evaluator",
]


@dataclass(frozen=True)
class EvaluatorConfig(FitConfig):
    """Architecture and training budget of the CLIP-style evaluator (all of it is part of the cache key)."""

    label: ClassVar[str] = "evaluator"

    widths: tuple[int, ...] = (24, 48, 96)  # CNN: stem width, then one per stride-2 stage
    feature_dim: int = 256  # penultimate image features (used for FID / KID)
    embed_dim: int = 128  # joint embedding (used for CLIP score)
    text_width: int = 64
    text_layers: int = 2
    text_heads: int = 4
    max_tokens: int = 16  # captions are cut to this many words
    oov_buckets: int = 8  # hashed ids for words outside the dataset's vocabulary
    init_temperature: float = 0.07
    max_logit_scale: float = 100.0
    steps: int = 500
    lr: float = 5e-3
    warmup_steps: int = 50

    def validate(self) -> "EvaluatorConfig":
        if not self.widths:
            raise EvaluatorConfigError(f"invalid {self.label} config: {self}")
        return super().validate()


# =================================================================================================
# tokenizer
# =================================================================================================
class CaptionTokenizer:
    """Word ids for the evaluator's text tower (independent of :mod:`trajbench.models.text`).

    ``0`` = padding; ``1 .. oov_buckets`` = unknown words, by ``blake2b(word) mod oov_buckets``;
    ``oov_buckets + 1 + i`` = the i-th word of ``vocab``.  Words as :func:`trajbench.data.tokenize` splits them.
    """

    def __init__(self, vocab, max_tokens: int = 16, oov_buckets: int = 8):
        self.vocab = list(vocab)
        self.max_tokens = int(max_tokens)
        self.oov_buckets = max(1, int(oov_buckets))
        self._index = {w: self.oov_buckets + 1 + i for i, w in enumerate(self.vocab)}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab) + self.oov_buckets + 1

    def word_id(self, word: str) -> int:
        wid = self._index.get(word)
        if wid is None:
            digest = hashlib.blake2b(word.encode(), digest_size=4).digest()
            wid = 1 + int.from_bytes(digest, "little") % self.oov_buckets
        return wid

    def __call__(self, captions) -> np.ndarray:
        from trajbench.data import tokenize

        if isinstance(captions, str):
            raise TypeError("captions must be a list of strings, not one string")
        out = np.zeros((len(captions), self.max_tokens), dtype=np.int32)
        for i, caption in enumerate(captions):
            words = tokenize(str(caption))[: self.max_tokens] or ["<empty>"]
            out[i, : len(words)] = [self.word_id(w) for w in words]
        return out


# =================================================================================================
# the CLIP evaluator
# =================================================================================================
def _make_model(config: EvaluatorConfig, vocab_size: int):
    from trajbench.metrics.nets import ClipModel

    return ClipModel(
        vocab_size=vocab_size, widths=tuple(config.widths), feature_dim=config.feature_dim,
        embed_dim=config.embed_dim, text_width=config.text_width, text_layers=config.text_layers,
        text_heads=config.text_heads, max_tokens=config.max_tokens, init_temperature=config.init_temperature,
    )


def _tokenizer_for(dataset, config: EvaluatorConfig) -> CaptionTokenizer:
    return CaptionTokenizer(dataset.vocabulary(), config.max_tokens, config.oov_buckets)


def _init_params(model, resolution: int, max_tokens: int, seed: int):
    import jax
    import jax.numpy as jnp

    # jitted: an eager init compiles every small op separately (tens of seconds on a CPU)
    return jax.jit(model.init)(jax.random.key(seed), jnp.zeros((1, resolution, resolution, 3)),
                               jnp.ones((1, max_tokens), jnp.int32))


def train_clip(dataset, config: EvaluatorConfig, seed: int = 0):
    """Train the CLIP-style evaluator on ``dataset``'s ``evaluator`` split: ``(params, info)``."""
    import jax.numpy as jnp
    import optax

    n = training_count(dataset, "evaluator", config)
    images = jnp.asarray(dataset.images("evaluator", np.arange(n)))
    captions = dataset.captions("evaluator", np.arange(n))
    tokenizer = _tokenizer_for(dataset, config)
    ids = jnp.asarray(tokenizer(captions))
    _, cap_id = np.unique(np.asarray(captions, dtype=object).astype(str), return_inverse=True)
    cap_id = jnp.asarray(cap_id.astype(np.int32))
    model = _make_model(config, tokenizer.vocab_size)
    max_log_scale = float(np.log(config.max_logit_scale))

    def loss_fn(p, data, idx, key):
        images, ids, cap_id = data
        img, txt, log_scale = model.apply(p, images[idx], ids[idx])
        scale = jnp.exp(jnp.minimum(log_scale, max_log_scale))
        logits = scale * img @ txt.T
        cid = cap_id[idx]
        same = (cid[:, None] == cid[None, :]).astype(jnp.float32)
        target = same / same.sum(axis=1, keepdims=True)  # symmetric "same caption" relation
        loss = 0.5 * (optax.softmax_cross_entropy(logits, target).mean()
                      + optax.softmax_cross_entropy(logits.T, target).mean())
        acc = same[jnp.arange(idx.shape[0]), jnp.argmax(logits, axis=1)].mean()
        return loss, (acc, scale)

    params = _init_params(model, dataset.resolution, config.max_tokens, seed)
    params, info = fit(loss_fn, params, (images, ids, cap_id), config, seed, "clip evaluator",
                       ("in-batch acc", "scale"))
    _, _, acc, scale = info["history"][-1]
    return params, dict(info, examples=n, final_batch_accuracy=round(acc, 4), final_logit_scale=round(scale, 3))


class Evaluator:
    """A frozen, trained CLIP-style evaluator for one dataset (see the module docstring).

    ``image_features(images)`` -> L2-normalised embeddings ``[N, embed_dim]`` (CLIP score);
    ``fid_features(images)`` -> penultimate features ``[N, feature_dim]`` (FID, KID);
    ``text_features(captions)`` -> L2-normalised embeddings ``[N, embed_dim]``.
    ``key`` is the cache key; ``source`` is ``"trained"`` or ``"cache"``; ``meta`` what training recorded.
    """

    def __init__(self, params, config: EvaluatorConfig, tokenizer: CaptionTokenizer, *, resolution: int,
                 key: str, path: Path | None = None, meta: dict | None = None, source: str = "trained"):
        import jax

        from trajbench.metrics.nets import ClipModel

        self.config = config
        self.tokenizer = tokenizer
        self.resolution = int(resolution)
        self.key = key
        self.path = path
        self.meta = meta or {}
        self.source = source
        self.params = params
        self._model = _make_model(config, tokenizer.vocab_size)
        self._image_fn = jax.jit(lambda p, x: self._model.apply(p, x, method=ClipModel.image_features))
        self._text_fn = jax.jit(lambda p, t: self._model.apply(p, t, method=ClipModel.text_embedding))
        self._ref_stats: dict = {}

    def __repr__(self) -> str:
        name = self.meta.get("dataset", {}).get("name", "?")
        return f"<Evaluator {name} {self.resolution}px key={self.key} ({self.source})>"

    @property
    def train_seconds(self) -> float | None:
        return self.meta.get("train", {}).get("train_seconds")

    def _image_outputs(self, images, batch_size: int):
        x = check_images(images, self.resolution)
        return batched(self._image_fn, self.params, x, batch_size)

    def image_features(self, images, *, layer: str = "embedding", batch_size: int = 256) -> np.ndarray:
        """Image features, float32: ``layer="embedding"`` (default; L2-normalised, ``[N, embed_dim]``) or
        ``"penultimate"`` (``[N, feature_dim]``, what FID uses)."""
        if layer not in ("embedding", "penultimate"):
            raise ValueError(f"layer must be 'embedding' or 'penultimate', got {layer!r}")
        feat, emb = self._image_outputs(images, batch_size)
        return emb if layer == "embedding" else feat

    def fid_features(self, images, *, batch_size: int = 256) -> np.ndarray:
        """The penultimate image features ``[N, feature_dim]`` on which FID and KID are computed."""
        return self.image_features(images, layer="penultimate", batch_size=batch_size)

    def text_features(self, captions, *, batch_size: int = 512) -> np.ndarray:
        """L2-normalised caption embeddings ``[N, embed_dim]`` (float32)."""
        if isinstance(captions, str):
            raise TypeError("captions must be a list of strings, not one string")
        return batched(self._text_fn, self.params, self.tokenizer(list(captions)), batch_size)

    def clip_score(self, images, captions, *, return_per_example: bool = False):
        """:func:`trajbench.metrics.stats.clip_score` of ``images`` against their own ``captions``."""
        if isinstance(captions, str):
            raise TypeError("captions must be a list of strings, not one string")
        captions = list(captions)
        img = self.image_features(images)
        if img.shape[0] != len(captions):
            raise ValueError(f"{img.shape[0]} images but {len(captions)} captions")
        return stats.clip_score(img, self.text_features(captions), return_per_example=return_per_example)

    def reference_statistics(self, dataset, split: str = "reference") -> tuple[np.ndarray, np.ndarray]:
        """``(mu, sigma)`` of the FID features of a whole split of ``dataset`` (memoised, and stored next to
        the cached parameters so later processes skip the forward passes)."""
        dataset = resolve_dataset(dataset, self.resolution)
        if dataset.resolution != self.resolution:
            raise ValueError(f"dataset is {dataset.resolution}px but this evaluator is {self.resolution}px")
        tag = hashlib.sha256(canonical_json([dataset.spec(), split]).encode()).hexdigest()[:12]
        if tag in self._ref_stats:
            return self._ref_stats[tag]
        file = self.path / f"stats-{split}-{tag}.npz" if self.path is not None else None
        if file is not None and file.exists():
            try:
                with np.load(file) as data:
                    result = (np.array(data["mu"], np.float64), np.array(data["sigma"], np.float64))
                if result[0].shape == (self.config.feature_dim,):
                    self._ref_stats[tag] = result
                    return result
            except (OSError, ValueError, KeyError, EOFError) as exc:
                log.warning("ignoring unreadable reference statistics %s (%s)", file, type(exc).__name__)
        n = dataset.split_size(split)
        feats = np.concatenate([self.fid_features(dataset.images(split, np.arange(s, min(s + 2048, n))))
                                for s in range(0, n, 2048)])
        result = stats.feature_statistics(feats)
        self._ref_stats[tag] = result
        if file is not None:
            try:
                with atomic_path(file) as tmp:
                    np.savez(tmp, mu=result[0], sigma=result[1])
            except OSError:
                pass
        return result

    def fid(self, images, reference) -> float:
        """FID of ``images`` against ``reference``: a dataset (its ``reference`` split), a ``(mu, sigma)``
        pair, or another image array."""
        gen = self.fid_features(images)
        if isinstance(reference, tuple):
            ref = reference
        elif hasattr(reference, "spec"):
            ref = self.reference_statistics(reference)
        else:
            ref = stats.feature_statistics(self.fid_features(reference))
        return stats.frechet_distance(gen, ref)


def evaluator_key(dataset, *, config=None, seed: int = 0, resolution=None) -> str:
    """The cache key of the evaluator :func:`load_or_train_evaluator` would return (nothing is trained):
    16 hex digits hashing (dataset spec, config, seed)."""
    dataset = resolve_dataset(dataset, resolution)
    config = EvaluatorConfig.from_any(config).validate()
    return cache_key("clip", dataset.spec(), config.to_dict(), seed, VERSION)


def load_or_train_evaluator(dataset, *, cache_dir=None, config=None, seed: int = 0, resolution=None,
                            on_corrupt: str = "retrain", retrain: bool = False) -> Evaluator:
    """The CLIP-style evaluator of ``dataset`` (a Dataset, or a name with ``resolution``), loaded from the
    cache if present, else trained on the ``evaluator`` split and cached.

    ``config``: an :class:`EvaluatorConfig` or a dict of its fields.  ``on_corrupt``: what an unreadable
    cache entry does -- ``"retrain"`` (one-line warning, retrain, overwrite) or ``"error"`` (raise
    :class:`EvaluatorCacheError`).  ``retrain=True`` ignores the cache.
    """
    dataset = resolve_dataset(dataset, resolution)
    config = EvaluatorConfig.from_any(config).validate()
    tokenizer = _tokenizer_for(dataset, config)

    def template():
        import jax

        model = _make_model(config, tokenizer.vocab_size)
        return jax.eval_shape(lambda: _init_params(model, dataset.resolution, config.max_tokens, seed))

    params, meta, path, source = load_or_train(
        "clip", dataset, config, seed, cache_dir, template, lambda: train_clip(dataset, config, seed),
        on_corrupt, retrain, VERSION,
    )
    return Evaluator(params, config, tokenizer, resolution=dataset.resolution, key=meta["key"], path=path,
                     meta=meta, source=source)
