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
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

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
    images = np.clip((batch["images"] + 1.0) / 2.0, 0.0, 1.0)
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
        ax.set_title("\n".join(textwrap.wrap(batch["captions"][j], 26)) or " ", fontsize=7.5)
    figure.suptitle(f"{dataset.name} / {split} ({dataset.resolution}x{dataset.resolution})", fontsize=9)
    figure.tight_layout()
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, format="png")
    return out
