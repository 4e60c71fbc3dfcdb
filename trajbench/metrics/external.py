"""Plumbing shared by the networks whose weights a user supplies (FID Inception, CLIP): reading a weight file,
naming it by its content, and checking the images given to it.

Nothing is downloaded: every weight file is a local ``.npz`` of named arrays, converted once from a PyTorch
checkpoint where torch is installed (``trajbench convert-weights``).  Problems are reported as one line
naming the file, the key and the fix (:class:`WeightsError`, a ``ValueError``).
"""

from __future__ import annotations

import functools
import hashlib
import zipfile
import zlib
from pathlib import Path

import numpy as np

from trajbench.errors import UserError

__all__ = ["WeightsError", "check_images", "file_digest", "read_npz"]

RANGE_SLACK = 1.0
"""Images may overshoot [-1, 1] by this much (an unclipped sampler's output) and are clipped; beyond it they are
taken to be in another range ([0, 255], ...) and refused."""


class WeightsError(UserError, ValueError):
    """A weight file that cannot be used (unreadable, incomplete, another architecture): one line naming the
    file, the key and the fix."""


_UNREADABLE = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)


def read_npz(path, *, what: str, fix: str, error: type[WeightsError] = WeightsError) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` at ``path``.  FileNotFoundError if it is missing, ``error`` (a
    :class:`WeightsError`) if it is not a readable ``.npz`` of named arrays; ``what`` names the network and
    ``fix`` says how to make the file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{what} weights not found at {path}: {fix}")
    try:
        archive = np.load(path, allow_pickle=False)
    except _UNREADABLE as exc:
        raise unreadable(path, what, ".npz", exc, fix, error) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise error(f"{path} holds a single array, not an .npz of named {what} weights; {fix}")
    try:
        with archive:
            return {key: archive[key] for key in archive.files}
    except _UNREADABLE as exc:
        raise unreadable(path, what, ".npz", exc, fix, error) from None


def unreadable(path, what: str, how: str, exc: BaseException, fix: str,
               error: type[WeightsError] = WeightsError) -> WeightsError:
    """The one-line ``error`` for a weight file that ``how`` (e.g. ``.npz``) could not read."""
    message = " ".join(str(exc).split())[:200]
    return error(f"cannot read {what} weights {path} as {how} ({type(exc).__name__}: {message}); {fix}")


def file_digest(path) -> str:
    """The first 16 hex digits of the SHA-256 of a file's bytes: the identity of a weight file, whatever its
    path (hashed once per path, size and modification time in a process)."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"weights not found at {path}")
    stat = path.stat()
    return _digest(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=None)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            sha.update(block)
    return sha.hexdigest()[:16]


def check_images(images) -> np.ndarray:
    """``images`` as float32 ``[N, H, W, 3]`` in [-1, 1] (the project's convention), clipped to it as saving
    samples would; a one-line ValueError for another shape, integer pixels, NaN, or values beyond
    ``1 + RANGE_SLACK`` in size (images in [0, 255])."""
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[-1] != 3 or 0 in x.shape:
        raise ValueError(f"images must be a non-empty float array [N, H, W, 3] in [-1, 1], got shape {x.shape}")
    if x.dtype.kind != "f":
        raise ValueError(f"images must be floats in [-1, 1], got dtype {x.dtype} (map uint8 with x / 127.5 - 1)")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise ValueError("images contain NaN or infinite values")
    low, high = float(x.min()), float(x.max())
    if low < -1.0 - RANGE_SLACK or high > 1.0 + RANGE_SLACK:
        raise ValueError(f"images must lie in [-1, 1], got values in [{low:.4g}, {high:.4g}]; map [0, 255] pixels "
                         "with x / 127.5 - 1 and [0, 1] ones with 2 x - 1")
    return np.clip(x, -1.0, 1.0)
