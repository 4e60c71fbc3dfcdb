"""The two generated datasets: ``synth-imagenet`` and ``synth-cc12m`` (no downloads; rendered on demand).

``synth-imagenet`` -- an ImageNet analogue
    Class-conditional images of one object, captioned exactly ``"a photo of a <class name>"``. The ten
    classes are shapes that stay recognisable at 16x16: circle, square, triangle, star, ring, cross, heart,
    diamond (a tall rhombus), crescent and arrow. Inside a class everything else varies: the object's
    colour (any hue, saturation 0.5-1) and a light shading across it, its position, size (55-85% of the
    image), rotation (free for rotation-invariant-looking classes, within +-20-30 degrees for square, triangle,
    cross, heart and diamond so that they never turn into one another), and the background (a tinted two-colour
    gradient with optional light stripes or checker texture; its brightness is chosen to contrast with
    the object by at least 0.3 in luma). Item ``i`` has class ``i % num_classes`` (balanced classes).

``synth-cc12m`` -- a CC12M analogue
    Compositional scenes of 1-3 objects (circle, square, triangle, star, heart, cross, ring, diamond) in
    ten named colours (GenEval's: red, orange, yellow, green, blue, purple, pink, brown, black, white), two
    sizes for single objects (small / large), on a named background (white, gray, black, beige, with a
    slight gradient and light texture), with varied captions from several templates per GenEval category:

    * ``single_object``: "a star", "a small heart on a beige background", ...
    * ``colors``: "a red circle", "a small yellow star on a gray background", ...
    * ``two_object``: "a circle and a square", "a ring next to a cross", ...
    * ``counting``: "two triangles", "three green hearts", ... (2 or 3 identical shapes)
    * ``position``: "a red circle to the left of a blue square", "a star below a ring", ...
    * ``color_attr`` (attribute binding): "a purple diamond and a white cross", ...

    :meth:`SynthCC12M.attributes` keeps the ground truth of every image: the category, the background,
    the count, the relation of object 0 to object 1 (for two objects; the true one also when the caption
    does not state it), and per object its shape, colour name and RGB, size label, centre ``x, y`` and
    ``bbox`` (x0, y0, x1, y1) as fractions of the image (y down), its ``size`` (diameter / image side) and
    rotation -- enough to score prompt adherence GenEval-style.

Determinism: every random choice of item ``i`` of a split comes from a counter-based hash of
(dataset name, seed, split, i) (see :func:`trajbench.data.render.item_uniforms`), so an image never depends
on the batch it is rendered in, and the splits (``train``, ``val``, ``reference``, ``evaluator``) are
disjoint by construction: the split name is part of every item's random key.
"""

from __future__ import annotations

import re

import numpy as np

from trajbench.data.base import SPLITS, Dataset, DatasetError, check_resolution, check_sizes, check_split, stable_key
from trajbench.data.base import words_of
from trajbench.data.render import LUMA, SHAPE_NAMES, Scenes, hsv_to_rgb, item_uniforms, render, rotated_bbox

DEFAULT_SIZES = {"train": 50_000, "val": 1_000, "reference": 2_000, "evaluator": 10_000}
_CHUNK_PIXELS = 1 << 18  # render in chunks of about this many pixels (cache friendly, bounded memory)


