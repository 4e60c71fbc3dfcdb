"""Time grids and ODE solvers with one calling convention (k-diffusion style).

Every solver is ``solver(velocity_fn, z_start, grid) -> (z_end, nfe)``:

* ``velocity_fn(z, t) -> dz/dt`` with z batched ([B, H, W, C]) and t a scalar;
* the ODE is integrated from ``grid[0]`` to ``grid[-1]`` (descending here: noise -> data);
* ``nfe`` is the exact number of calls of ``velocity_fn`` (a Python int for the fixed-step
  solvers, a traced int32 scalar for the adaptive one).

All solvers are jit-compatible (``lax.scan`` / diffrax's ``while_loop``) and vmap-able.

The exception is :func:`ddim`, which steps along a path rather than along a velocity:
``ddim(denoise_fn, z_start, grid, alpha_sigma) -> (z_end, nfe)``; it is in ``SOLVERS`` so that
``solver="ddim"`` can be named, and :func:`trajbench.samplers.sample` calls it (native coordinates only).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from trajbench.formulations import shift_time

VelocityFn = Callable[[jax.Array, jax.Array], jax.Array]

GRIDS = ("uniform", "shifted")


def time_grid(steps: int, kind: str = "uniform", shift: float = 3.0) -> jax.Array:
    """[steps + 1] times descending from 1 (noise) to 0 (data) in the shared rectified-flow time.

    ``uniform``: u_k = 1 - k / steps.  ``shifted``: SD3's timestep shift applied to the uniform grid,
    s_k = shift u_k / (1 + (shift - 1) u_k) (endpoints stay exactly 1 and 0; shift > 1 spends more
    steps at high noise).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    u = jnp.linspace(1.0, 0.0, steps + 1, dtype=jnp.float32)
    if kind == "uniform":
        return u
    if kind == "shifted":
        return shift_time(u, jnp.asarray(shift, jnp.float32))
    raise ValueError(f"unknown grid kind {kind!r}; choose one of {GRIDS}")


def _pairs(grid):
    grid = jnp.asarray(grid, jnp.float32)
    return grid[:-1], grid[1:]


def euler(velocity_fn: VelocityFn, z, grid):
    """Explicit Euler (the paper's sampler): z_{k+1} = z_k + (t_{k+1} - t_k) v(z_k, t_k).

    N = len(grid) - 1 steps, nfe = N; the velocity is never evaluated at grid[-1].
    """
    def step(z, ts):
        t0, t1 = ts
        return z + (t1 - t0) * velocity_fn(z, t0), None

    z, _ = jax.lax.scan(step, z, _pairs(grid))
    return z, len(grid) - 1


def heun(velocity_fn: VelocityFn, z, grid, last_step_euler: bool = True):
    """Heun's 2nd-order method (explicit trapezoid, EDM Algorithm 1):

    d0 = v(z_k, t_k),  z' = z_k + h d0,  d1 = v(z', t_{k+1}),  z_{k+1} = z_k + h (d0 + d1) / 2.

    With ``last_step_euler`` (default, as in EDM) the final step is a plain Euler step, so the
    velocity is never evaluated at grid[-1] (the data end, where EDM-type networks are singular):
    nfe = 2N - 1.  Without it every step is a Heun step: nfe = 2N.  The last Euler step has local
    error O(h^2), so the method stays globally 2nd order.
    """
    t_from, t_to = _pairs(grid)
    n = t_from.shape[0]

    def step(z, ts):
        t0, t1 = ts
        h = t1 - t0
        d0 = velocity_fn(z, t0)
        d1 = velocity_fn(z + h * d0, t1)
        return z + (0.5 * h) * (d0 + d1), None

    if not last_step_euler:
        z, _ = jax.lax.scan(step, z, (t_from, t_to))
        return z, 2 * n
    z, _ = jax.lax.scan(step, z, (t_from[:-1], t_to[:-1]))
    z = z + (t_to[-1] - t_from[-1]) * velocity_fn(z, t_from[-1])
    return z, 2 * n - 1


def dopri5(velocity_fn: VelocityFn, z, grid, *, rtol: float = 1e-5, atol: float = 1e-5, max_steps: int = 16384):
    """Adaptive Dormand-Prince 5(4) (diffrax ``Dopri5`` + ``PIDController(rtol, atol)``).

    Only the grid's endpoints are used (t0 = grid[0], t1 = grid[-1]); the initial step is the grid's
    mean spacing (grid[-1] - grid[0]) / (len(grid) - 1), so diffrax's initial-step search (2 extra
    evaluations) is not run.  The error norm is the RMS over the whole batch, so all samples share
    one step-size sequence.

    nfe is the TRUE number of velocity evaluations: Dopri5 is first-same-as-last, so diffrax
    evaluates the first stage once on the first step and 6 new stages on every attempted step
    (accepted or rejected): nfe = 1 + 6 * stats["num_steps"] (checked against a call counter in
    tests/test_samplers.py).
    """
    import diffrax  # imported lazily: only this solver needs it

    grid = jnp.asarray(grid, jnp.float32)
    t0, t1 = grid[0], grid[-1]
    term = diffrax.ODETerm(lambda t, y, args: velocity_fn(y, t))
    solution = diffrax.diffeqsolve(
        term,
        diffrax.Dopri5(),
        t0=t0,
        t1=t1,
        dt0=(t1 - t0) / (grid.shape[0] - 1),
        y0=z,
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        saveat=diffrax.SaveAt(t1=True),
        max_steps=max_steps,
    )
    nfe = 1 + 6 * jnp.asarray(solution.stats["num_steps"], jnp.int32)
    return solution.ys[0], nfe


def ddim(denoise_fn, z, grid, alpha_sigma):
    """Deterministic DDIM (eta = 0) on a path z_t = a_t x0 + b_t eps, in the path's own time t:

        z_{k+1} = a(t_{k+1}) x0-hat + b(t_{k+1}) eps-hat,   (x0-hat, eps-hat) = denoise_fn(z_k, t_k).

    ``alpha_sigma(t) -> (a_t, b_t)``. Since z_k = a_k x0-hat + b_k eps-hat, this is Euler on y = z / a
    in sigma = b / a, y_{k+1} = y_k + (sigma_{k+1} - sigma_k) eps-hat: EDM's Euler sampler for a = 1,
    b = sigma, and plain Euler dz = (eps-hat - x0-hat) dt for the linear path a = 1 - t, b = t.
    N = len(grid) - 1 steps, nfe = N; the network is never evaluated at grid[-1].
    """
    def step(z, ts):
        t0, t1 = ts
        x0, eps = denoise_fn(z, t0)
        a, b = alpha_sigma(t1)
        return a * x0 + b * eps, None

    z, _ = jax.lax.scan(step, z, _pairs(grid))
    return z, len(grid) - 1


SOLVERS: dict[str, Callable] = {"euler": euler, "heun": heun, "dopri5": dopri5, "ddim": ddim}


def get_solver(solver) -> Callable:
    """A solver by name (``SOLVERS``) or any callable with the solver signature (e.g. a
    ``functools.partial(dopri5, rtol=1e-7, atol=1e-7)``). ``"ddim"`` gives :func:`ddim`, which has its own."""
    if callable(solver):
        return solver
    try:
        return SOLVERS[solver]
    except KeyError:
        raise ValueError(f"unknown solver {solver!r}; choose one of {tuple(SOLVERS)} or pass a callable") from None
