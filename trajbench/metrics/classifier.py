"""A held-out recognisability classifier for class-captioned datasets: does a generated image show its class?

Trained once per (dataset spec, config, seed) on the dataset's ``evaluator`` split -- rendered data disjoint
from the generators' ``train`` split -- then frozen and cached on disk with the same protocol as the CLIP
evaluator (:func:`trajbench.auxnet.fit.load_or_train`, kind ``"classifier"``).  It works for any
dataset with a ``labels(split, indices)`` method and a ``classes`` attribute: ``synth-imagenet`` (any
``num_classes``) and CIFAR-10 folders; captioned-only datasets such as ``synth-cc12m`` raise
:class:`UnlabelledDatasetError`.

Model: :class:`~trajbench.metrics.nets.ConvTrunk` (``widths``, ``feature_dim`` features) + a Dense head to
``len(dataset.classes)`` logits.  Training: softmax cross-entropy, fitted by :func:`trajbench.auxnet.fit.fit`
(AdamW with linear warm-up and cosine decay, shuffled epochs).

Augmentation (``augment=True``, the default), applied per training example inside the jitted step:

* a random HORIZONTAL flip -- on synth-imagenet every class keeps its distribution under a left-right mirror
  (all ten shapes are mirror symmetric about an axis; the rotation-limited classes -- square, cross, heart,
  diamond -- have ranges symmetric about 0; crescent and arrow rotate freely, so their orientation carries
  no class information).  No vertical flips: an upside-down heart is not a synth-imagenet heart;
* a random translation by up to ``max_shift`` (1) pixels in x and y (edge pixels repeated);
* brightness jitter: a uniform offset in ``[-brightness, brightness]`` (0.1 on the [-1, 1] scale) added to
  every pixel, then clipped to [-1, 1].

On synth-imagenet at 16x16 the defaults (800 steps; 1500 steps reach 1.0) give 0.999 accuracy on
the held-out ``val`` split (``meta["train"]["val_accuracy"]``: the first 1000 ``val`` items, scored after
training); without augmentation 0.995.  Disturbed val images score lower, as a recognisability measure
should: Gaussian blur sigma 1 / 2 px 0.80 / 0.30, additive noise std 0.3 / 0.6 0.89 / 0.41, flat mean-colour
images 0.11 and pixel-shuffled images 0.13 (chance: 0.10).

Use::

    clf = load_or_train_classifier("synth-imagenet", resolution=16)
    clf.predict(images)                          # class ids [N]
    clf.probabilities(images)                    # softmax [N, num_classes]
    clf.accuracy(images, labels)                 # fraction of images classified as their prompt's class
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from trajbench.auxnet.apply import batched, check_images, resolve_dataset
from trajbench.auxnet.cache import EvaluatorConfigError, cache_key
from trajbench.auxnet.fit import FitConfig, fit, load_or_train, training_count

__all__ = [
    "ClassifierConfig",
    "ShapeClassifier",
    "UnlabelledDatasetError",
    "classifier_key",
    "load_or_train_classifier",
    "train_classifier",
]

VERSION = 1  # of the classifier's code (architecture, loss, augmentation): part of the cache key
VAL_EXAMPLES = 1000  # held-out val items scored after training (recorded in meta["train"])


class UnlabelledDatasetError(ValueError):
    """A dataset without class labels (no ``labels(split, indices)`` or no ``classes``): one line, naming it."""


@dataclass(frozen=True)
class ClassifierConfig(FitConfig):
    """Architecture and training budget of the recognisability classifier (all of it is part of the cache key)."""

    label: ClassVar[str] = "classifier"

    widths: tuple[int, ...] = (32, 64, 128)  # ConvTrunk: stem width, then one per stride-2 stage
    feature_dim: int = 256
    augment: bool = True  # horizontal flips, translations, brightness jitter (see the module docstring)
    max_shift: int = 1  # pixels, with augment
    brightness: float = 0.1  # offset range on the [-1, 1] scale, with augment
    train_examples: int = 10_000

    def validate(self) -> "ClassifierConfig":
        if not self.widths or self.feature_dim < 1 or self.max_shift < 0 or self.brightness < 0:
            raise EvaluatorConfigError(f"invalid {self.label} config: {self}")
        return super().validate()


# =================================================================================================
# data and network
# =================================================================================================
def check_labelled(dataset):
    """``dataset`` if it has class labels, else raise :class:`UnlabelledDatasetError`."""
    classes = getattr(dataset, "classes", None)
    if not callable(getattr(dataset, "labels", None)) or not classes:
        name = getattr(dataset, "name", type(dataset).__name__)
        raise UnlabelledDatasetError(
            f"dataset {name!r} has no class labels (needs a labels(split, indices) method and a classes "
            "attribute, e.g. synth-imagenet); the recognisability classifier only works on class-captioned data")
    return dataset


def _net(config: ClassifierConfig, num_classes: int):
    import flax.linen as nn

    from trajbench.metrics.nets import ConvTrunk

    widths, feature_dim = tuple(config.widths), config.feature_dim

    class ClassifierNet(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(num_classes, name="head")(ConvTrunk(widths, feature_dim, name="trunk")(x))

    return ClassifierNet()


def _init_params(model, resolution: int, seed: int):
    import jax
    import jax.numpy as jnp

    return jax.jit(model.init)(jax.random.key(seed), jnp.zeros((1, resolution, resolution, 3)))


def _augment(x, key, config: ClassifierConfig):
    """Flip, shift and brightness-jitter a batch ``[B, H, W, 3]`` (one draw per example)."""
    import jax
    import jax.numpy as jnp

    b, h, w, _ = x.shape
    k_flip, k_shift, k_bright = jax.random.split(key, 3)
    flip = jax.random.bernoulli(k_flip, 0.5, (b,))
    x = jnp.where(flip[:, None, None, None], x[:, :, ::-1], x)
    s = config.max_shift
    if s:
        padded = jnp.pad(x, ((0, 0), (s, s), (s, s), (0, 0)), mode="edge")
        offsets = jax.random.randint(k_shift, (b, 2), 0, 2 * s + 1)
        x = jax.vmap(lambda im, o: jax.lax.dynamic_slice(im, (o[0], o[1], 0), (h, w, 3)))(padded, offsets)
    if config.brightness:
        x = x + jax.random.uniform(k_bright, (b, 1, 1, 1), minval=-config.brightness, maxval=config.brightness)
    return jnp.clip(x, -1.0, 1.0)


def train_classifier(dataset, config: ClassifierConfig, seed: int = 0):
    """Train the classifier on ``dataset``'s ``evaluator`` split: ``(params, info)``."""
    import jax
    import jax.numpy as jnp
    import optax

    check_labelled(dataset)
    num_classes = len(dataset.classes)
    n = training_count(dataset, "evaluator", config)
    t_data = time.perf_counter()
    images = jnp.asarray(dataset.images("evaluator", np.arange(n)))
    labels_np = np.asarray(dataset.labels("evaluator", np.arange(n)), np.int64)
    if labels_np.min() < 0 or labels_np.max() >= num_classes:
        raise ValueError(f"labels of {dataset.name!r} fall outside 0..{num_classes - 1}")
    labels = jnp.asarray(labels_np.astype(np.int32))
    data_seconds = time.perf_counter() - t_data
    model = _net(config, num_classes)

    def loss_fn(p, data, idx, key):
        images, labels = data
        x, y = images[idx], labels[idx]
        if config.augment:
            x = _augment(x, key, config)
        logits = model.apply(p, x)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        acc = (jnp.argmax(logits, axis=-1) == y).mean()
        return loss, (acc,)

    params = _init_params(model, dataset.resolution, seed)
    params, info = fit(loss_fn, params, (images, labels), config, seed, "classifier", ("batch acc",))
    info.update(examples=n, classes=list(dataset.classes), data_seconds=round(data_seconds, 2),
                final_batch_accuracy=round(info["history"][-1][2], 4))
    n_val = min(VAL_EXAMPLES, dataset.split_size("val"))
    if n_val:
        fn = jax.jit(model.apply)
        logits = batched(fn, params, dataset.images("val", np.arange(n_val)), 256)
        truth = np.asarray(dataset.labels("val", np.arange(n_val)))
        info.update(val_examples=n_val, val_accuracy=round(float((logits.argmax(-1) == truth).mean()), 4))
    return params, info


