"""Applying a frozen auxiliary network: datasets by name, image checks, and fixed-size batches."""

from __future__ import annotations

import numpy as np


def resolve_dataset(dataset, resolution=None):
    """A :class:`~trajbench.data.Dataset` from a dataset or a name (``resolution`` for names, default 32)."""
    if isinstance(dataset, str):
        from trajbench.data import get_dataset

        return get_dataset(dataset, resolution=32 if resolution is None else resolution)
    if not hasattr(dataset, "spec") or not hasattr(dataset, "images"):
        raise TypeError(f"dataset must be a trajbench Dataset or a dataset name, got {type(dataset).__name__}")
    return dataset


def check_images(images, resolution: int) -> np.ndarray:
    """``images`` as float32 ``[N, R, R, 3]`` in [-1, 1]: uint8 images are mapped from [0, 255]; float images
    are clipped to [-1, 1] (as saving samples as images would)."""
    x = np.asarray(images)
    if x.ndim == 3 and x.shape[-1] == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[1:] != (resolution, resolution, 3):
        raise ValueError(f"images must be [N, {resolution}, {resolution}, 3] (this evaluator's resolution), "
                         f"got shape {x.shape}")
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 127.5 - 1.0
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise ValueError("images contain NaN or infinite values")
    return np.clip(x, -1.0, 1.0)


def batched(fn, params, array: np.ndarray, batch_size: int):
    """Apply the jitted ``fn(params, batch)`` over ``array`` in fixed-size batches (the last one padded, so
    one compilation serves every size); outputs concatenated on the host (a tuple of outputs is kept)."""
    n = array.shape[0]
    if n == 0:
        out = fn(params, np.zeros((1,) + array.shape[1:], array.dtype))
        return _tree_map(lambda a: np.zeros((0,) + a.shape[1:], np.float32), out)
    bs = min(batch_size, n)
    parts = []
    for start in range(0, n, bs):
        chunk = array[start : start + bs]
        k = chunk.shape[0]
        if k < bs:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], bs - k, axis=0)])
        parts.append(_tree_map(lambda a: np.asarray(a)[:k], fn(params, chunk)))
    if isinstance(parts[0], tuple):
        return tuple(np.concatenate([p[i] for p in parts]) for i in range(len(parts[0])))
    return np.concatenate(parts)


def _tree_map(f, out):
    return tuple(f(o) for o in out) if isinstance(out, tuple) else f(out)
