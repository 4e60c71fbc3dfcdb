"""Vectorised numpy rendering of anti-aliased 2-D shapes on textured backgrounds, and per-item random numbers.

Random numbers: :func:`item_uniforms` hashes ``(key, index, stream)`` with splitmix64, so the parameters
of item ``i`` depend only on the dataset's key (name, seed, split) and ``i`` -- never on the batch.

Shapes are signed distance fields (SDFs) evaluated on the pixel grid for a whole batch at once; the
coverage of a pixel is ``clip(0.5 - distance / pixel_size, 0, 1)`` (about one pixel of anti-aliasing),
so the same scene renders consistently at 16, 32 or 64 pixels. Every operation is elementwise, so an
image's pixels do not depend on the other images in its batch.

Coordinates: the image spans ``[-1, 1]`` in x (left to right) and y (top to bottom). A shape of
radius ``r`` at ``(cx, cy)`` rotated by ``rot`` (radians, counter-clockwise as seen) is evaluated in
local unit coordinates with y pointing *up*, where the shape fits (roughly) the unit disk.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# ---- counter-based random numbers -----------------------------------------------------------------
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_STREAM = np.uint64(0xD1B54A32D192ED03)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x + _GOLDEN
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def item_uniforms(key: int, indices: np.ndarray, n: int) -> np.ndarray:
    """float64 ``[len(indices), n]`` uniforms in ``[0, 1)``; row ``j`` depends only on ``key`` and ``indices[j]``."""
    idx = np.asarray(indices, dtype=np.int64).astype(np.uint64).reshape(-1)
    keys = np.full(idx.shape, key & 0xFFFFFFFFFFFFFFFF, dtype=np.uint64)
    base = _splitmix64(keys ^ _splitmix64(idx))
    streams = np.arange(1, n + 1, dtype=np.uint64) * _STREAM
    h = _splitmix64(base[:, None] + streams[None, :])
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


# ---- signed distance fields, local unit coordinates (y up) ----------------------------------------
def _length(x, y):
    return np.sqrt(x * x + y * y)


def sd_circle(x, y):
    return _length(x, y) - 1.0


def sd_box(x, y, bx=0.8, by=0.8):
    dx = np.abs(x) - bx
    dy = np.abs(y) - by
    outside = _length(np.maximum(dx, 0.0), np.maximum(dy, 0.0))
    return outside + np.minimum(np.maximum(dx, dy), 0.0)


def sd_triangle(x, y, r=1.15):
    """Equilateral triangle pointing up, circumradius ``r`` about its centroid (exact inside)."""
    return np.maximum(-y, 0.8660254 * np.abs(x) + 0.5 * y) - 0.5 * r


def sd_star(x, y, r=1.15, rf=0.48):
    """Five-pointed star (Inigo Quilez's exact sdStar5), outer radius ``r``, inner ratio ``rf``, a point up."""
    k1x, k1y = 0.809016994375, -0.587785252292
    k2x, k2y = -k1x, k1y
    px = np.abs(x)
    py = y
    d = np.maximum(k1x * px + k1y * py, 0.0)
    px = px - (2.0 * k1x) * d
    py = py - (2.0 * k1y) * d
    d = np.maximum(k2x * px + k2y * py, 0.0)
    px = px - (2.0 * k2x) * d
    py = py - (2.0 * k2y) * d
    px = np.abs(px)
    py = py - r
    bax, bay = rf * -k1y * r, rf * k1x * r - r
    h = np.clip((px * bax + py * bay) * (1.0 / (bax * bax + bay * bay)), 0.0, 1.0)
    return _length(px - bax * h, py - bay * h) * np.sign(py * bax - px * bay)


def sd_ring(x, y, mid=0.74, half=0.26):
    return np.abs(_length(x, y) - mid) - half


def sd_cross(x, y, arm=0.34):
    ax, ay = np.abs(x), np.abs(y)
    return np.minimum(np.maximum(ax - 0.95, ay - arm), np.maximum(ax - arm, ay - 0.95))


def sd_heart(x, y, s=0.56, c=0.58):
    """Inigo Quilez's exact heart, scaled so that it spans about the unit square."""
    px = np.abs(x) * s
    py = y * s + c
    a = _length(px - 0.25, py - 0.75) - 0.35355339
    t = 0.5 * np.maximum(px + py, 0.0)
    b = np.sqrt(np.minimum(px * px + (py - 1.0) ** 2, (px - t) ** 2 + (py - t) ** 2)) * np.sign(px - py)
    return np.where(py + px > 1.0, a, b) * (1.0 / s)


def sd_diamond(x, y, a=0.72, b=1.08):
    """A rhombus, half-width ``a`` and half-height ``b`` (taller than wide, never a rotated square)."""
    return (np.abs(x) * b + np.abs(y) * a - a * b) * (1.0 / np.hypot(a, b))


def sd_crescent(x, y):
    return np.maximum(_length(x, y) - 1.0, 0.84 - _length(x - 0.48, y - 0.12))


def sd_arrow(x, y):
    """An arrow pointing right: a thick shaft and a wide triangular head (legible at 16x16)."""
    ay = np.abs(y)
    shaft = np.maximum(np.abs(x + 0.475) - 0.525, ay - 0.25)
    head = np.maximum(-x, 0.5734623 * x + 0.8192319 * ay - 0.5734623)
    return np.minimum(shaft, head)


@dataclass(frozen=True)
class Shape:
    name: str
    sdf: object


SHAPES: dict[str, Shape] = {
    s.name: s
    for s in (
        Shape("circle", sd_circle),
        Shape("square", sd_box),
        Shape("triangle", sd_triangle),
        Shape("star", sd_star),
        Shape("ring", sd_ring),
        Shape("cross", sd_cross),
        Shape("heart", sd_heart),
        Shape("diamond", sd_diamond),
        Shape("crescent", sd_crescent),
        Shape("arrow", sd_arrow),
    )
}
SHAPE_NAMES: tuple[str, ...] = tuple(SHAPES)
_SUPPORT_DIRECTIONS = 90


def _support_points() -> np.ndarray:
    """``[n_shapes, 90, 2]`` extreme points of each shape (local, y up) in 90 directions, for bounding boxes."""
    g = np.linspace(-1.3, 1.3, 261)
    x, y = np.meshgrid(g, g)
    angles = np.linspace(0, 2 * np.pi, _SUPPORT_DIRECTIONS, endpoint=False)
    out = []
    for shape in SHAPES.values():
        inside = shape.sdf(x, y) <= 0
        px, py = x[inside], y[inside]
        best = np.argmax(np.cos(angles)[:, None] * px[None] + np.sin(angles)[:, None] * py[None], axis=1)
        out.append(np.stack([px[best], py[best]], -1))
    return np.array(out)


_SUPPORT = None


def rotated_bbox(shape_ids, cx, cy, r, rot):
    """Image-space bounding boxes ``[..., 4]`` (x0, y0, x1, y1 in [-1, 1], y down) of rotated shapes."""
    global _SUPPORT
    if _SUPPORT is None:
        _SUPPORT = _support_points()
    pts = _SUPPORT[np.asarray(shape_ids)]  # [..., P, 2]
    xs, ys = pts[..., 0], pts[..., 1]
    c, s = np.cos(rot)[..., None], np.sin(rot)[..., None]
    # local (y up) -> image (y down): rotate counter-clockwise as seen, then flip y
    X = cx[..., None] + r[..., None] * (c * xs - s * ys)
    Y = cy[..., None] - r[..., None] * (s * xs + c * ys)
    return np.stack([X.min(-1), Y.min(-1), X.max(-1), Y.max(-1)], -1)


# ---- scenes ---------------------------------------------------------------------------------------
@dataclass
class Scenes:
    """Parameters of ``N`` scenes with up to ``K`` object slots (colours in [0, 1], angles in radians).

    Backgrounds: a linear gradient from ``bg_a`` to ``bg_b`` along ``grad_angle`` plus a light texture
    (``stripes`` amplitude: oriented sinusoidal stripes; ``checker``: a soft checkerboard).
    Objects: ``shape`` index into :data:`SHAPE_NAMES` (``-1`` = empty slot), centre, radius, rotation,
    colour and a linear shading of relative amplitude ``shade`` along ``shade_angle``.
    """

    bg_a: np.ndarray  # [N, 3]
    bg_b: np.ndarray  # [N, 3]
    grad_angle: np.ndarray  # [N]
    stripes: np.ndarray  # [N]
    checker: np.ndarray  # [N]
    tex_freq: np.ndarray  # [N] radians per unit
    tex_angle: np.ndarray  # [N]
    tex_phase: np.ndarray  # [N, 2]
    shape: np.ndarray  # [N, K] int
    cx: np.ndarray  # [N, K]
    cy: np.ndarray  # [N, K]
    r: np.ndarray  # [N, K]
    rot: np.ndarray  # [N, K]
    color: np.ndarray  # [N, K, 3]
    shade: np.ndarray  # [N, K]
    shade_angle: np.ndarray  # [N, K]


def _f32(a):
    return np.asarray(a, dtype=np.float32)


def render(scenes: Scenes, resolution: int, out: np.ndarray | None = None) -> np.ndarray:
    """Render scenes to float32 ``[N, H, W, 3]`` in ``[-1, 1]`` (pixelwise independent of the batch).

    Works channel-first (``[N, 3, H, W]``: numpy broadcasts fast over long inner loops) and interleaves the
    channels once at the end, into ``out`` when given.
    """
    n, k = scenes.shape.shape
    res = int(resolution)
    grid = ((np.arange(res, dtype=np.float32) + 0.5) * (2.0 / res) - 1.0).astype(np.float32)
    gx = grid[None, None, :]  # [1, 1, W]
    gy = grid[None, :, None]  # [1, H, 1]

    # background: gradient + light texture, all separable into [N,1,W] and [N,H,1] parts
    ga = _f32(scenes.grad_angle)[:, None, None]
    t = (0.5 + 0.3535534 * np.cos(ga) * gx) + (0.3535534 * np.sin(ga)) * gy  # [N, H, W] in [0, 1]
    fa = _f32(scenes.tex_angle)[:, None, None]
    f = _f32(scenes.tex_freq)[:, None, None]
    ph = _f32(scenes.tex_phase)
    u = f * np.cos(fa) * gx + ph[:, 0, None, None]  # [N, 1, W]
    v = f * np.sin(fa) * gy + ph[:, 1, None, None]  # [N, H, 1]
    stripes = _f32(scenes.stripes)[:, None, None]
    checker = _f32(scenes.checker)[:, None, None]
    # stripes: sin(u + v) = sin u cos v + cos u sin v; checker: sin(f x + p) sin(f y + q)
    tex = (stripes * np.sin(u)) * np.cos(v)
    tex += (stripes * np.cos(u)) * np.sin(v)
    tex += (checker * np.sin(f * gx + ph[:, 0, None, None])) * np.sin(f * gy + ph[:, 1, None, None])
    a = _f32(scenes.bg_a)[:, :, None, None]  # [N, 3, 1, 1]
    b = _f32(scenes.bg_b)[:, :, None, None]
    img = (b - a) * t[:, None]  # [N, 3, H, W]
    img += a
    img += tex[:, None]

    # objects, slot by slot (later slots on top), each slot grouped by shape
    scale = 0.5 * res  # local distance * r * scale = distance in pixels
    for slot in range(k):
        ids = scenes.shape[:, slot]
        rows_all = np.nonzero(ids >= 0)[0]
        m = rows_all.size
        if m == 0:
            continue
        every = m == n
        cover = np.empty((m, res, res), dtype=np.float32)
        sub = ids[rows_all]
        for sid in np.unique(sub):
            pos = np.nonzero(sub == sid)[0]
            rows = rows_all[pos]
            r = _f32(scenes.r[rows, slot])[:, None, None]
            rot = _f32(scenes.rot[rows, slot])[:, None, None]
            c, s = np.cos(rot) / r, np.sin(rot) / r
            dx = gx - _f32(scenes.cx[rows, slot])[:, None, None]  # [M, 1, W]
            dy = gy - _f32(scenes.cy[rows, slot])[:, None, None]  # [M, H, 1]
            # image (y down) -> local (y up), undoing a counter-clockwise rotation by rot
            lx = (c * dx) - (s * dy)
            ly = (-s * dx) - (c * dy)
            d = SHAPES[SHAPE_NAMES[sid]].sdf(lx, ly)
            d *= -(r * scale)
            d += 0.5
            cover[pos] = np.clip(d, 0.0, 1.0, out=d)
        radius = _f32(scenes.r[rows_all, slot])[:, None, None]
        amp = _f32(scenes.shade[rows_all, slot])[:, None, None] / np.maximum(radius, 0.05)
        sa = _f32(scenes.shade_angle[rows_all, slot])[:, None, None]
        ocx = _f32(scenes.cx[rows_all, slot])[:, None, None]
        ocy = _f32(scenes.cy[rows_all, slot])[:, None, None]
        shade = (1.0 + (amp * np.cos(sa)) * (gx - ocx)) + (amp * np.sin(sa)) * (gy - ocy)  # [M, H, W]
        col = _f32(scenes.color[rows_all, slot])[:, :, None, None]  # [M, 3, 1, 1]
        target = img if every else img[rows_all]
        delta = col * shade[:, None]
        delta -= target
        delta *= cover[:, None]
        target += delta
        if not every:
            img[rows_all] = target
    if out is None:
        out = np.empty((n, res, res, 3), dtype=np.float32)
    np.clip(img, 0.0, 1.0, out=img)
    np.multiply(img.transpose(0, 2, 3, 1), 2.0, out=out)
    out -= 1.0
    return out


# ---- colour helpers -------------------------------------------------------------------------------
LUMA = np.array([0.299, 0.587, 0.114])


def hsv_to_rgb(h, s, v):
    """Vectorised HSV -> RGB, all in [0, 1]; returns ``[..., 3]``."""
    h6 = (np.asarray(h) % 1.0) * 6.0
    k = (np.array([5.0, 3.0, 1.0]) + h6[..., None]) % 6.0
    return np.asarray(v)[..., None] - (np.asarray(v) * np.asarray(s))[..., None] * np.clip(
        np.minimum(k, 4.0 - k), 0.0, 1.0
    )