# =================================================================================================
# the frozen classifier
# =================================================================================================
class ShapeClassifier:
    """A frozen, trained recognisability classifier for one class-captioned dataset (see the module docstring).

    ``predict(images)`` -> class ids ``[N]``; ``probabilities(images)`` -> ``[N, num_classes]``;
    ``accuracy(images, labels)`` -> fraction of images classified as ``labels``.  ``classes`` are the class
    names in id order; ``key`` is the cache key; ``source`` is ``"trained"`` or ``"cache"``; ``meta`` what
    training recorded (``meta["train"]["val_accuracy"]``: accuracy on held-out real ``val`` images).
    """

    def __init__(self, params, config: ClassifierConfig, classes, *, resolution: int, key: str,
                 path: Path | None = None, meta: dict | None = None, source: str = "trained"):
        import jax

        self.params = params
        self.config = config
        self.classes = tuple(classes)
        self.resolution = int(resolution)
        self.key = key
        self.path = path
        self.meta = meta or {}
        self.source = source
        model = _net(config, len(self.classes))
        self._fn = jax.jit(model.apply)

    def __repr__(self) -> str:
        name = self.meta.get("dataset", {}).get("name", "?")
        return (f"<ShapeClassifier {name} {self.resolution}px {len(self.classes)} classes key={self.key} "
                f"({self.source})>")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def train_seconds(self) -> float | None:
        return self.meta.get("train", {}).get("train_seconds")

    def logits(self, images, *, batch_size: int = 256) -> np.ndarray:
        """Class logits ``[N, num_classes]`` (float32) of ``images`` (float in [-1, 1] or uint8)."""
        return batched(self._fn, self.params, check_images(images, self.resolution), batch_size)

    def probabilities(self, images, *, batch_size: int = 256) -> np.ndarray:
        """Softmax class probabilities ``[N, num_classes]`` (float32; rows sum to 1)."""
        z = self.logits(images, batch_size=batch_size).astype(np.float64)
        z -= z.max(axis=-1, keepdims=True)
        p = np.exp(z)
        return (p / p.sum(axis=-1, keepdims=True)).astype(np.float32)

    def predict(self, images, *, batch_size: int = 256) -> np.ndarray:
        """The most probable class id of each image, int64 ``[N]``."""
        return self.logits(images, batch_size=batch_size).argmax(axis=-1).astype(np.int64)

    def accuracy(self, images, labels, *, return_per_image: bool = False):
        """Fraction of ``images`` classified as their ``labels`` (class ids, e.g. of the prompts they were
        generated from).  ``return_per_image=True`` returns ``(accuracy, correct)`` with bool ``correct [N]``."""
        labels = np.asarray(labels)
        if labels.ndim != 1 or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
            raise ValueError(f"labels must be a 1-D sequence of class ids, got dtype {labels.dtype} "
                             f"shape {labels.shape}")
        if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"labels must be class ids in 0..{self.num_classes - 1}")
        pred = self.predict(images)
        if pred.shape[0] != labels.shape[0]:
            raise ValueError(f"{pred.shape[0]} images but {labels.shape[0]} labels")
        correct = pred == labels
        acc = float(correct.mean()) if correct.size else float("nan")
        return (acc, correct) if return_per_image else acc


