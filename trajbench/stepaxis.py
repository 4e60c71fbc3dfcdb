"""The step axis without the evaluator: how far an N-step sample is from the exact solution of the trained
model's ODE, and how straight the model's paths are.

For K prompts and fixed noise, per (weights, sampler setting):

* ``ref_distance`` = RMS_i |x_N(i) - x_ref(i)| / RMS_i |x_ref(i) - x_ref(i + 1 mod K)|: the latent-space distance
  between the N-step sample and an accurate solve of the SAME ODE (same coordinates' start, guidance and x0
  clipping; Dopri5 in rectified-flow coordinates at rtol = atol = REF_TOLERANCE) from the same noise and prompt,
  relative to the distance between two different samples. Near 0: the sampler's discretisation error is
  negligible; near 1: the N-step sample is as far from the exact one as an unrelated sample is.
* ``straightness`` = sum_k ds_k mean_i |v_k(i) - vbar(i)|^2 / (|s_N - s_0| mean_i |vbar(i)|^2), on the N-step
  path in rf coordinates y = z / (a + b): v_k = (y_{k+1} - y_k) / (s_{k+1} - s_k) per step, vbar the chord
  (y_N - y_0) / (s_N - s_0). 0 for a straight path (Liu et al.'s straightness, normalised and discretised).

A model error (the trained field differs from the data's) moves x_ref itself and is invisible here; what is
measured is the discretisation error of the sampler on the model actually trained. FID at many steps minus
this error's effect is the model's.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

REF_TOLERANCE = 1e-5
NOISE_STREAM = 7_919  # fold_in index of the step axis's noise (independent of the scored samples' noise)


@functools.partial(jax.jit, static_argnames=("steps", "guidance", "solver", "coordinates", "x0_clip", "image_shape"))
def _path(formulation, network, tokens, pooled, key, *, steps, guidance, solver, coordinates, x0_clip, image_shape):
    """The N-step sample and its path in rf coordinates (:func:`trajbench.samplers.sample_path`)."""
    from trajbench.samplers import guided_model, sample_path, time_grid

    noise = jax.random.normal(key, (tokens.shape[0], *image_shape), jnp.float32)
    model_fn, _ = guided_model(network, tokens, pooled, guidance)
    return sample_path(formulation, model_fn, noise, time_grid(steps), solver=solver, coordinates=coordinates,
                       x0_clip=x0_clip)


@functools.partial(jax.jit, static_argnames=("guidance", "x0_clip"))
def _accurate(formulation, network, tokens, pooled, y_start, s_start, s_end, *, guidance, x0_clip):
    """Dopri5 in rf coordinates from (y_start, s_start) to s_end, read out as x0-hat = y / (1 - s_end)."""
    from trajbench.samplers import guided_model
    from trajbench.samplers.sampling import rf_velocity
    from trajbench.samplers.solvers import dopri5

    model_fn, _ = guided_model(network, tokens, pooled, guidance)
    y_end, _ = dopri5(rf_velocity(formulation, model_fn, x0_clip=x0_clip), y_start, jnp.stack([s_start, s_end]),
                      rtol=REF_TOLERANCE, atol=REF_TOLERANCE)
    return y_end / (1.0 - s_end)


def straightness(ys: np.ndarray, s: np.ndarray) -> float:
    """See the module docstring; ``ys`` [N + 1, B, ...], ``s`` [N + 1] (zero-length steps are skipped)."""
    ys = np.asarray(ys, np.float64).reshape(ys.shape[0], ys.shape[1], -1)
    s = np.asarray(s, np.float64)
    ds = np.diff(s)
    keep = np.abs(ds) > 0
    chord = (ys[-1] - ys[0]) / (s[-1] - s[0])
    v = np.diff(ys, axis=0)[keep] / ds[keep][:, None, None]
    deviation = ((v - chord[None]) ** 2).sum(-1).mean(-1)  # [steps]: mean over samples
    return float((np.abs(ds[keep]) * deviation).sum() / (abs(s[-1] - s[0]) * (chord ** 2).sum(-1).mean()))


def relative_distance(x: np.ndarray, reference: np.ndarray) -> float:
    """RMS |x_i - ref_i| over RMS |ref_i - ref_{i+1 mod K}| (see the module docstring)."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    reference = np.asarray(reference, np.float64).reshape(len(reference), -1)
    between = np.sqrt(((reference - np.roll(reference, 1, axis=0)) ** 2).sum(-1).mean())
    return float(np.sqrt(((x - reference) ** 2).sum(-1).mean()) / between)


def step_axis_metrics(run, weights: str, setting, tokens, pooled, *, seed: int = 0, references=None) -> dict:
    """``{"ref_distance", "straightness", "ref_nfe"}`` of one (weights, setting) on the prompts (tokens, pooled).

    ``references``: a dict reused across the settings of one run, so the accurate solve of each (weights,
    guidance, protocol) is kept once (it does not depend on the step count)."""
    from trajbench.samplers import for_sampling
    from trajbench.run.config import data_shape

    if len(tokens) < 2:
        raise ValueError("the step axis needs at least 2 prompts (step_axis_samples >= 2)")
    network = jax.tree_util.Partial(run.model.apply, run.weights[weights])
    formulation = for_sampling(run.formulation)
    tokens, pooled = jnp.asarray(tokens), jnp.asarray(pooled)
    x0_clip = setting.x0_clip_for(run)
    x_n, ys, s = _path(formulation, network, tokens, pooled, jax.random.fold_in(jax.random.key(seed), NOISE_STREAM),
                       steps=setting.steps, guidance=setting.guidance, solver=setting.solver,
                       coordinates=setting.coordinates, x0_clip=x0_clip, image_shape=data_shape(run.config))
    references = {} if references is None else references
    key = (weights, setting.guidance, setting.protocol, x0_clip, len(tokens))
    if key not in references:  # the start (ys[0], s[0]) and end s[-1] depend on the protocol, not on the steps
        references[key] = np.asarray(_accurate(formulation, network, tokens, pooled, ys[0], s[0], s[-1],
                                               guidance=setting.guidance, x0_clip=x0_clip))
    return {"ref_distance": relative_distance(np.asarray(x_n), references[key]),
            "straightness": straightness(np.asarray(ys), np.asarray(s))}
