"""A PNG grid of dataset examples, each titled with its caption (for ``trajbench data preview``)."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np

from trajbench.data.base import Dataset, DatasetError


def write_preview(dataset, out_path, *, n=16, split="train", columns=4) -> Path:
    """Write items ``0 .. n-1`` of ``split`` as a grid of ``columns`` columns, each titled with its wrapped caption.

    ``dataset`` is a :class:`~trajbench.data.base.Dataset` or a name for :func:`trajbench.data.get_dataset`
    (at its default resolution, 32). Uses matplotlib's Agg canvas directly (no global backend change).
    Returns the path written.
    """
    if not isinstance(dataset, Dataset):
        from trajbench.data import get_dataset

        dataset = get_dataset(dataset)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise DatasetError(f"n must be a positive integer, got {n!r}")
    if isinstance(columns, bool) or not isinstance(columns, (int, np.integer)) or columns < 1:
        raise DatasetError(f"columns must be a positive integer, got {columns!r}")
    n = min(int(n), dataset.split_size(split))
    if n == 0:
        raise DatasetError(f"split {split!r} of {dataset.name!r} is empty; nothing to preview")
    batch = dataset.batch(split, np.arange(n))
    title = f"{dataset.name} / {split} ({dataset.resolution}x{dataset.resolution})"
    return write_image_grid(batch["images"], batch["captions"], out_path, columns=columns, title=title)


def write_image_grid(images, captions, out_path, *, columns=4, title="") -> Path:
    """Write images in [-1, 1] ([N, H, W, 3]) as a PNG grid, each titled with its wrapped caption."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    images = np.clip((np.asarray(images, np.float32) + 1.0) / 2.0, 0.0, 1.0)
    n = len(images)
    columns = min(int(columns), n)
    rows = math.ceil(n / columns)
    figure = Figure(figsize=(2.0 * columns, 2.45 * rows), dpi=100)
    FigureCanvasAgg(figure)
    for j in range(rows * columns):
        ax = figure.add_subplot(rows, columns, j + 1)
        ax.set_axis_off()
        if j >= n:
            continue
        ax.imshow(images[j], interpolation="nearest")
        ax.set_title("\n".join(textwrap.wrap(captions[j], 26)) or " ", fontsize=7.5)
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, format="png")
    return out
