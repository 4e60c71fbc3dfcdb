"""A formulation = path (a_t, b_t) + training density pi(t) + prediction target + loss weighting.

All formulas that combine the parts live here, once:

* x0-hat / eps-hat from a network output F = p x0 + q eps:  solve [[a, b], [p, q]] [x0, eps] = [z, F];
* the probability-flow ODE velocity  dz/dt = a'_t x0-hat + b'_t eps-hat;
* the training loss  E_{t ~ pi, eps} [ omega_t || F_theta(c_in z_t; c_noise) - F ||^2 ];
* the effective weight in the paper's unified form  L = -1/2 E_{t ~ U} [ w_t lambda'_t ||eps_theta - eps||^2 ]:
  w_t = pi(t) omega_t (det_t / a_t)^2 (-2 / lambda'_t).

A formulation is a pytree: formulations of the same structure (e.g. all ``rf/lognorm``) can be
stacked with ``jax.tree.map(jnp.stack, ...)`` and ``vmap``-ed.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp

from trajbench.formulations.densities import Density
from trajbench.formulations.paths import Path
from trajbench.formulations.targets import Target, Unweighted, Weighting

# Training times are clipped to [T_MARGIN, 1 - T_MARGIN]; some paths are singular at the ends
# (EDM: sigma = 0 at t = 0, sigma = inf at t = 1).
T_MARGIN = 1e-6

ModelFn = Callable[[jax.Array, jax.Array], jax.Array]
"""model_fn(c_in * z_t, c_noise) -> network output F_theta, same shape as z_t."""


def _per_example(coefficient, x):
    """Reshape a per-example coefficient [B] to broadcast against x [B, ...]."""
    coefficient = jnp.asarray(coefficient)
    return coefficient.reshape(coefficient.shape + (1,) * (x.ndim - coefficient.ndim))


@functools.partial(
    jax.tree_util.register_dataclass, data_fields=["path", "density", "target", "weighting"], meta_fields=[]
)
@dataclasses.dataclass(frozen=True)
class Formulation:
    path: Path
    density: Density
    target: Target
    weighting: Weighting = dataclasses.field(default_factory=Unweighted)
    # The canonical name is kept out of the pytree (init=False), so variants of one family share a
    # tree structure: they stack, vmap, and reuse one compiled program.
    name: str = dataclasses.field(default="", init=False, compare=False)

    def with_name(self, name: str) -> "Formulation":
        named = dataclasses.replace(self)
        object.__setattr__(named, "name", name)
        return named

    # ---- path -----------------------------------------------------------------------------------
    def alpha_sigma(self, t):
        """(a_t, b_t)."""
        return self.path.alpha_sigma(t)

    def path_derivatives(self, t):
        """(da_t/dt, db_t/dt)."""
        return self.path.derivatives(t)

    def logsnr(self, t):
        """lambda_t = log(a_t^2 / b_t^2)."""
        return self.path.logsnr(t)

    def noisy(self, x0, eps, t):
        """z_t = a_t x0 + b_t eps."""
        a, b = self.alpha_sigma(t)
        return _per_example(a, x0) * x0 + _per_example(b, eps) * eps

    # ---- training-time density ------------------------------------------------------------------
    def sample_t(self, key, shape):
        """Training times t ~ pi, clipped to [T_MARGIN, 1 - T_MARGIN]."""
        return jnp.clip(self.density.sample(key, shape), T_MARGIN, 1.0 - T_MARGIN)

    def t_pdf(self, t):
        return self.density.pdf(t)

    def t_cdf(self, t):
        return self.density.cdf(t)

    # ---- prediction target and conversions ------------------------------------------------------
    @property
    def prediction(self) -> str:
        return self.target.kind

    def _coefficients(self, t):
        a, b = self.alpha_sigma(t)
        da, db = self.path_derivatives(t)
        p, q = self.target.coefficients(a, b, da, db)
        return a, b, da, db, p, q

    def target_value(self, x0, eps, t):
        """The regression target F = p_t x0 + q_t eps."""
        _, _, _, _, p, q = self._coefficients(t)
        return _per_example(p, x0) * x0 + _per_example(q, eps) * eps

    def network_inputs(self, z, t):
        """(c_in z_t, c_noise): what the network is fed."""
        a, b = self.alpha_sigma(t)
        c_in, c_noise = self.target.network_inputs(jnp.asarray(t, jnp.float32), a, b)
        return _per_example(c_in, z) * z, c_noise

    def predict(self, model_fn: ModelFn, z, t):
        """Network output F_theta for z_t at time t."""
        return model_fn(*self.network_inputs(z, t))

    def to_x0_eps(self, z, output, t):
        """(x0-hat, eps-hat) from z_t and a network output: x0 = (q z - b F) / det, eps = (a F - p z) / det."""
        a, b, _, _, p, q = self._coefficients(t)
        det = a * q - b * p
        x0 = (_per_example(q / det, z) * z) - _per_example(b / det, output) * output
        eps = (_per_example(a / det, output) * output) - _per_example(p / det, z) * z
        return x0, eps

    def velocity(self, z, output, t):
        """Probability-flow ODE velocity dz/dt = a'_t x0-hat + b'_t eps-hat (integrate from t = 1 to 0)."""
        da, db = self.path_derivatives(t)
        x0, eps = self.to_x0_eps(z, output, t)
        return _per_example(da, x0) * x0 + _per_example(db, eps) * eps

    # ---- loss and weights -----------------------------------------------------------------------
    def eps_factor(self, t):
        """(det_t / a_t)^2: ||F_theta - F||^2 = eps_factor ||eps_theta - eps||^2 at fixed z_t."""
        a, b, _, _, p, q = self._coefficients(t)
        return ((a * q - b * p) / a) ** 2

    def loss_weight(self, t):
        """omega_t, the per-example weight on ||F_theta - F||^2."""
        a, b = self.alpha_sigma(t)
        snr = (a / b) ** 2
        return self.weighting.omega(snr, self.eps_factor(t))

    def effective_weight(self, t):
        """w_t = pi(t) omega_t (det_t / a_t)^2 (-2 / lambda'_t), the paper's unified eps-loss weight."""
        return self.t_pdf(t) * self.loss_weight(t) * self.eps_factor(t) * (-2.0 / self.path.dlogsnr(t))

    def loss_at(self, model_fn: ModelFn, x0, eps, t):
        """Per-example loss omega_t mean_pixels (F_theta - F)^2 at given noise and times [B]."""
        z = self.noisy(x0, eps, t)
        error = self.predict(model_fn, z, t) - self.target_value(x0, eps, t)
        per_example = jnp.mean(jnp.square(error).reshape(error.shape[0], -1), axis=1)
        return self.loss_weight(t) * per_example

    def loss(self, model_fn: ModelFn, x0, key):
        """Training loss for a batch x0 [B, ...]: t ~ pi, eps ~ N(0, I); mean over the batch."""
        key_t, key_eps = jax.random.split(key)
        t = self.sample_t(key_t, (x0.shape[0],))
        eps = jax.random.normal(key_eps, x0.shape, x0.dtype)
        return jnp.mean(self.loss_at(model_fn, x0, eps, t))