class GeneratedDataset(Dataset):
    """Shared machinery: per-item random keys, chunked rendering, split sizes, spec."""

    name = ""
    EXTRA_OPTIONS: tuple[str, ...] = ()
    VERSION = 1  # the generator's version: bump when a rendering or sampling rule changes (new items, new caches)

    def __init__(self, *, resolution: int = 32, seed: int = 0, sizes: dict | None = None, **size_options):
        self.resolution = check_resolution(resolution)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise DatasetError(f"seed must be an integer, got {seed!r}")
        self.seed = int(seed)
        sizes = dict(sizes or {})
        for option, value in size_options.items():  # train_size=..., val_size=..., ...
            if not option.endswith("_size") or option[: -len("_size")] not in SPLITS:
                raise DatasetError(
                    f"dataset {self.name!r} has no option {option!r}; options: {', '.join(self.option_names())}"
                )
            sizes[option[: -len("_size")]] = value
        self._sizes = check_sizes(sizes, DEFAULT_SIZES)
        self._keys = {split: stable_key("trajbench.data", self.VERSION, self.name, self.seed, split)
                      for split in SPLITS}

    # subclasses: sample(split, idx) -> (Scenes, meta dict of numpy arrays)
    def sample(self, split: str, idx: np.ndarray):
        raise NotImplementedError

    def options(self) -> dict:
        return {}

    @classmethod
    def option_names(cls) -> list[str]:
        return ["sizes"] + [f"{s}_size" for s in SPLITS] + list(cls.EXTRA_OPTIONS)

    def split_size(self, split: str) -> int:
        return self._sizes[check_split(split)]

    def uniforms(self, split: str, idx: np.ndarray, n: int) -> np.ndarray:
        return item_uniforms(self._keys[split], idx, n)

    def images(self, split: str, indices) -> np.ndarray:
        idx = self.check_indices(split, indices)
        res = self.resolution
        out = np.empty((idx.size, res, res, 3), dtype=np.float32)
        chunk = max(1, _CHUNK_PIXELS // (res * res))
        for start in range(0, idx.size, chunk):
            scenes, _ = self.sample(split, idx[start : start + chunk])
            render(scenes, res, out=out[start : start + chunk])
        return out

    def spec(self) -> dict:
        return {
            "name": self.name,
            "kind": "generated",
            "version": self.VERSION,
            "resolution": self.resolution,
            "seed": self.seed,
            "splits": dict(self._sizes),
            "options": self.options(),
        }


def _pick(u, n):
    """Uniform integer in [0, n) from uniforms ``u`` (``n`` may be an array)."""
    return np.minimum((u * n).astype(np.int64), np.asarray(n) - 1)


def _bbox01(shape_ids, cx, cy, r, rot):
    return np.clip((rotated_bbox(shape_ids, cx, cy, r, rot) + 1.0) / 2.0, 0.0, 1.0)


# =================================================================================================
# synth-imagenet
# =================================================================================================
IMAGENET_CLASSES: tuple[str, ...] = (
    "circle", "square", "triangle", "star", "ring", "cross", "heart", "diamond", "crescent", "arrow",
)
_MAX_ROTATION_DEG = {"square": 20, "triangle": 30, "cross": 20, "heart": 25, "diamond": 20}  # others: any rotation
IMAGENET_TEMPLATE = "a photo of a {}"
BACKGROUND_KINDS = ("plain", "stripes", "checker")


class SynthImageNet(GeneratedDataset):
    """``synth-imagenet``: one shape per image, class ``index % num_classes``, caption "a photo of a <class>".

    Options: ``num_classes`` (2-10, default 10: the first ``num_classes`` of :data:`IMAGENET_CLASSES`),
    split sizes as ``sizes={"train": ...}`` or ``train_size=...`` etc.
    """

    name = "synth-imagenet"
    VERSION = 2  # 2: objects 55-85 % of the image (was 42-78 %), triangles within +-30 degrees (was free)
    EXTRA_OPTIONS = ("num_classes",)
    N_UNIFORMS = 24

    def __init__(self, *, resolution: int = 32, seed: int = 0, num_classes: int = len(IMAGENET_CLASSES), **options):
        super().__init__(resolution=resolution, seed=seed, **options)
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or not (
            2 <= num_classes <= len(IMAGENET_CLASSES)
        ):
            raise DatasetError(f"num_classes must be an integer in [2, {len(IMAGENET_CLASSES)}], got {num_classes!r}")
        self.num_classes = int(num_classes)
        self.classes = IMAGENET_CLASSES[: self.num_classes]
        self._shape_of_class = np.array([SHAPE_NAMES.index(c) for c in self.classes])
        self._max_rot = np.radians([_MAX_ROTATION_DEG.get(c, 180) for c in self.classes])

    def options(self) -> dict:
        return {"num_classes": self.num_classes}

    def labels(self, split: str, indices) -> np.ndarray:
        """Class ids (int64) of the items."""
        return self.check_indices(split, indices) % self.num_classes

    def sample(self, split: str, idx: np.ndarray):
        n = idx.size
        u = self.uniforms(split, idx, self.N_UNIFORMS)
        cls = idx % self.num_classes
        r = 0.55 + 0.30 * u[:, 1]
        lim = np.maximum(0.96 - r, 0.0)
        cx = (2 * u[:, 2] - 1) * lim
        cy = (2 * u[:, 3] - 1) * lim
        rot = (2 * u[:, 4] - 1) * self._max_rot[cls]
        color = hsv_to_rgb(u[:, 5], 0.5 + 0.5 * u[:, 6], 0.45 + 0.55 * u[:, 7])
        # background luma at least 0.3 away from the object's luma
        lo = color @ LUMA
        dark_lo, dark_hi = 0.04, lo - 0.32
        light_lo, light_hi = lo + 0.32, 0.96
        dark_ok = dark_hi >= dark_lo + 0.02
        light_ok = light_hi >= light_lo + 0.02
        light = light_ok & (~dark_ok | (u[:, 8] < 0.5))
        lb_lo = np.where(light, light_lo, dark_lo)
        lb_hi = np.where(light, light_hi, dark_hi)
        lb = lb_lo + (lb_hi - lb_lo) * u[:, 9]
        lb2 = np.clip(lb + (2 * u[:, 10] - 1) * 0.15, lb_lo, lb_hi)
        tint = 0.35 * u[:, 12]
        hue_a = hsv_to_rgb(u[:, 11], 1.0, 1.0)
        hue_b = hsv_to_rgb(u[:, 11] + (2 * u[:, 13] - 1) * 0.12, 1.0, 1.0)
        bg_a = np.clip(lb[:, None] + tint[:, None] * (hue_a - (hue_a @ LUMA)[:, None]), 0, 1)
        bg_b = np.clip(lb2[:, None] + tint[:, None] * (hue_b - (hue_b @ LUMA)[:, None]), 0, 1)
        kind = np.where(u[:, 15] < 0.35, 0, np.where(u[:, 15] < 0.7, 1, 2))
        amp = 0.015 + 0.045 * u[:, 16]
        scenes = Scenes(
            bg_a=bg_a, bg_b=bg_b, grad_angle=2 * np.pi * u[:, 14],
            stripes=np.where(kind == 1, amp, 0.0), checker=np.where(kind == 2, amp, 0.0),
            tex_freq=np.pi * (1.5 + 2.5 * u[:, 17]), tex_angle=2 * np.pi * u[:, 18],
            tex_phase=2 * np.pi * u[:, 19:21],
            shape=self._shape_of_class[cls][:, None], cx=cx[:, None], cy=cy[:, None], r=r[:, None],
            rot=rot[:, None], color=color[:, None, :], shade=(0.25 * u[:, 21])[:, None],
            shade_angle=(2 * np.pi * u[:, 22])[:, None],
        )
        meta = {"class_id": cls, "kind": kind, "light": light, "n": n}
        return scenes, meta

    def captions(self, split: str, indices) -> list[str]:
        idx = self.check_indices(split, indices)
        return [IMAGENET_TEMPLATE.format(self.classes[c]) for c in idx % self.num_classes]

    def attributes(self, split: str, indices) -> list[dict]:
        idx = self.check_indices(split, indices)
        s, meta = self.sample(split, idx)
        box = _bbox01(s.shape, s.cx, s.cy, s.r, s.rot)
        out = []
        for j in range(idx.size):
            c = int(meta["class_id"][j])
            out.append({
                "class_id": c,
                "class_name": self.classes[c],
                "caption": IMAGENET_TEMPLATE.format(self.classes[c]),
                "color": [round(float(v), 4) for v in s.color[j, 0]],
                "x": round(float((s.cx[j, 0] + 1) / 2), 4),
                "y": round(float((s.cy[j, 0] + 1) / 2), 4),
                "size": round(float(s.r[j, 0]), 4),
                "rotation": round(float(np.degrees(s.rot[j, 0])), 2),
                "bbox": [round(float(v), 4) for v in box[j, 0]],
                "background": {
                    "kind": BACKGROUND_KINDS[int(meta["kind"][j])],
                    "brightness": "light" if meta["light"][j] else "dark",
                    "colors": [[round(float(v), 4) for v in s.bg_a[j]], [round(float(v), 4) for v in s.bg_b[j]]],
                },
            })
        return out

    def vocabulary(self) -> list[str]:
        return words_of(IMAGENET_TEMPLATE.format(c) for c in self.classes)


# =================================================================================================
# synth-cc12m
# =================================================================================================
GENEVAL_CATEGORIES: tuple[str, ...] = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
CC12M_SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "heart", "cross", "ring", "diamond")
PLURALS = {"cross": "crosses"}
COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.12, 0.12),
    "orange": (0.98, 0.55, 0.08),
    "yellow": (0.98, 0.88, 0.12),
    "green": (0.15, 0.66, 0.22),
    "blue": (0.13, 0.32, 0.88),
    "purple": (0.52, 0.20, 0.75),
    "pink": (0.98, 0.55, 0.75),
    "brown": (0.50, 0.30, 0.13),
    "black": (0.06, 0.06, 0.06),
    "white": (0.97, 0.97, 0.97),
}
COLOR_NAMES = tuple(COLORS)
BACKGROUNDS: dict[str, tuple[tuple[float, float, float], tuple[str, ...]]] = {  # colour, object colours excluded
    "white": ((0.94, 0.94, 0.94), ("white", "yellow")),
    "gray": ((0.50, 0.50, 0.50), ()),
    "black": ((0.07, 0.07, 0.07), ("black",)),
    "beige": ((0.90, 0.84, 0.70), ("white", "yellow")),
}
BACKGROUND_NAMES = tuple(BACKGROUNDS)
RELATIONS = ("left of", "right of", "above", "below")  # relation of object 0 to object 1 (GenEval's words)
RELATION_PHRASES = {"left of": "to the left of", "right of": "to the right of", "above": "above", "below": "below"}
COUNT_WORDS = {1: "one", 2: "two", 3: "three"}
SIZE_SMALL_MAX, SIZE_LARGE_MIN = 0.34, 0.48  # object diameter / image side: small < 0.34 <= medium < 0.48 <= large

