"""What the speed benchmarks share without torch: the study cell (a spec's ``rf/lognorm(0.00, 1.00)`` cell) and
a random training pool of the right shapes."""

from __future__ import annotations

import numpy as np

from trajbench.run.build import build_text_encoders
from trajbench.run.config import data_shape
from trajbench.spec import Cell, load_spec

FORMULATION = "rf/lognorm(0.00, 1.00)"
POOL_SIZE = 2048  # examples in the in-memory training pool (step cost does not depend on it)


def study_cell(spec_path: str, overrides=()):
    """``(spec, cell, train config)`` of the spec's ``FORMULATION`` cell on its first dataset and seed (``[train]``,
    its dataset table, then ``overrides`` such as ``train.depth=4``)."""
    spec = load_spec(spec_path, overrides)
    cell = Cell(FORMULATION, spec.datasets[0], spec.seeds[0])
    return spec, cell, spec.train_config(cell)


def random_pool(config, size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Examples of the right shapes (what the model denoises, images [N, R, R, 3] or latents, in [-1, 1]; Gaussian
    text features as the run's text encoders shape them): speed does not depend on content, and rendering and
    encoding a real pool would only add set-up time."""
    rng = np.random.default_rng(seed)
    text = build_text_encoders(config)
    pool = {"images": rng.uniform(-1, 1, (size,) + data_shape(config)),
            "tokens": rng.standard_normal((size, text.num_tokens, text.token_dim)),
            "pooled": rng.standard_normal((size, text.pooled_dim))}
    return {k: v.astype(np.float32) for k, v in pool.items()}
