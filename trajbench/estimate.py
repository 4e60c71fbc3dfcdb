"""The grid's cost estimate: the fp32 matmul peak of this machine, and the FLOPs of training and sampling an
MMDiT, so a grid can say how long it will take before it starts.  The constants below are calibrated by
benchmarks/bench.py (the measured figures: benchmarks/README.md)."""

from __future__ import annotations

import time
from functools import lru_cache

import numpy as np

TRAIN_EFFICIENCY = 0.25
"""Fraction of the matmul peak that a training step reaches on a CPU (small matrices keep it well below the peak);
a little under the MFU that ``benchmarks/bench.py --preset study-cell`` measures at the specs' recipe."""
SAMPLE_EFFICIENCY = 0.35
"""The same for sampling and the step axis (forward passes only, on guidance-doubled batches); a little under what
that benchmark's whole-cell scoring reaches."""
COMPILE_SECONDS = 25.0
"""Compiling one recipe's programs (train step, validation, samplers) with a cold cache. Paid once per recipe and
program key (``formulations.program_key``): cells that differ only in their formulation's parameters share one
Trainer (``run.trainer.trainer_for``) and the persistent compilation cache."""
EVALUATOR_SECONDS = 90.0  # training one evaluator network, once per dataset (then cached)


@lru_cache(maxsize=None)
def matmul_peak_flops(size: int = 1024, seconds: float = 0.5) -> float:
    """Measured fp32 FLOP/s of a jitted ``size x size`` matrix product on the default device (best of runs)."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
    product = jax.jit(lambda x: x @ x)
    product(a).block_until_ready()
    best, deadline = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        product(a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def train_flops(train_config) -> float:
    """FLOPs of a whole training run: 3 x forward FLOPs x batch x steps."""
    from trajbench.models.mmdit import forward_flops
    from trajbench.run.config import model_config

    return 3.0 * forward_flops(model_config(train_config)) * train_config.batch_size * train_config.steps


REFERENCE_NFE = 100
"""A rough count of the network evaluations of one accurate (Dopri5) solve of the step axis."""


def sample_flops(train_config, scored, samples: int, step_axis_samples: int = 0) -> float:
    """FLOPs of scoring one run: forward FLOPs x network evaluations over the scored (weights, setting, role)
    triples (``EvalSpec.scored``), plus the step axis: each setting again on ``step_axis_samples`` prompts and
    one accurate solve per (weights, guidance, protocol)."""
    from trajbench.models.mmdit import forward_flops
    from trajbench.run.config import model_config

    per_image = forward_flops(model_config(train_config))
    total, references = 0.0, set()
    for weights, setting, _ in scored:
        nfe = {"heun": 2 * setting.steps - 1, "dopri5": 6 * setting.steps}.get(setting.solver, setting.steps)
        copies = 2 if setting.guidance != 1.0 else 1
        total += per_image * nfe * copies * (samples + step_axis_samples)
        if step_axis_samples and (weights, setting.guidance, setting.protocol) not in references:
            references.add((weights, setting.guidance, setting.protocol))
            total += per_image * REFERENCE_NFE * copies * step_axis_samples
    return total


def compiled_programs(spec, cells) -> set:
    """The distinct compilations a grid needs: one per (recipe, program key), the recipe being a cell's training
    configuration without its formulation (``run.config.recipe_of``), the key the structure of its formulation
    (``formulations.program_key``)."""
    from trajbench.formulations import program_key
    from trajbench.run.config import recipe_of

    return {(recipe_of(spec.train_config(c)), program_key(c.variant)) for c in cells}


def estimate_grid_seconds(spec, cells=None) -> dict:
    """A rough wall-time estimate of running ``cells`` (default: all) of a spec on this machine."""
    cells = spec.cells() if cells is None else cells
    peak = matmul_peak_flops()
    train = sum(train_flops(spec.train_config(c)) for c in cells) / (peak * TRAIN_EFFICIENCY)
    scored = spec.eval.scored()
    sample = sum(sample_flops(spec.train_config(c), scored, spec.eval.samples, spec.eval.step_axis_samples)
                 for c in cells) / (peak * SAMPLE_EFFICIENCY)
    compilations = len(compiled_programs(spec, cells))
    overhead = COMPILE_SECONDS * compilations + EVALUATOR_SECONDS * len({c.dataset for c in cells})
    return {"cells": len(cells), "compilations": compilations, "matmul_peak_gflops": round(peak / 1e9, 1),
            "train_seconds": round(train), "sample_seconds": round(sample), "overhead_seconds": round(overhead),
            "total_seconds": round(train + sample + overhead)}


def format_seconds(seconds: float) -> str:
    seconds = int(np.ceil(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"