# (format, name colours, name sizes); {o0}/{o1} are noun phrases with their article
TEMPLATES: dict[str, tuple[tuple[str, bool, bool], ...]] = {
    "single_object": (
        ("{o0}", False, False),
        ("a photo of {o0}", False, False),
        ("{o0}", False, True),
        ("{o0} on a {bg} background", False, False),
        ("{o0} on a {bg} background", False, True),
        ("a picture of {o0}", False, False),
    ),
    "colors": (
        ("{o0}", True, False),
        ("a photo of {o0}", True, False),
        ("{o0}", True, True),
        ("{o0} on a {bg} background", True, False),
        ("{o0} on a {bg} background", True, True),
    ),
    "two_object": (
        ("{o0} and {o1}", False, False),
        ("a photo of {o0} and {o1}", False, False),
        ("{o0} next to {o1}", False, False),
        ("{o0} and {o1} on a {bg} background", False, False),
    ),
    "counting": (  # colour templates only when all objects share a colour
        ("{count} {shapes}", False, False),
        ("a photo of {count} {shapes}", False, False),
        ("{count} {shapes} on a {bg} background", False, False),
        ("{count} {color} {shapes}", True, False),
        ("a photo of {count} {color} {shapes}", True, False),
    ),
    "position": (
        ("{o0} {rel} {o1}", False, False),
        ("a photo of {o0} {rel} {o1}", False, False),
        ("{o0} {rel} {o1}", True, False),
        ("{o0} {rel} {o1} on a {bg} background", False, False),
        ("{o0} {rel} {o1} on a {bg} background", True, False),
    ),
    "color_attr": (
        ("{o0} and {o1}", True, False),
        ("a photo of {o0} and {o1}", True, False),
        ("{o0} next to {o1}", True, False),
        ("{o0} and {o1} on a {bg} background", True, False),
    ),
}
_N_COUNT_PLAIN = 3  # the first three counting templates name no colour


