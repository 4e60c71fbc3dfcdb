"""The :class:`Dataset` interface shared by the generated and the real datasets, and its helpers.

Every dataset has four fixed splits (:data:`SPLITS`):

* ``train`` -- what the diffusion models are trained on;
* ``val`` -- held-out items for validation losses;
* ``reference`` -- the reference set for FID-style statistics;
* ``evaluator`` -- disjoint items used to train the evaluator networks (classifiers / attribute probes).

Images are float32 ``[N, H, W, 3]`` in ``[-1, 1]``; captions are plain lower-case English.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from typing import Any, Iterable

import numpy as np

from trajbench.errors import UserError

SPLITS: tuple[str, ...] = ("train", "val", "reference", "evaluator")

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


class DatasetError(UserError, ValueError):
    """An unknown dataset, split, option or index, or a missing / malformed data file."""


def tokenize(caption: str) -> list[str]:
    """The words of a caption as :meth:`Dataset.vocabulary` counts them (lower-case, punctuation dropped)."""
    return _WORD.findall(caption.lower())


def stable_key(*parts: Any) -> int:
    """A 64-bit key from its parts that is the same on every machine and Python run (unlike ``hash``)."""
    text = "|".join(str(part) for part in parts).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")


def check_split(split: str) -> str:
    if split not in SPLITS:
        close = difflib.get_close_matches(str(split), SPLITS, n=1, cutoff=0.3)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise DatasetError(f"unknown split {split!r}; {hint}valid splits: {', '.join(SPLITS)}")
    return split


def check_sizes(sizes: dict, defaults: dict) -> dict[str, int]:
    """Validate split sizes (non-negative ints for known splits), filling in the defaults."""
    out = dict(defaults)
    for split, size in (sizes or {}).items():
        check_split(split)
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 0:
            raise DatasetError(f"size of split {split!r} must be a non-negative integer, got {size!r}")
        out[split] = int(size)
    return out


def check_resolution(resolution: Any) -> int:
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or not 8 <= resolution <= 1024:
        raise DatasetError(f"resolution must be an integer in [8, 1024] (e.g. 16, 32, 64), got {resolution!r}")
    return int(resolution)


class Dataset:
    """A captioned image dataset with fixed splits, indexed by integers ``0 .. split_size(split) - 1``.

    Subclasses implement :meth:`split_size`, :meth:`images`, :meth:`captions`, :meth:`attributes`,
    :meth:`vocabulary` and :meth:`spec`; :meth:`batch` and index checking are shared.
    """

    name: str = ""
    resolution: int = 32
    channels: int = 3
    seed: int = 0

    # ---- the interface ---------------------------------------------------------------------------
    def split_size(self, split: str) -> int:
        raise NotImplementedError

    def images(self, split: str, indices) -> np.ndarray:
        """float32 ``[N, H, W, 3]`` in ``[-1, 1]`` for the given indices of ``split``."""
        raise NotImplementedError

    def captions(self, split: str, indices) -> list[str]:
        raise NotImplementedError

    def attributes(self, split: str, indices) -> list[dict]:
        """Ground truth per item (JSON-serialisable dicts)."""
        raise NotImplementedError

    def batch(self, split: str, indices) -> dict:
        """``{"images": float32 [N, H, W, 3] in [-1, 1], "captions": [N strings]}``."""
        idx = self.check_indices(split, indices)
        return {"images": self.images(split, idx), "captions": self.captions(split, idx)}

    def vocabulary(self) -> list[str]:
        """Every word that can appear in a caption (as :func:`tokenize` splits them), sorted."""
        raise NotImplementedError

    def spec(self) -> dict:
        """A JSON-serialisable description that identifies the data exactly (used to hash caches)."""
        raise NotImplementedError

    # ---- helpers ---------------------------------------------------------------------------------
    def check_indices(self, split: str, indices) -> np.ndarray:
        """Indices as a 1-D int64 array, checked against the split's size (accepts ints, ranges, slices)."""
        size = self.split_size(split)
        if isinstance(indices, slice):
            indices = range(*indices.indices(size))
        idx = np.atleast_1d(np.asarray(indices))
        if idx.size == 0:
            return np.zeros(0, dtype=np.int64)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise DatasetError(f"indices must be a 1-D sequence of integers, got dtype {idx.dtype} shape {idx.shape}")
        idx = idx.astype(np.int64)
        bad = (idx < 0) | (idx >= size)
        if bad.any():
            raise DatasetError(
                f"index {int(idx[bad][0])} out of range for split {split!r} of {self.name!r} "
                f"(size {size}); valid indices are 0..{size - 1}"
            )
        return idx

    def __len__(self) -> int:  # the training split, for convenience
        return self.split_size("train")

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={self.split_size(s)}" for s in SPLITS)
        return f"<{type(self).__name__} {self.name!r} {self.resolution}x{self.resolution} seed={self.seed} {sizes}>"


def words_of(texts: Iterable[str]) -> list[str]:
    """Sorted unique words of some texts."""
    return sorted({word for text in texts for word in tokenize(text)})
