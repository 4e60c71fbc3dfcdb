"""GenEval-style prompt adherence on ``synth-cc12m``: an object detector and the per-category judge.

GenEval (Ghosh et al., 2023) detects the objects in a generated image and checks them against the prompt,
per category.  Here a small CenterNet-style detector, trained on ground-truth renders of the ``evaluator``
split, plays the detector.  On an 8x8 grid of cells (a CNN: 16x16 stem -> 8x8 -> 4x4, the 4x4 map and a
global context vector added back at 8x8), every cell predicts

* a heat map per shape (8): the probability that an object of that shape is centred in the cell, trained with
  CenterNet's focal loss against Gaussian bumps (sigma 0.7 cells) around the true box centres;
* the colour of the object centred there (softmax over the 10 colour names);
* its box: the centre's offset inside the cell and the width and height (fractions of the image).

Detections are the cells whose best shape score is a 3x3 local maximum above ``threshold`` (0.3); each gives a
(shape, colour, box).  Per image: ``count[s]`` = number of detections of shape ``s``; ``present[c, s]`` = some
detection of shape ``s`` has colour ``c``; ``box[s]`` = the box of the best-scoring detection of shape ``s``.
Colour is bound to shape by construction (both are read at the same cell).

An image generated from a prompt whose ground truth is ``attributes`` (from
:meth:`trajbench.data.SynthCC12M.attributes`) is judged CORRECT per its category as in GenEval:

==================  =====================================================================================
``single_object``   ``count[shape_0] >= 1``
``two_object``      ``count[shape_0] >= 1`` and ``count[shape_1] >= 1``
``counting``        ``count[shape_0] == N`` (the prompt's count)
``colors``          ``present[colour_0, shape_0]``
``position``        both shapes present and the relation of object 0 to object 1 holds by GenEval's rule
                    on the detected boxes (:func:`relations_from_boxes`)
``color_attr``      ``present[colour_0, shape_0]`` and ``present[colour_1, shape_1]``
==================  =====================================================================================

:func:`geneval_scores` returns the fraction correct per category and ``overall`` = their unweighted mean
(GenEval's overall score).  Like GenEval, ``position`` does not check colours even when the prompt names
them, and sizes / backgrounds are never checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from trajbench.auxnet.apply import batched, check_images, resolve_dataset
from trajbench.auxnet.cache import EvaluatorConfigError
from trajbench.auxnet.fit import FitConfig, fit, load_or_train, training_count

__all__ = [
    "GenEvalClassifier",
    "GenEvalConfig",
    "geneval_judge",
    "geneval_scores",
    "load_or_train_geneval",
    "relations_from_boxes",
    "decode",
    "dense_targets",
]

VERSION = 1  # of the detector's code (architecture, loss, decoding): part of the cache key
POSITION_THRESHOLD = 0.1  # GenEval's: the centre offset must exceed 0.1 * (sum of the box sizes)


def _vocab():
    from trajbench.data.synthetic import CC12M_SHAPES, COLOR_NAMES, GENEVAL_CATEGORIES

    return CC12M_SHAPES, COLOR_NAMES, GENEVAL_CATEGORIES


GRID = 8  # detection cells per side, at every resolution


@dataclass(frozen=True)
class GenEvalConfig(FitConfig):
    """Architecture and training budget of the detector (all of it is part of the cache key)."""

    label: ClassVar[str] = "GenEval"

    widths: tuple[int, int, int] = (32, 64, 96)  # 16x16 stem, 8x8 stage, 4x4 stage
    head_width: int = 64
    sigma: float = 0.7  # heat-map Gaussian, in cells
    threshold: float = 0.3  # detection score
    color_weight: float = 1.0
    box_weight: float = 1.0
    flip: bool = True  # random horizontal flips (every shape is mirror-symmetric; targets are mirrored too)
    steps: int = 1000
    lr: float = 3e-3
    warmup_steps: int = 50

    def validate(self) -> "GenEvalConfig":
        if len(self.widths) != 3:
            raise EvaluatorConfigError(f"invalid {self.label} config: {self}")
        return super().validate()


def _net(config: GenEvalConfig):
    import flax.linen as nn
    import jax.numpy as jnp

    shapes, colors, _ = _vocab()
    n_s, n_c = len(shapes), len(colors)
    w0, w1, w2 = config.widths

    def block(h, ch, kernel, stride):
        h = nn.Conv(ch, (kernel, kernel), strides=(stride, stride), padding="SAME")(h)
        return nn.gelu(nn.GroupNorm(num_groups=min(8, ch))(h))

    class GenEvalNet(nn.Module):
        @nn.compact
        def __call__(self, x):
            res = x.shape[1]
            if res < 2 * GRID or res & (res - 1):
                raise ValueError(f"the GenEval detector needs a power-of-two resolution >= 16, got {res}")
            patch = res // (2 * GRID)
            h = block(x, w0, 3, 1) if patch == 1 else block(x, w0, patch, patch)  # 16x16
            h8 = block(block(h, w1, 3, 2), w1, 3, 1)  # 8x8
            h4 = block(block(h8, w2, 3, 2), w2, 3, 1)  # 4x4
            # FPN-style merge at 8x8: the 8x8 map + the 4x4 map (projected, upsampled) + a global context vector
            context = nn.Dense(w1)(nn.gelu(nn.Dense(w2)(h4.mean(axis=(1, 2)))))
            up = jnp.repeat(jnp.repeat(nn.Dense(w1)(h4), 2, axis=1), 2, axis=2)
            z = block(h8 + up + context[:, None, None, :], config.head_width, 3, 1)
            heat = nn.Conv(n_s, (1, 1), bias_init=nn.initializers.constant(-4.0), name="heat")(z)
            color = nn.Conv(n_c, (1, 1), name="color")(z)
            box = nn.sigmoid(nn.Conv(4, (1, 1), name="box")(z))  # offset x, offset y, width, height
            return heat, color, box

    return GenEvalNet()


def dense_targets(attributes, sigma: float = 0.7) -> dict[str, np.ndarray]:
    """Per-cell training targets on the GRID x GRID cells: ``heat [N, G, G, 8]`` (max over objects of the shape
    of ``exp(-d^2 / 2 sigma^2)``, d = distance in cells from the cell centre to the box centre; exactly 1 at the
    cell holding the centre), ``peak [N, G, G]`` (1 at those cells), ``color [N, G, G]`` (colour id there) and
    ``box [N, G, G, 4]`` (centre offset in the cell, box width, height)."""
    shapes, colors, _ = _vocab()
    n, g = len(attributes), GRID
    heat = np.zeros((n, g, g, len(shapes)), np.float32)
    peak = np.zeros((n, g, g), np.float32)
    color = np.zeros((n, g, g), np.int32)
    box = np.zeros((n, g, g, 4), np.float32)
    centres = np.arange(g) + 0.5
    for k, a in enumerate(attributes):
        for obj in a["objects"]:
            x0, y0, x1, y1 = obj["bbox"]
            u, v = (x0 + x1) / 2 * g, (y0 + y1) / 2 * g
            s = shapes.index(obj["shape"])
            bump = np.exp(-((centres[None, :] - u) ** 2 + (centres[:, None] - v) ** 2) / (2 * sigma**2))
            heat[k, :, :, s] = np.maximum(heat[k, :, :, s], bump)
            i, j = min(int(v), g - 1), min(int(u), g - 1)
            heat[k, i, j, s] = 1.0
            peak[k, i, j] = 1.0
            color[k, i, j] = colors.index(obj["color"])
            box[k, i, j] = (u - j, v - i, x1 - x0, y1 - y0)
    return {"heat": heat, "peak": peak, "color": color, "box": box}


def decode(heat_logits, color_logits, box, threshold: float = 0.3) -> dict[str, np.ndarray]:
    """Detections from the per-cell outputs: cells whose best shape probability is a 3x3 local maximum above
    ``threshold``.  Returns the per-image summaries ``counts [N, 8]``, ``pairs [N, 10, 8]`` (bool),
    ``boxes [N, 8, 4]`` (best detection per shape; zeros if none) and ``detections`` (a list per image of
    dicts: shape id, colour id, score, box)."""
    from scipy.ndimage import maximum_filter

    shapes, colors, _ = _vocab()
    prob = 1.0 / (1.0 + np.exp(-np.asarray(heat_logits, np.float64)))
    score, shape = prob.max(-1), prob.argmax(-1)
    peaks = (score >= maximum_filter(score, size=(1, 3, 3), mode="constant", cval=0.0)) & (score > threshold)
    color = np.asarray(color_logits).argmax(-1)
    n, g = score.shape[:2]
    counts = np.zeros((n, len(shapes)), np.int64)
    pairs = np.zeros((n, len(colors), len(shapes)), bool)
    boxes = np.zeros((n, len(shapes), 4))
    best = np.zeros((n, len(shapes)))
    detections = [[] for _ in range(n)]
    for k, i, j in zip(*np.nonzero(peaks)):
        s, c, sc = int(shape[k, i, j]), int(color[k, i, j]), float(score[k, i, j])
        ox, oy, w, h = (float(t) for t in box[k, i, j])
        cx, cy = (j + ox) / g, (i + oy) / g
        b = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        counts[k, s] += 1
        pairs[k, c, s] = True
        if sc > best[k, s]:
            best[k, s], boxes[k, s] = sc, b
        detections[k].append({"shape": s, "color": c, "score": sc, "box": b})
    return {"counts": counts, "pairs": pairs, "boxes": boxes, "detections": detections}


def labels_from_attributes(attributes) -> dict[str, np.ndarray]:
    """The per-image summaries a perfect detector would output: ``counts [N, 8]``, ``pairs [N, 10, 8]``
    (0/1) and ``boxes [N, 8, 4]`` (the box of the last object of each shape)."""
    shapes, colors, _ = _vocab()
    n = len(attributes)
    counts = np.zeros((n, len(shapes)), np.int64)
    pairs = np.zeros((n, len(colors), len(shapes)), np.float32)
    boxes = np.zeros((n, len(shapes), 4), np.float32)
    for i, a in enumerate(attributes):
        for obj in a["objects"]:
            s = shapes.index(obj["shape"])
            counts[i, s] += 1
            pairs[i, colors.index(obj["color"]), s] = 1.0
            boxes[i, s] = obj["bbox"]
    return {"counts": counts, "pairs": pairs, "boxes": boxes}


def relations_from_boxes(box_a, box_b) -> set[str]:
    """GenEval's relative position of object A to object B from boxes ``(x0, y0, x1, y1)`` (y down).

    ``offset = centre_a - centre_b``; each component is shrunk towards 0 by ``0.1 * (size_a + size_b)`` along
    that axis; with ``(dx, dy) = shrunk / |offset|``: "left of" if dx < -0.5, "right of" if dx > 0.5,
    "above" if dy < -0.5, "below" if dy > 0.5 (none if the boxes' centres nearly coincide).
    """
    boxes = np.asarray([box_a, box_b], np.float64).reshape(2, 2, 2)
    centre_a, centre_b = boxes.mean(axis=-2)
    dim_a, dim_b = np.abs(np.diff(boxes, axis=-2))[..., 0, :]
    offset = centre_a - centre_b
    revised = np.maximum(np.abs(offset) - POSITION_THRESHOLD * (dim_a + dim_b), 0) * np.sign(offset)
    if np.all(np.abs(revised) < 1e-3):
        return set()
    dx, dy = revised / np.linalg.norm(offset)
    rel = set()
    if dx < -0.5:
        rel.add("left of")
    if dx > 0.5:
        rel.add("right of")
    if dy < -0.5:
        rel.add("above")
    if dy > 0.5:
        rel.add("below")
    return rel


def geneval_judge(predictions: dict, attributes) -> np.ndarray:
    """Per image, is it correct for its prompt (see the module docstring)?  bool ``[N]``.

    ``predictions``: ``counts [N, 8]`` ints, ``pairs [N, 10, 8]`` bools, ``boxes [N, 8, 4]`` (what
    :meth:`GenEvalClassifier.predict` returns, or ground truth from :func:`labels_from_attributes`).
    """
    shapes, colors, categories = _vocab()
    counts, pairs, boxes = predictions["counts"], np.asarray(predictions["pairs"]) > 0.5, predictions["boxes"]
    if len(attributes) != len(counts):
        raise ValueError(f"{len(counts)} images but {len(attributes)} attribute records")
    out = np.zeros(len(attributes), bool)
    for i, a in enumerate(attributes):
        cat = a.get("category")
        if cat not in categories:
            raise ValueError(f"attribute record {i} has no GenEval category (got {cat!r}); "
                             "use the attributes of synth-cc12m prompts")
        objs = a["objects"]
        s = [shapes.index(o["shape"]) for o in objs]
        c = [colors.index(o["color"]) for o in objs]
        if cat == "single_object":
            ok = counts[i, s[0]] >= 1
        elif cat == "two_object":
            ok = counts[i, s[0]] >= 1 and counts[i, s[1]] >= 1
        elif cat == "counting":
            ok = counts[i, s[0]] == int(a["count"])
        elif cat == "colors":
            ok = pairs[i, c[0], s[0]]
        elif cat == "color_attr":
            ok = pairs[i, c[0], s[0]] and pairs[i, c[1], s[1]]
        else:  # position
            rel = a["relation"]["relation"]
            ok = (counts[i, s[0]] >= 1 and counts[i, s[1]] >= 1
                  and rel in relations_from_boxes(boxes[i, s[0]], boxes[i, s[1]]))
        out[i] = bool(ok)
    return out


def scores_from_judgements(correct: np.ndarray, attributes) -> dict:
    """``{category: fraction correct}`` for the categories present, ``overall`` (their mean) and ``n``."""
    _, _, categories = _vocab()
    cats = np.array([a["category"] for a in attributes])
    out = {}
    for cat in categories:
        m = cats == cat
        if m.any():
            out[cat] = float(correct[m].mean())
    out["overall"] = float(np.mean([out[c] for c in categories if c in out])) if out else float("nan")
    out["n"] = {cat: int((cats == cat).sum()) for cat in categories if (cats == cat).any()}
    return out


def train_geneval(dataset, config: GenEvalConfig, seed: int = 0):
    """Train the detector on ``dataset``'s ``evaluator`` split: ``(params, info)``.

    Loss per batch: CenterNet's focal loss on the heat maps, ``-(1-p)^2 log p`` at object centres and
    ``-(1-y)^4 p^2 log(1-p)`` elsewhere, divided by the number of objects; plus the colour cross-entropy and
    the L1 box error at the centre cells (means over objects).
    """
    import jax
    import jax.numpy as jnp
    import optax

    n = training_count(dataset, "evaluator", config)
    images = jnp.asarray(dataset.images("evaluator", np.arange(n)))
    targets = dense_targets(dataset.attributes("evaluator", np.arange(n)), config.sigma)
    targets = {k: jnp.asarray(v) for k, v in targets.items()}
    model = _net(config)

    def loss_fn(p, data, idx, key):
        images, targets = data
        x = images[idx]
        y = {k: v[idx] for k, v in targets.items()}
        if config.flip:  # mirror the image, the maps (along x) and the x offset inside the cell
            flip = jax.random.bernoulli(key, 0.5, (idx.shape[0],))
            x = jnp.where(flip[:, None, None, None], x[:, :, ::-1], x)
            for k in y:
                flipped = y[k][:, :, ::-1]
                if k == "box":
                    flipped = flipped.at[..., 0].set(1.0 - flipped[..., 0])
                y[k] = jnp.where(flip.reshape((-1,) + (1,) * (y[k].ndim - 1)), flipped, y[k])
        heat, color, box = model.apply(p, x)
        pos = (y["heat"] >= 1.0).astype(jnp.float32)
        log_p, log_q = jax.nn.log_sigmoid(heat), jax.nn.log_sigmoid(-heat)
        prob = jnp.exp(log_p)
        focal = -(pos * (1 - prob) ** 2 * log_p + (1 - pos) * (1 - y["heat"]) ** 4 * prob**2 * log_q)
        n_obj = jnp.maximum(y["peak"].sum(), 1.0)
        l_heat = focal.sum() / n_obj
        l_color = (optax.softmax_cross_entropy_with_integer_labels(color, y["color"]) * y["peak"]).sum() / n_obj
        l_box = (jnp.abs(box - y["box"]).sum(-1) * y["peak"]).sum() / n_obj
        loss = l_heat + config.color_weight * l_color + config.box_weight * l_box
        return loss, (l_heat, l_color, l_box)

    params = jax.jit(model.init)(jax.random.key(seed), images[:1])
    params, info = fit(loss_fn, params, (images, targets), config, seed, "geneval detector", ("heat", "colour", "box"))
    return params, dict(info, examples=n)


class GenEvalClassifier:
    """A frozen, trained detector (the "attribute classifier") for ``synth-cc12m`` at one resolution (see
    the module docstring).  ``predict(images)``, ``judge(images, attributes)``, ``scores(images, attributes)``."""

    def __init__(self, params, config: GenEvalConfig, *, resolution: int, key: str, path: Path | None = None,
                 meta: dict | None = None, source: str = "trained"):
        import jax

        self.params = params
        self.config = config
        self.resolution = int(resolution)
        self.key = key
        self.path = path
        self.meta = meta or {}
        self.source = source
        model = _net(config)
        self._fn = jax.jit(lambda p, x: model.apply(p, x))

    def __repr__(self) -> str:
        return f"<GenEvalClassifier {self.resolution}px key={self.key} ({self.source})>"

    @property
    def train_seconds(self) -> float | None:
        return self.meta.get("train", {}).get("train_seconds")

    def predict(self, images, *, batch_size: int = 256) -> dict:
        """Per image: ``counts [N, 8]`` (detections per shape), ``pairs [N, 10, 8]`` (bool: a detection of that
        shape in that colour), ``boxes [N, 8, 4]`` (best detection per shape) and ``detections`` (see
        :func:`decode`); shapes and colours in the order of ``trajbench.data.synthetic.CC12M_SHAPES`` /
        ``COLOR_NAMES``."""
        x = check_images(images, self.resolution)
        heat, color, box = batched(self._fn, self.params, x, batch_size)
        return decode(heat, color, box, self.config.threshold)

    def judge(self, images, attributes) -> np.ndarray:
        """bool ``[N]``: is image ``i`` correct for the prompt whose ground truth is ``attributes[i]``?"""
        attributes = list(attributes)
        return geneval_judge(self.predict(images), attributes)

    def scores(self, images, attributes, *, return_per_image: bool = False):
        """``{category: accuracy, "overall": mean over categories, "n": {category: count}}``."""
        attributes = list(attributes)
        correct = self.judge(images, attributes)
        out = scores_from_judgements(correct, attributes)
        return (out, correct) if return_per_image else out


def _check_compositional(dataset):
    if getattr(dataset, "name", "") != "synth-cc12m":
        raise ValueError(f"GenEval scoring needs the compositional dataset 'synth-cc12m', got {dataset.name!r}")


def load_or_train_geneval(dataset="synth-cc12m", *, cache_dir=None, config=None, seed: int = 0, resolution=None,
                          on_corrupt: str = "retrain", retrain: bool = False) -> GenEvalClassifier:
    """The attribute classifier of ``synth-cc12m`` (a Dataset, or the name with ``resolution``): from the cache
    if present, else trained on the ``evaluator`` split and cached (same protocol as
    :func:`trajbench.metrics.evaluator.load_or_train_evaluator`)."""
    dataset = resolve_dataset(dataset, resolution)
    _check_compositional(dataset)
    config = GenEvalConfig.from_any(config).validate()

    def template():
        import jax
        import jax.numpy as jnp

        res = dataset.resolution
        return jax.eval_shape(lambda: _net(config).init(jax.random.key(seed), jnp.zeros((1, res, res, 3))))

    params, meta, path, source = load_or_train(
        "geneval", dataset, config, seed, cache_dir, template, lambda: train_geneval(dataset, config, seed),
        on_corrupt, retrain, VERSION,
    )
    return GenEvalClassifier(params, config, resolution=dataset.resolution, key=meta["key"], path=path, meta=meta,
                             source=source)


def geneval_scores(images, attributes, classifier: GenEvalClassifier | None = None, *,
                   return_per_image: bool = False, cache_dir=None):
    """GenEval-style accuracy per category of ``images`` generated from prompts with ground truth
    ``attributes`` (``synth-cc12m`` attribute records, one per image): ``{category: accuracy, ...,
    "overall": mean over categories, "n": {category: count}}``.

    ``classifier`` defaults to the cached classifier of ``synth-cc12m`` (seed 0) at the images' resolution.
    ``return_per_image=True`` also returns the bool correctness per image (for bootstrap CIs).
    """
    if classifier is None:
        res = int(np.asarray(images).shape[1])
        classifier = load_or_train_geneval("synth-cc12m", resolution=res, cache_dir=cache_dir)
    return classifier.scores(images, attributes, return_per_image=return_per_image)