def plural(shape: str) -> str:
    return PLURALS.get(shape, shape + "s")


def article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def size_label(size: float) -> str:
    return "small" if size < SIZE_SMALL_MAX else ("large" if size >= SIZE_LARGE_MIN else "medium")


# colour ids allowed on each background, padded
_ALLOWED = [[COLOR_NAMES.index(c) for c in COLOR_NAMES if c not in BACKGROUNDS[b][1]] for b in BACKGROUND_NAMES]
_ALLOWED_LEN = np.array([len(a) for a in _ALLOWED])
_ALLOWED_TABLE = np.array([a + [a[0]] * (len(COLOR_NAMES) - len(a)) for a in _ALLOWED])
_COLOR_RGB = np.array([COLORS[c] for c in COLOR_NAMES])
_BG_RGB = np.array([BACKGROUNDS[b][0] for b in BACKGROUND_NAMES])
_CC_SHAPE_IDS = np.array([SHAPE_NAMES.index(s) for s in CC12M_SHAPES])
_LAYOUTS3 = np.array([
    [(-0.66, 0.0), (0.0, 0.0), (0.66, 0.0)],  # row
    [(0.0, -0.66), (0.0, 0.0), (0.0, 0.66)],  # column
    [(-0.5, 0.38), (0.5, 0.38), (0.0, -0.42)],  # triangle, apex up
    [(-0.5, -0.38), (0.5, -0.38), (0.0, 0.42)],  # triangle, apex down
])


