"""What the network predicts, and how its loss is weighted.

Every prediction target is linear in (x0, eps):  F = p_t x0 + q_t eps.  Together with
z_t = a_t x0 + b_t eps this is a 2x2 system, so converting any network output to x0-hat and eps-hat
is written once (in ``Formulation.to_x0_eps``), and so is the eps-MSE factor of its loss:
||F_theta - F||^2 = (det_t / a_t)^2 ||eps_theta - eps||^2 at fixed z_t, with det_t = a_t q_t - b_t p_t.
"""

from __future__ import annotations

import jax.numpy as jnp

from trajbench.formulations.paths import pytree_dataclass


class Target:
    kind: str = ""

    def coefficients(self, a, b, da, db):
        """(p_t, q_t) such that the regression target is F = p_t x0 + q_t eps."""
        raise NotImplementedError

    def network_inputs(self, t, a, b):
        """(c_in, c_noise): the network sees c_in z_t and is conditioned on c_noise."""
        return jnp.ones_like(t), t


@pytree_dataclass
class Velocity(Target):
    """The ODE velocity u = dz/dt = a'_t x0 + b'_t eps (for rectified flow u = eps - x0)."""

    kind = "velocity"

    def coefficients(self, a, b, da, db):
        return da, db


@pytree_dataclass
class Epsilon(Target):
    """The noise: F = eps."""

    kind = "eps"

    def coefficients(self, a, b, da, db):
        return jnp.zeros_like(a), jnp.ones_like(a)


@pytree_dataclass
class VPrediction(Target):
    """Salimans & Ho's v-prediction: F = a_t eps - b_t x0."""

    kind = "v"

    def coefficients(self, a, b, da, db):
        return -b, a


@pytree_dataclass
class EDMPreconditioning(Target):
    """Karras et al. (2022) preconditioning on a variance-exploding path (a_t = 1, b_t = sigma):

    D = c_skip z + c_out F_theta(c_in z; c_noise),  c_skip = sd^2 / (sigma^2 + sd^2),
    c_out = sigma sd / sqrt(sigma^2 + sd^2),  c_in = 1 / sqrt(sigma^2 + sd^2),  c_noise = log(sigma) / 4.
    The EDM loss  lambda(sigma) ||D - x0||^2  with lambda = 1 / c_out^2 equals ||F_theta - F||^2 with
    F = (x0 - c_skip z) / c_out, i.e. p = sigma / (sd sqrt(sigma^2 + sd^2)), q = -sd / sqrt(sigma^2 + sd^2).
    """

    kind = "edm"
    sigma_data: float = 0.5

    def coefficients(self, a, b, da, db):
        root = jnp.sqrt(b**2 + self.sigma_data**2)
        return b / (self.sigma_data * root), -self.sigma_data / root

    def network_inputs(self, t, a, b):
        return 1.0 / jnp.sqrt(b**2 + self.sigma_data**2), jnp.log(b) / 4.0


class Weighting:
    def omega(self, snr, eps_factor):
        """Per-example loss weight, given SNR_t and the unweighted eps-MSE factor (det_t / a_t)^2."""
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


@pytree_dataclass
class Unweighted(Weighting):
    """Plain MSE on the prediction target."""

    def omega(self, snr, eps_factor):
        return jnp.ones_like(snr)

    def describe(self):
        return "mse"


@pytree_dataclass
class MinSNR(Weighting):
    """Min-SNR-gamma (Hang et al., 2023): the x0-MSE is weighted by min(SNR_t, gamma).

    Since ||x0_err||^2 = ||eps_err||^2 / SNR_t, that is an eps-MSE factor of min(SNR, gamma) / SNR,
    so omega = min(SNR, gamma) / SNR / (det / a)^2: min(SNR, gamma) / SNR for eps-prediction and
    min(SNR, gamma) / (SNR + 1) for v-prediction on a variance-preserving path.
    """

    gamma: float = 5.0

    def omega(self, snr, eps_factor):
        return jnp.minimum(snr, self.gamma) / snr / eps_factor

    def describe(self):
        return f"min-snr(gamma={self.gamma:g})"