def classifier_key(dataset, *, config=None, seed: int = 0, resolution=None) -> str:
    """The cache key of the classifier :func:`load_or_train_classifier` would return (nothing is trained)."""
    dataset = check_labelled(resolve_dataset(dataset, resolution))
    config = ClassifierConfig.from_any(config).validate()
    return cache_key("classifier", dataset.spec(), config.to_dict(), seed, VERSION)


def load_or_train_classifier(dataset, *, cache_dir=None, config=None, seed: int = 0, resolution=None,
                             on_corrupt: str = "retrain", retrain: bool = False) -> ShapeClassifier:
    """The recognisability classifier of ``dataset`` (a labelled Dataset, or a name with ``resolution``):
    from the cache if present, else trained on the ``evaluator`` split and cached -- the protocol of
    :func:`trajbench.metrics.evaluator.load_or_train_evaluator` (``config``: a :class:`ClassifierConfig` or a
    dict of its fields; ``on_corrupt``: ``"retrain"`` or ``"error"``; ``retrain=True`` ignores the cache).
    Raises :class:`UnlabelledDatasetError` for a dataset without class labels (e.g. synth-cc12m)."""
    dataset = check_labelled(resolve_dataset(dataset, resolution))
    config = ClassifierConfig.from_any(config).validate()
    classes = tuple(dataset.classes)

    def template():
        import jax

        model = _net(config, len(classes))
        return jax.eval_shape(lambda: _init_params(model, dataset.resolution, seed))

    params, meta, path, source = load_or_train(
        "classifier", dataset, config, seed, cache_dir, template, lambda: train_classifier(dataset, config, seed),
        on_corrupt, retrain, VERSION,
    )
    return ShapeClassifier(params, config, classes, resolution=dataset.resolution, key=meta["key"], path=path,
                           meta=meta, source=source)