class SynthCC12M(GeneratedDataset):
    """``synth-cc12m``: captioned compositional scenes of 1-3 objects with GenEval-style ground truth.

    Options: ``categories`` (a subset of :data:`GENEVAL_CATEGORIES` to draw from, default all, uniformly),
    split sizes as ``sizes={"train": ...}`` or ``train_size=...`` etc.
    """

    name = "synth-cc12m"
    EXTRA_OPTIONS = ("categories",)
    N_UNIFORMS = 64

    def __init__(self, *, resolution: int = 32, seed: int = 0, categories=GENEVAL_CATEGORIES, **options):
        super().__init__(resolution=resolution, seed=seed, **options)
        categories = (categories,) if isinstance(categories, str) else tuple(categories)
        bad = [c for c in categories if c not in GENEVAL_CATEGORIES]
        if bad or not categories:
            raise DatasetError(f"unknown GenEval categories {bad!r}; valid: {', '.join(GENEVAL_CATEGORIES)}")
        self.categories = tuple(c for c in GENEVAL_CATEGORIES if c in categories)
        self._cat_ids = np.array([GENEVAL_CATEGORIES.index(c) for c in self.categories])

    def options(self) -> dict:
        return {"categories": list(self.categories)}

    def sample(self, split: str, idx: np.ndarray):
        n = idx.size
        u = self.uniforms(split, idx, self.N_UNIFORMS)
        cat = self._cat_ids[_pick(u[:, 0], len(self._cat_ids))]
        single = (cat == 0) | (cat == 3)
        counting = cat == 2
        nobj = np.where(single, 1, np.where(counting, 2 + (u[:, 1] < 0.5), 2))
        bg = _pick(u[:, 2], len(BACKGROUND_NAMES))

        # shapes: two different shapes for two-object scenes, one shape repeated when counting
        s0 = _pick(u[:, 3], len(CC12M_SHAPES))
        s1 = np.where(counting, s0, (s0 + 1 + _pick(u[:, 4], len(CC12M_SHAPES) - 1)) % len(CC12M_SHAPES))
        shape_local = np.stack([s0, s1, s0], 1)

        # colours from those allowed on the background; distinct for attribute binding; shared when counting
        length = _ALLOWED_LEN[bg]
        p0 = _pick(u[:, 5], length)
        p1 = np.where(cat == 5, (p0 + 1 + _pick(u[:, 6], length - 1)) % length, _pick(u[:, 6], length))
        p2 = _pick(u[:, 7], length)
        same = counting & (u[:, 8] < 0.6)
        p1 = np.where(same, p0, p1)
        p2 = np.where(same, p0, p2)
        color_id = _ALLOWED_TABLE[bg[:, None], np.stack([p0, p1, p2], 1)]  # [N, 3]

        # sizes (object diameter / image side == radius in the [-1, 1] frame)
        large = u[:, 9] < 0.5
        r = np.stack([0.26 + 0.14 * u[:, 10], 0.26 + 0.14 * u[:, 11], 0.19 + 0.06 * u[:, 12]], 1)
        r1 = np.where(large, 0.5 + 0.18 * u[:, 10], 0.24 + 0.09 * u[:, 10])
        r[:, 0] = np.where(nobj == 1, r1, r[:, 0])
        three = nobj == 3
        r[three, 0] = 0.19 + 0.06 * u[three, 10]
        r[three, 1] = 0.19 + 0.06 * u[three, 11]
        reach = 1.16 * r  # the farthest any shape reaches from its centre, in the [-1, 1] frame
        rot = np.radians((2 * u[:, 13:16] - 1) * 12.0)

        cx = np.zeros((n, 3))
        cy = np.zeros((n, 3))
        # one object
        lim = np.maximum(0.97 - reach[:, 0], 0.0)
        one = (2 * u[:, 16] - 1) * lim, (2 * u[:, 17] - 1) * lim
        # two objects, separated along an axis with small cross-axis jitter: relation of object 0 to 1
        rel = _pick(u[:, 18], 4)
        first_low = (rel == 0) | (rel == 2)  # "left of" / "above": object 0 on the negative side
        r_low = np.where(first_low, reach[:, 0], reach[:, 1])
        r_high = np.where(first_low, reach[:, 1], reach[:, 0])
        a_low = -0.98 + r_low + u[:, 19] * np.maximum(0.0, 0.94 - 2 * r_low)  # up to -0.04 - r_low
        a_high = 0.04 + r_high + u[:, 20] * np.maximum(0.0, 0.94 - 2 * r_high)
        rmax = np.maximum(reach[:, 0], reach[:, 1])
        centre = (2 * u[:, 21] - 1) * np.maximum(0.0, 0.85 - rmax)
        c0 = np.clip(centre + (2 * u[:, 22] - 1) * 0.12, -0.97 + reach[:, 0], 0.97 - reach[:, 0])
        c1 = np.clip(centre + (2 * u[:, 23] - 1) * 0.12, -0.97 + reach[:, 1], 0.97 - reach[:, 1])
        a0 = np.where(first_low, a_low, a_high)
        a1 = np.where(first_low, a_high, a_low)
        horizontal = rel < 2
        two_x = np.stack([np.where(horizontal, a0, c0), np.where(horizontal, a1, c1)], 1)
        two_y = np.stack([np.where(horizontal, c0, a0), np.where(horizontal, c1, a1)], 1)
        # three objects: a jittered row, column or triangle
        layout = _pick(u[:, 24], len(_LAYOUTS3))
        base = _LAYOUTS3[layout]  # [N, 3, 2]
        jit = (2 * u[:, 25:31].reshape(n, 3, 2) - 1) * 0.03
        shift = (2 * u[:, 31] - 1)
        sx = np.where(layout == 1, shift * 0.62, np.where(layout >= 2, shift * 0.1, 0.0))
        sy = np.where(layout == 0, shift * 0.62, np.where(layout >= 2, shift * 0.1, 0.0))
        three_x = base[..., 0] + jit[..., 0] + sx[:, None]
        three_y = base[..., 1] + jit[..., 1] + sy[:, None]

        cx[:, 0], cy[:, 0] = one
        is2 = nobj == 2
        cx[is2, :2], cy[is2, :2] = two_x[is2], two_y[is2]
        cx[three], cy[three] = three_x[three], three_y[three]

        # the relation of object 0 to object 1 as placed (used for captions and attributes)
        present = np.arange(3)[None, :] < nobj[:, None]
        shape = np.where(present, _CC_SHAPE_IDS[shape_local], -1)
        color = _COLOR_RGB[color_id] + (2 * u[:, 32:41].reshape(n, 3, 3) - 1) * 0.04
        bg_a = _BG_RGB[bg] + (2 * u[:, 41] - 1)[:, None] * 0.03
        bg_b = bg_a + (2 * u[:, 42] - 1)[:, None] * 0.06
        kind = np.where(u[:, 43] < 0.4, 0, np.where(u[:, 43] < 0.7, 1, 2))
        amp = 0.008 + 0.02 * u[:, 44]
        scenes = Scenes(
            bg_a=np.clip(bg_a, 0, 1), bg_b=np.clip(bg_b, 0, 1), grad_angle=2 * np.pi * u[:, 45],
            stripes=np.where(kind == 1, amp, 0.0), checker=np.where(kind == 2, amp, 0.0),
            tex_freq=np.pi * (1.5 + 2.5 * u[:, 46]), tex_angle=2 * np.pi * u[:, 47], tex_phase=2 * np.pi * u[:, 48:50],
            shape=shape, cx=cx, cy=cy, r=r, rot=rot, color=np.clip(color, 0, 1),
            shade=0.1 * u[:, 50:53], shade_angle=2 * np.pi * u[:, 53:56],
        )
        meta = {
            "category": cat, "nobj": nobj, "bg": bg, "shape_local": shape_local, "color_id": color_id,
            "rel": np.where(nobj == 2, rel, -1), "same_color": ((color_id == color_id[:, :1]) | ~present).all(1),
            "template": u[:, 56], "bg_kind": kind,
        }
        return scenes, meta

    # ---- captions and ground truth ----------------------------------------------------------------
    def _caption(self, meta, j) -> str:
        cat = GENEVAL_CATEGORIES[int(meta["category"][j])]
        nobj = int(meta["nobj"][j])
        shapes = [CC12M_SHAPES[int(s)] for s in meta["shape_local"][j, :nobj]]
        colors = [COLOR_NAMES[int(c)] for c in meta["color_id"][j, :nobj]]
        templates = TEMPLATES[cat]
        if cat == "counting" and not meta["same_color"][j]:
            templates = templates[:_N_COUNT_PLAIN]
        fmt, with_color, with_size = templates[min(int(meta["template"][j] * len(templates)), len(templates) - 1)]
        sizes = meta["sizes"][j] if "sizes" in meta else None

        def phrase(k):
            words = []
            if with_size:
                words.append(size_label(sizes[k]))
            if with_color:
                words.append(colors[k])
            words.append(shapes[k])
            return f"{article(words[0])} {' '.join(words)}"

        fields = {"bg": BACKGROUND_NAMES[int(meta["bg"][j])], "o0": phrase(0)}
        if nobj >= 2:
            fields.update(o1=phrase(1), count=COUNT_WORDS[nobj], shapes=plural(shapes[0]), color=colors[0])
        if meta["rel"][j] >= 0:
            fields["rel"] = RELATION_PHRASES[RELATIONS[int(meta["rel"][j])]]
        return fmt.format(**fields)

    def captions(self, split: str, indices) -> list[str]:
        idx = self.check_indices(split, indices)
        s, meta = self.sample(split, idx)
        meta["sizes"] = s.r
        return [self._caption(meta, j) for j in range(idx.size)]

    def attributes(self, split: str, indices) -> list[dict]:
        idx = self.check_indices(split, indices)
        s, meta = self.sample(split, idx)
        meta["sizes"] = s.r
        box = _bbox01(np.maximum(s.shape, 0), s.cx, s.cy, s.r, s.rot)
        out = []
        for j in range(idx.size):
            nobj = int(meta["nobj"][j])
            objects = []
            for k in range(nobj):
                objects.append({
                    "shape": CC12M_SHAPES[int(meta["shape_local"][j, k])],
                    "color": COLOR_NAMES[int(meta["color_id"][j, k])],
                    "rgb": [round(float(v), 4) for v in s.color[j, k]],
                    "size_label": size_label(float(s.r[j, k])),
                    "size": round(float(s.r[j, k]), 4),
                    "x": round(float((s.cx[j, k] + 1) / 2), 4),
                    "y": round(float((s.cy[j, k] + 1) / 2), 4),
                    "rotation": round(float(np.degrees(s.rot[j, k])), 2),
                    "bbox": [round(float(v), 4) for v in box[j, k]],
                })
            rel = int(meta["rel"][j])
            out.append({
                "category": GENEVAL_CATEGORIES[int(meta["category"][j])],
                "caption": self._caption(meta, j),
                "background": BACKGROUND_NAMES[int(meta["bg"][j])],
                "background_texture": BACKGROUND_KINDS[int(meta["bg_kind"][j])],
                "count": nobj,
                "objects": objects,
                "relation": None if rel < 0 else {"subject": 0, "object": 1, "relation": RELATIONS[rel]},
            })
        return out

    def vocabulary(self) -> list[str]:
        texts = [re.sub(r"\{[a-z0-9]+\}", " ", fmt) for group in TEMPLATES.values() for fmt, _, _ in group]
        texts += list(CC12M_SHAPES) + [plural(s) for s in CC12M_SHAPES] + list(COLOR_NAMES) + list(BACKGROUND_NAMES)
        texts += ["a an small medium large"] + list(COUNT_WORDS.values()) + list(RELATION_PHRASES.values())
        used = set(words_of(texts))
        used.discard("one")  # counts are two or three; "one" never appears
        used.discard("medium")  # size words appear only for single objects, which are small or large
        return sorted(used)


GENERATED = {SynthImageNet.name: SynthImageNet, SynthCC12M.name: SynthCC12M}
