"""From a trained network to images: guidance, the two ODE coordinate systems, ``generate``.

Notation: z_t = a_t x0 + b_t eps is a formulation's path in its own time t (t = 0 data, t = 1 noise);
lambda_t = log(a_t^2 / b_t^2) its log-SNR; F = p_t x0 + q_t eps its network target.

Coordinates
-----------
``"rf"`` (default): every formulation is sampled as a rectified flow on ONE shared grid in the
rectified-flow time s. The rf state is y = z / (a_t + b_t) = (1 - s) x0 + s eps, at the rf time
s = b_t / (a_t + b_t), i.e. the formulation time t(s) solves lambda_t = 2 log((1 - s) / s)
(bisection, :func:`rf_to_formulation_time`). The rf velocity is

    dy/ds = eps-hat - x0-hat,   (x0-hat, eps-hat) from the network output at z = (a_t + b_t) y, t = t(s).

Because this ODE and its grid do not depend on the formulation (only the network does), the sampler is
identical for every formulation, so differences in sample quality come from training alone -- the
point of the paper's comparison (Sec. 5.1 compares all 61 variants under one fixed-step sampler).
That is why "rf" is the default. At s = 0 the state is y = x0, so the result is y itself.

``"native"`` with ``solver="ddim"``: the paper-protocol reading -- each formulation stepped along its
own path on its own uniform time grid. Start: t_start = :func:`native_start`, the largest t in
[t_min, t_max] with b_t / a_t <= SIGMA_MAX = 80 (EDM's sigma_max; one rule for every path; it is the
rf time s = 80 / 81, found by :func:`rf_to_formulation_time`; argument ``sigma_max``, None for t_max),
from z = b(t_start) eps. Grid: the shared u in [1, 0] mapped affinely, t_k = t_min + (t_start - t_min) u_k.
Step (:func:`.solvers.ddim`, deterministic DDIM):

    z_{k+1} = a(t_{k+1}) x0-hat + b(t_{k+1}) eps-hat,   (x0-hat, eps-hat) from the network at (z_k, t_k),

i.e. Euler on z / a in sigma = b / a: exactly Euler dz = (eps-hat - x0-hat) dt for rf, EDM's Euler
sampler for the VE paths (a = 1, b = sigma), LDM's DDIM for eps/linear and v/linear; nfe = steps.
"ddim" with coordinates "rf" is a ValueError (there it would be Euler). The result is x0-hat =
z_end / a(t_min) (the residual b(t_min) eps part is < 4e-3 for every registered formulation with the
default t_min and negligible for non-EDM paths).

The velocity solvers (euler, heun, dopri5) in native coordinates integrate the probability-flow ODE
dz/dt = a'_t x0-hat + b'_t eps-hat on the same grid from the same start. They fail for the EDM paths:
sigma(t) = exp(P_mean + P_std Phi^-1(t)) (or t / (1 - t), tan(pi t / 2)) has d sigma / dt -> infinity
at t -> 1, so the first Euler step overshoots by orders of magnitude (Gaussian test, 5..25 Euler steps:
errors 1e1..1e6 for the lognormal EDMs, 2..50 for edm/rf, edm/cos; from t_max, Dopri5 needed > 16k
steps). DDIM does not: with x0-hat frozen its step is exact in sigma. On the Gaussian test DDIM's error
at 5 -> 50 steps is 0.35 -> 0.04 for rf, cos and the EDMs with P_std >= 1.2 (first order, as Euler), but
the lognormal EDMs with P_std = 0.6 converge slowly, because a uniform grid in their t (the quantile of
log sigma ~ N(P_mean, P_std^2)) is coarse near the data: the last point before t_min has sigma =
exp(P_mean + P_std Phi^-1(1 / N)) (0.29 for edm(0.00, 0.60), 0.97 for edm(1.20, 0.60) at N = 50), and the
last step returns the posterior mean x0-hat there (errors 0.55 -> 0.21 and 1.04 -> 0.74).

Evaluable range, start and end
------------------------------
A network is only evaluated at t in [t_min, t_max] = [SAMPLE_T_MIN, SAMPLE_T_MAX] = [1e-30, 1 - T_MARGIN]:
t_max keeps to the trained range at the noise end; t_min is far below T_MARGIN because every target
extrapolates benignly towards the data end (EDM's preconditioning gives D -> z as sigma -> 0) and the
EDM paths with a large P_mean need it (edm(1.20, 0.60) has sigma(T_MARGIN) = 0.19 but
sigma(1e-30) = 0.0034).

rf coordinates start at the formulation's t_max from z = b(t_max) eps, native ones at t_start <= t_max
(above) from z = b(t_start) eps; either way the a x0 part of the true marginal is dropped. In rf
coordinates that is exact up to a/b < 2e-6 for rf, cos, edm/rf and edm/cos (and a/b <= 0.013 for the
EDMs with P_std >= 1.0). In native coordinates a/b = 1 / SIGMA_MAX = 0.0125 at t_start for every path
that reaches b/a = 80 (rf: t_start = 80/81; edm(-0.40, 1.00) stops at 77.5 at t_max), as in EDM's own
sampler; on the Gaussian test (sd 0.5, |mu| <= 0.5) it moves the exact endpoint's mean by
sd mu / 80 <= 0.003 and its sd by 2e-5, relative.
Both are a bias for paths that do not get close to pure noise inside [0, t_max] (these start at t_max
in both systems): LDM-linear (eps/linear, v/linear; terminal SNR 0.0047, a/b = 0.068 at
t = 1, as in LDM's own samplers) and the EDMs with P_std = 0.6 (sigma(t_max) = exp(P_mean + 2.85),
5.2 for edm(-1.20, 0.60)). In rf coordinates the shared grid is therefore clipped from above at the
formulation's reachable s_hi = b / (a + b) at t_max (LDM: 0.936; edm(P_mean, 0.60): 0.84..0.98;
all others > 0.99): grid points above s_hi become zero-length steps (they still cost their network
calls, so every formulation spends the same nfe), and the integration starts from y = s_hi eps.
Below the reachable range (s < s_lo = s(t_min), at most 0.0034) t(s) is clamped to t_min: the
velocity there is the one at s_lo, an O(s_lo^2) error in the result.

eps-prediction near a_t = 0
---------------------------
At t_max an eps-network on a path that reaches pure noise (eps/cos: a = 1.6e-6) gives
x0-hat = (z - b eps-hat) / a, which multiplies the network's error by b / a = 6e5, and every ODE
started there uses x0-hat with an O(1) weight. On the Gaussian test an eps-hat error of 1e-3
turns the 25-step rf Euler result error from 0.08 into 12 (v/cos and rf are unaffected). Native
coordinates start where b / a = 80 instead, which bounds the amplification: 25 DDIM steps give 0.082
with that error, as with the exact network (from t_max, ``sigma_max=None``: 18.6). ``x0_clip = c``
(ADM's clip_denoised: x0-hat clipped to [-c, c], eps-hat recomputed from z) bounds this; it is off by
default because it changes the ODE for every formulation (use c = 1 for data in [-1, 1]).

Classifier-free guidance
------------------------
F = F_uncond + g (F_cond - F_uncond), with ONE network call on the concatenated [cond; uncond] batch
(2B examples); the unconditional condition is all-zero tokens and pooled vector. Guidance acts on F;
since (x0-hat, eps-hat, velocity) are linear in F at fixed (z, t), it is the same as guiding any of
them. g = 1 (or None), given as a Python number, skips the unconditional half (batch B). So Euler
with N steps makes N velocity evaluations = N network calls, each of batch 2B with guidance.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers

import jax
import jax.numpy as jnp

from trajbench import xla
from trajbench.formulations import T_MARGIN, Formulation
from trajbench.formulations.densities import Uniform
from trajbench.formulations.targets import Unweighted
from trajbench.samplers.solvers import ddim, get_solver, time_grid

SAMPLE_T_MIN = 1e-30
SAMPLE_T_MAX = 1.0 - T_MARGIN
SIGMA_MAX = 80.0  # EDM's sigma_max: native sampling starts where b_t / a_t reaches it
COORDINATES = ("rf", "native")
BISECTION_STEPS = 40


def for_sampling(formulation: Formulation) -> Formulation:
    """The same formulation with its training density and loss weighting replaced by defaults.

    Sampling reads only the path and the target, so this changes no result; it lets formulations
    that differ only in training density (all 39 rf/* variants, say) share one compiled sampler.
    """
    return dataclasses.replace(formulation, density=Uniform(), weighting=Unweighted())


# ---- rf time <-> formulation time --------------------------------------------------------------
def rf_time(formulation: Formulation, t):
    """s(t) = b_t / (a_t + b_t): the rectified-flow time with the same log-SNR as formulation time t."""
    a, b = formulation.alpha_sigma(t)
    return b / (a + b)


def rf_to_formulation_time(formulation: Formulation, s, t_min=SAMPLE_T_MIN, t_max=SAMPLE_T_MAX):
    """t(s): the formulation time with lambda_t = 2 log((1 - s) / s), clamped to [t_min, t_max].

    Bisection on u = logit(t) (lambda_t is decreasing in t; {BISECTION_STEPS} halvings of
    [logit(t_min), logit(t_max)] reach float32 resolution), vectorised over s and jit-able. Where the
    formulation cannot reach that log-SNR inside [t_min, t_max] (s < s(t_min), or s > s(t_max), e.g.
    LDM-linear for s > 0.936) the result is the nearest end, t_min or t_max.
    """
    s = jnp.asarray(s, jnp.float32)
    target = 2.0 * (jnp.log1p(-s) - jnp.log(s))  # +inf at s = 0, -inf at s = 1
    t_min = jnp.asarray(t_min, jnp.float32)
    t_max = jnp.asarray(t_max, jnp.float32)
    lo = jnp.broadcast_to(jnp.log(t_min) - jnp.log1p(-t_min), target.shape)
    hi = jnp.broadcast_to(jnp.log(t_max) - jnp.log1p(-t_max), target.shape)

    def halve(_, bracket):
        lo, hi = bracket
        mid = 0.5 * (lo + hi)
        too_clean = formulation.logsnr(jax.nn.sigmoid(mid)) > target  # need a larger t
        return jnp.where(too_clean, mid, lo), jnp.where(too_clean, hi, mid)

    lo, hi = jax.lax.fori_loop(0, BISECTION_STEPS, halve, (lo, hi))
    # One (vectorised) log-SNR evaluation for the final choice: the better end of the bracket, or
    # exactly t_min / t_max where the target is out of reach.
    ends = jnp.clip(jax.nn.sigmoid(jnp.stack([lo, hi])), t_min, t_max)
    limits = jnp.broadcast_to(jnp.stack([t_min, t_max]).reshape((2,) + (1,) * lo.ndim), ends.shape)
    candidates = jnp.concatenate([ends, limits])
    lam = formulation.logsnr(candidates)
    t = jnp.where(jnp.abs(lam[0] - target) <= jnp.abs(lam[1] - target), ends[0], ends[1])
    t = jnp.where(target <= lam[3], t_max, t)
    return jnp.where(target >= lam[2], t_min, t)


rf_to_formulation_time.__doc__ = rf_to_formulation_time.__doc__.replace("{BISECTION_STEPS}", str(BISECTION_STEPS))


def reachable_rf_range(formulation: Formulation, t_min=SAMPLE_T_MIN, t_max=SAMPLE_T_MAX):
    """(s_lo, s_hi) = (s(t_min), s(t_max)): the rf times at which the formulation is evaluated exactly."""
    return rf_time(formulation, jnp.float32(t_min)), rf_time(formulation, jnp.float32(t_max))


def native_start(formulation: Formulation, t_min=SAMPLE_T_MIN, t_max=SAMPLE_T_MAX, sigma_max=SIGMA_MAX):
    """t_start: the largest t in [t_min, t_max] with b_t / a_t <= sigma_max (t_max where b / a stays below).

    b / a = sigma_max is the rf time s = sigma_max / (1 + sigma_max), so t_start = t(s) by
    :func:`rf_to_formulation_time`, to float32 resolution in t (b / a = 79.7 for edm(-1.20, 1.20), whose
    t_start = 1 - 1.7e-6 is 28 float32 steps below 1). ``sigma_max=None``: t_max (no cap).
    """
    if sigma_max is None:
        return jnp.float32(t_max)
    return rf_to_formulation_time(formulation, sigma_max / (1.0 + sigma_max), t_min, t_max)


# ---- velocities -----------------------------------------------------------------------------------
def denoise(formulation: Formulation, model_fn, z, t, x0_clip=None):
    """(x0-hat, eps-hat) from the network output at (z, t).

    With ``x0_clip = c`` (ADM's ``clip_denoised``): x0-hat <- clip(x0-hat, -c, c) and
    eps-hat <- (z - a x0-hat) / b, so the pair stays consistent with z. Off by default (the exact
    ODE); see the module docstring for eps-prediction near a_t = 0, where it is needed.
    """
    x0, eps = formulation.to_x0_eps(z, formulation.predict(model_fn, z, t).astype(z.dtype), t)
    if x0_clip is None:
        return x0, eps
    a, b = formulation.alpha_sigma(t)
    x0 = jnp.clip(x0, -x0_clip, x0_clip)
    return x0, (z - a * x0) / b


def rf_velocity(formulation: Formulation, model_fn, t_min=SAMPLE_T_MIN, t_max=SAMPLE_T_MAX, x0_clip=None):
    """velocity_fn(y, s) = eps-hat - x0-hat, the network's prediction as a rectified-flow velocity.

    t = t(s) (clamped), z = (a_t + b_t) y, F = model_fn(c_in z, c_noise), (x0-hat, eps-hat) from (z, F).
    """
    def velocity_fn(y, s):
        t = rf_to_formulation_time(formulation, s, t_min, t_max)
        a, b = formulation.alpha_sigma(t)
        x0, eps = denoise(formulation, model_fn, (a + b) * y, t, x0_clip)
        return eps - x0

    return velocity_fn


def native_velocity(formulation: Formulation, model_fn, t_min=SAMPLE_T_MIN, t_max=SAMPLE_T_MAX, x0_clip=None):
    """velocity_fn(z, t) = a'_t x0-hat + b'_t eps-hat, the formulation's own probability-flow ODE
    (t clamped to [t_min, t_max])."""
    def velocity_fn(z, t):
        t = jnp.clip(t, t_min, t_max)
        da, db = formulation.path_derivatives(t)
        x0, eps = denoise(formulation, model_fn, z, t, x0_clip)
        return da * x0 + db * eps

    return velocity_fn


# ---- guidance -------------------------------------------------------------------------------------
def is_unguided(guidance) -> bool:
    """True when guidance is None or a Python/numpy number equal to 1 (a traced value never is)."""
    return guidance is None or (isinstance(guidance, numbers.Real) and float(guidance) == 1.0)


def guided_model(network, tokens, pooled, guidance=1.0):
    """(model_fn, copies): model_fn(z_in, c_noise) -> F for ``network(z_in, c_noise, tokens, pooled)``.

    Unguided (see :func:`is_unguided`): one call on the conditional batch (copies = 1). Otherwise one
    call on [cond; uncond] (2B examples, unconditional = zero tokens/pooled, copies = 2), then
    F = F_u + g (F_c - F_u). c_noise is broadcast to one value per example.
    """
    batch = tokens.shape[0]
    if is_unguided(guidance):
        def model_fn(z_in, c_noise):
            return network(z_in, jnp.broadcast_to(c_noise, (z_in.shape[0],)), tokens, pooled)

        return model_fn, 1

    both_tokens = jnp.concatenate([tokens, jnp.zeros_like(tokens)])
    both_pooled = jnp.concatenate([pooled, jnp.zeros_like(pooled)])
    g = jnp.asarray(guidance, jnp.float32)

    def model_fn(z_in, c_noise):
        c = jnp.broadcast_to(c_noise, (batch,))
        out = network(jnp.concatenate([z_in, z_in]), jnp.concatenate([c, c]), both_tokens, both_pooled)
        cond, uncond = out[:batch], out[batch:]
        return uncond + g.astype(out.dtype) * (cond - uncond)

    return model_fn, 2


# ---- sampling ---------------------------------------------------------------------------------------
def sample(
    formulation: Formulation,
    model_fn,
    noise,
    grid,
    *,
    solver="euler",
    coordinates: str = "rf",
    t_min=SAMPLE_T_MIN,
    t_max=SAMPLE_T_MAX,
    x0_clip=None,
    sigma_max=SIGMA_MAX,
):
    """Integrate the probability-flow ODE from noise to data; returns (x0-hat, nfe).

    noise: eps [B, ...]; grid: the shared rf-time grid (descending, from :func:`time_grid`);
    model_fn(z_in, c_noise) -> F (guidance already folded in, see :func:`guided_model`).
    rf: start y = s_hi eps on the grid clipped to [0, s_hi]; result y_end / (1 - s_end) (= y_end for
    s_end = 0). native: start z = b(t_start) eps (t_start = :func:`native_start`, where b / a reaches
    ``sigma_max``) on t = t_min + (t_start - t_min) grid; result z_end / a(t_end). ``solver="ddim"``
    (:func:`~trajbench.samplers.solvers.ddim`) only in native coordinates. See the module docstring.
    """
    ode = _ode(formulation, model_fn, noise, grid, solver=solver, coordinates=coordinates, t_min=t_min, t_max=t_max,
               x0_clip=x0_clip, sigma_max=sigma_max)
    state, nfe = ode.solve(ode.start, ode.times)
    return ode.finish(state), nfe


def sample_path(formulation: Formulation, model_fn, noise, grid, **options):
    """:func:`sample` step by step, keeping the path: returns (x0-hat, ys [N + 1, B, ...], s [N + 1]), the states
    in rectified-flow coordinates y = z / (a_t + b_t) at the rf times s = b_t / (a_t + b_t) of the grid points,
    whatever the coordinates the ODE is solved in (so paths of every formulation compare). Only for one-step
    methods (euler, heun, ddim): each grid interval is one solver call. ``options``: those of :func:`sample`."""
    ode = _ode(formulation, model_fn, noise, grid, **options)

    def step(state, pair):
        state, _ = ode.solve(state, pair)
        return state, ode.to_rf(state, pair[1])

    pairs = jnp.stack([ode.times[:-1], ode.times[1:]], axis=1)
    state, ys = jax.lax.scan(step, ode.start, pairs)
    ys = jnp.concatenate([ode.to_rf(ode.start, ode.times[0])[None], ys])
    return ode.finish(state), ys, ode.rf_times


@dataclasses.dataclass(frozen=True)
class _ODE:
    start: jax.Array  # the state at times[0]
    times: jax.Array  # the grid in the ODE's own time
    solve: object  # (state, times) -> (state, nfe)
    finish: object  # state at times[-1] -> x0-hat
    to_rf: object  # (state, time) -> y, the state in rf coordinates
    rf_times: jax.Array  # the grid in rf time s


def _ode(formulation, model_fn, noise, grid, *, solver="euler", coordinates="rf", t_min=SAMPLE_T_MIN,
         t_max=SAMPLE_T_MAX, x0_clip=None, sigma_max=SIGMA_MAX) -> _ODE:
    """The probability-flow ODE of ``sample`` in the chosen coordinates: start, grid, stepping and read-out."""
    solve = get_solver(solver)
    if solve is ddim and coordinates != "native":
        raise ValueError(f"solver 'ddim' steps along a formulation's own path: use it with coordinates='native', "
                         f"not {coordinates!r} (in rf coordinates it would be Euler: use solver='euler')")
    grid = jnp.asarray(grid, jnp.float32)
    if coordinates == "rf":
        _, s_hi = reachable_rf_range(formulation, t_min, t_max)
        s_grid = jnp.minimum(grid, s_hi)
        velocity = rf_velocity(formulation, model_fn, t_min, t_max, x0_clip)
        return _ODE(s_hi * noise, s_grid, lambda y, times: solve(velocity, y, times),
                    lambda y: y / (1.0 - s_grid[-1]), lambda y, s: y, s_grid)
    if coordinates == "native":
        t_grid = t_min + (native_start(formulation, t_min, t_max, sigma_max) - t_min) * grid
        _, b_start = formulation.alpha_sigma(t_grid[0])
        if solve is ddim:
            denoise_fn = functools.partial(denoise, formulation, model_fn, x0_clip=x0_clip)
            stepper = lambda z, times: ddim(denoise_fn, z, times, formulation.alpha_sigma)  # noqa: E731
        else:
            velocity = native_velocity(formulation, model_fn, t_min, t_max, x0_clip)
            stepper = lambda z, times: solve(velocity, z, times)  # noqa: E731

        def to_rf(z, t):
            a, b = formulation.alpha_sigma(t)
            return z / (a + b)

        a_end, _ = formulation.alpha_sigma(t_grid[-1])
        return _ODE(b_start * noise, t_grid, stepper, lambda z: z / a_end, to_rf, rf_time(formulation, t_grid))
    raise ValueError(f"unknown coordinates {coordinates!r}; choose one of {COORDINATES}")


def generate(
    formulation: Formulation,
    network,
    cond_tokens,
    cond_pooled,
    key,
    *,
    steps: int,
    guidance=1.0,
    solver="euler",
    coordinates: str = "rf",
    grid: str = "uniform",
    shift: float = 3.0,
    image_shape: tuple,
    clip: bool = True,
    x0_clip=None,
    t_min=SAMPLE_T_MIN,
    t_max=SAMPLE_T_MAX,
    sigma_max=SIGMA_MAX,
):
    """Sample images for a batch of conditions: returns (images [B, H, W, C], info).

    eps ~ N(0, I) from ``key`` with shape [B, *image_shape]; grid = ``time_grid(steps, grid, shift)``;
    the ODE as described in :mod:`trajbench.samplers.sampling`. The images are x0-hat, clipped to the
    data range [-1, 1] when ``clip`` (default; pass clip=False for the raw ODE endpoint).

    info: ``nfe`` (velocity evaluations; traced for dopri5), ``network_passes`` (network calls = nfe),
    ``network_batch`` (examples per call: 2B with guidance, B without) and ``evals_per_sample``
    (nfe x 2 with guidance, nfe without).

    Jit: ``steps, solver, coordinates, grid, image_shape, clip`` must be static, and ``guidance`` too if
    g = 1 should skip the unconditional half; the formulation (and a ``jax.tree_util.Partial`` network)
    are ordinary pytree arguments -- see :data:`jit_generate`.
    """
    batch = cond_tokens.shape[0]
    noise = jax.random.normal(key, (batch, *image_shape), jnp.float32)
    model_fn, copies = guided_model(network, cond_tokens, cond_pooled, guidance)
    x0, nfe = sample(
        formulation,
        model_fn,
        noise,
        time_grid(steps, grid, shift),
        solver=solver,
        coordinates=coordinates,
        t_min=t_min,
        t_max=t_max,
        x0_clip=x0_clip,
        sigma_max=sigma_max,
    )
    if clip:
        x0 = jnp.clip(x0, -1.0, 1.0)
    info = dict(nfe=nfe, network_passes=nfe, network_batch=copies * batch, evals_per_sample=copies * nfe)
    return x0, info


jit_generate = jax.jit(
    generate,
    static_argnames=("steps", "guidance", "solver", "coordinates", "grid", "image_shape", "clip", "x0_clip"),
    compiler_options=xla.FORWARD_COMPILER_OPTIONS,
)
"""``generate`` under ``jax.jit``. The formulation is a traced pytree (one compile per formulation
structure); ``network`` must be a pytree callable, e.g. ``jax.tree_util.Partial(model.apply, params)``;
``guidance`` must be a hashable Python number (static, so g = 1 skips the unconditional half)."""
