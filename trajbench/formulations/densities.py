"""Training-time densities pi(t) on [0, 1]: ``sample(key, shape)``, ``pdf(t)`` and ``cdf(t)``.

Drawing t from pi instead of U(0, 1) multiplies the effective loss weight w_t by pi(t).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import ndtr

from trajbench.formulations.paths import HALF_PI, pytree_dataclass, static

MODE_SCALE_MIN = -1.0
MODE_SCALE_MAX = 2.0 / (jnp.pi - 2.0)  # ~1.7519: f_mode stays monotone for s in [MODE_SCALE_MIN, this]


def shift_time(t, shift):
    """SD3's resolution-dependent timestep shift: t' = shift t / (1 + (shift - 1) t).

    With shift = sqrt(m / n) it maps a schedule tuned for n pixels to one for m pixels.
    """
    return shift * t / (1.0 + (shift - 1.0) * t)


def unshift_time(t_shifted, shift):
    """Inverse of :func:`shift_time`: t = t' / (shift - (shift - 1) t')."""
    return t_shifted / (shift - (shift - 1.0) * t_shifted)


class Density:
    def sample(self, key, shape):
        raise NotImplementedError

    def pdf(self, t):
        raise NotImplementedError

    def cdf(self, t):
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


@pytree_dataclass
class Uniform(Density):
    """pi(t) = 1 on [0, 1]."""

    def sample(self, key, shape):
        return jax.random.uniform(key, shape)

    def pdf(self, t):
        return jnp.ones_like(jnp.asarray(t, jnp.float32))

    def cdf(self, t):
        return jnp.clip(jnp.asarray(t, jnp.float32), 0.0, 1.0)

    def describe(self):
        return "uniform"


@pytree_dataclass
class DiscreteUniform(Density):
    """Uniform over T discrete steps t = (i + 1) / T, i = 0..T-1 (LDM's training-time sampling).

    ``pdf`` is the piecewise-constant density of the cells ((i) / T, (i + 1) / T] that each hold
    mass 1 / T, which is 1 on (0, 1]; ``cdf`` is the exact step function floor(t T) / T.
    """

    num_steps: int = static(1000)

    def sample(self, key, shape):
        step = jax.random.randint(key, shape, 0, self.num_steps)
        return (step + 1).astype(jnp.float32) / self.num_steps

    def pdf(self, t):
        return jnp.ones_like(jnp.asarray(t, jnp.float32))

    def cdf(self, t):
        t = jnp.asarray(t, jnp.float32)
        return jnp.clip(jnp.floor(t * self.num_steps + 1e-4) / self.num_steps, 0.0, 1.0)

    def describe(self):
        return f"discrete uniform over {self.num_steps} steps"


@pytree_dataclass
class LogitNormal(Density):
    """t = sigmoid(u), u ~ N(m, s^2);  pi(t) = exp(-(logit t - m)^2 / (2 s^2)) / (s sqrt(2 pi) t (1 - t))."""

    m: float = 0.0
    s: float = 1.0

    def sample(self, key, shape):
        return jax.nn.sigmoid(self.m + self.s * jax.random.normal(key, shape))

    def pdf(self, t):
        t = jnp.asarray(t, jnp.float32)
        z = (jnp.log(t) - jnp.log1p(-t) - self.m) / self.s
        return jnp.exp(-0.5 * z**2) / (self.s * jnp.sqrt(2 * jnp.pi) * t * (1.0 - t))

    def cdf(self, t):
        t = jnp.asarray(t, jnp.float32)
        return ndtr((jnp.log(t) - jnp.log1p(-t) - self.m) / self.s)

    def describe(self):
        return f"logit-normal(m={self.m:g}, s={self.s:g})"


@pytree_dataclass
class ModeSampling(Density):
    """Mode sampling with heavy tails: t = f(u) = 1 - u - s (cos^2(pi u / 2) - 1 + u), u ~ U(0, 1).

    f decreases from f(0) = 1 to f(1) = 0 when -1 <= s <= 2 / (pi - 2), so
    cdf(t) = 1 - f^{-1}(t) and pi(t) = 1 / |f'(f^{-1}(t))| with f'(u) = -1 + s ((pi / 2) sin(pi u) - 1).
    f^{-1} is found by bisection (float32-exact after 32 halvings). s = 0 is the uniform density.
    """

    s: float = 0.0

    def _f(self, u):
        return 1.0 - u - self.s * (jnp.cos(HALF_PI * u) ** 2 - 1.0 + u)

    def _df(self, u):
        return -1.0 + self.s * (HALF_PI * jnp.sin(jnp.pi * u) - 1.0)

    def _f_inverse(self, t):
        t = jnp.asarray(t, jnp.float32)

        def halve(_, bounds):
            lo, hi = bounds
            mid = 0.5 * (lo + hi)
            above = self._f(mid) > t  # f decreasing: the root lies right of mid
            return jnp.where(above, mid, lo), jnp.where(above, hi, mid)

        lo, hi = jax.lax.fori_loop(0, 32, halve, (jnp.zeros_like(t), jnp.ones_like(t)))
        return 0.5 * (lo + hi)

    def sample(self, key, shape):
        return jnp.clip(self._f(jax.random.uniform(key, shape)), 0.0, 1.0)

    def pdf(self, t):
        return 1.0 / jnp.abs(self._df(self._f_inverse(t)))

    def cdf(self, t):
        return 1.0 - self._f_inverse(jnp.clip(t, 0.0, 1.0))

    def describe(self):
        return f"mode(s={self.s:g})"


@pytree_dataclass
class CosMap(Density):
    """t = 1 - 1 / (tan(pi u / 2) + 1), u ~ U(0, 1);  pi(t) = 2 / (pi - 2 pi t + 2 pi t^2),
    cdf(t) = (2 / pi) arctan(t / (1 - t))."""

    def sample(self, key, shape):
        u = jax.random.uniform(key, shape)
        return 1.0 - 1.0 / (jnp.tan(HALF_PI * u) + 1.0)

    def pdf(self, t):
        t = jnp.asarray(t, jnp.float32)
        return 2.0 / (jnp.pi - 2.0 * jnp.pi * t + 2.0 * jnp.pi * t**2)

    def cdf(self, t):
        t = jnp.asarray(t, jnp.float32)
        return jnp.arctan2(t, 1.0 - t) / HALF_PI

    def describe(self):
        return "cosmap"


@pytree_dataclass
class UniformMixture(Density):
    """pi(t) = (1 - f) pi_base(t) + f: a fraction f of training times drawn uniformly, so no t is starved."""

    base: Density
    fraction: float = 0.1

    def sample(self, key, shape):
        key_pick, key_base, key_unif = jax.random.split(key, 3)
        use_uniform = jax.random.uniform(key_pick, shape) < self.fraction
        return jnp.where(use_uniform, jax.random.uniform(key_unif, shape), self.base.sample(key_base, shape))

    def pdf(self, t):
        return (1.0 - self.fraction) * self.base.pdf(t) + self.fraction

    def cdf(self, t):
        return (1.0 - self.fraction) * self.base.cdf(t) + self.fraction * jnp.clip(t, 0.0, 1.0)

    def describe(self):
        return f"{self.base.describe()} + {self.fraction:g} uniform"


@pytree_dataclass
class Shifted(Density):
    """Density of t' = shift_time(t, shift) for t ~ base: pi'(t') = pi(t) shift / (shift - (shift - 1) t')^2."""

    base: Density
    shift: float = 3.0

    def sample(self, key, shape):
        return shift_time(self.base.sample(key, shape), self.shift)

    def pdf(self, t):
        t = jnp.asarray(t, jnp.float32)
        jacobian = self.shift / (self.shift - (self.shift - 1.0) * t) ** 2
        return self.base.pdf(unshift_time(t, self.shift)) * jacobian

    def cdf(self, t):
        return self.base.cdf(unshift_time(jnp.asarray(t, jnp.float32), self.shift))

    def describe(self):
        return f"{self.base.describe()} shifted by {self.shift:g}"

