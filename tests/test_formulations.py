"""Formulation numerics against closed forms re-derived here (numpy / scipy, float64)."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from trajbench import formulations as F

ALL = F.names()
PAPER = F.sd3_variants()
INTERIOR = np.linspace(0.02, 0.98, 49).astype(np.float32)


def as_np(x):
    return np.asarray(x, dtype=np.float64)


@functools.partial(jax.jit, static_argnums=0)
def call(method, formulation, *args):
    """formulation.<method>(*args), compiled once per family structure (parameters are traced leaves)."""
    return getattr(formulation, method)(*args)


@functools.partial(jax.jit, static_argnums=2)
def sample_t(formulation, key, n):
    return formulation.sample_t(key, (n,))


# ---- the registry ---------------------------------------------------------------------------------


def test_paper_has_61_unique_variants_with_paper_spelling():
    assert len(PAPER) == 61 and len(set(PAPER)) == 61
    counts = {}
    for name in PAPER:
        counts[F.family_of(name)] = counts.get(F.family_of(name), 0) + 1
    assert counts == {"rf": 1, "rf/mode": 8, "rf/lognorm": 30, "rf/cosmap": 1, "eps/linear": 1, "v/linear": 1,
                      "eps/cos": 1, "v/cos": 1, "edm": 15, "edm/rf": 1, "edm/cos": 1}
    import csv
    from importlib.resources import files

    with (files("trajbench") / "reference" / "sd3_table1.csv").open() as fh:
        table1 = [row["variant"] for row in csv.DictReader(fh)]
    assert set(table1) <= set(PAPER)  # every name the paper prints is spelled exactly as we do
    assert "rf/mode(-0.54)" in PAPER and "rf/mode(0.38)" in PAPER and "rf/mode(1.00)" in PAPER


def test_extras_are_not_paper_variants_and_names_round_trip():
    assert len(ALL) >= 63 and set(PAPER) < set(ALL)
    for name in ALL:
        assert F.get(name).name == name
        assert F.parse(name).is_paper_variant == (name in PAPER)


@pytest.mark.parametrize(
    "given, canonical",
    [("rf/lognorm(0.3, 0.8)", "rf/lognorm(0.30, 0.80)"), ("edm(-0.4,1)", "edm(-0.40, 1.00)"),
     (" rf/mode(1.29) ", "rf/mode(1.29)"), ("rf/lognorm(0, 1) + shift(3)", "rf/lognorm(0.00, 1.00)+shift(3.00)"),
     ("rf/lognorm(0.125, 1.0)", "rf/lognorm(0.125, 1.00)")],
)
def test_names_outside_the_paper_parse_to_canonical_spelling(given, canonical):
    assert F.get(given).name == canonical


@pytest.mark.parametrize(
    "bad, mentions",
    [("rf/lognrm(0.00, 1.00)", "rf/lognorm(0.00, 1.00)"), ("rf/mode(1.80)", "monotone"),
     ("rf/mode(-1.01)", "monotone"), ("rf/lognorm(0.0)", "rf/lognorm takes 2"), ("rf/lognorm(0, -1)", "s must be > 0"),
     ("edm(a, b)", "malformed"), ("eps/cos+shift(3)", "applies only to rf"), ("v/cos+wat(1)", "unknown modifier"),
     ("edmm(-1.20, 1.20)", "edm(-1.20, 1.20)"), ("", "unknown formulation")],
)
def test_bad_names_raise_one_line_errors_naming_the_fix(bad, mentions):
    with pytest.raises(F.FormulationError) as info:
        F.get(bad)
    assert mentions in str(info.value) and "\n" not in str(info.value)


def test_family_patterns():
    assert F.matches_family("rf/lognorm(0.00, 1.00)", "rf") and F.matches_family("rf/lognorm(0.00, 1.00)", "rf/lognorm")
    assert not F.matches_family("edm/rf", "rf") and F.matches_family("edm/rf", "edm")


# ---- paths ---------------------------------------------------------------------------------------


def test_rf_endpoints_are_exact():
    f = F.get("rf")
    a, b = f.alpha_sigma(jnp.array([0.0, 1.0]))
    assert as_np(a).tolist() == [1.0, 0.0] and as_np(b).tolist() == [0.0, 1.0]


def ldm_alphas_cumprod(beta_start=0.00085, beta_end=0.012, steps=1000):
    betas = np.linspace(beta_start**0.5, beta_end**0.5, steps, dtype=np.float64) ** 2
    return np.cumprod(1.0 - betas)


@pytest.mark.parametrize("name", ["eps/linear", "v/linear"])
def test_ldm_linear_equals_the_cumulative_product_and_stops_short_of_noise(name):
    f = F.get(name)
    abar = ldm_alphas_cumprod()
    t = (np.arange(1000) + 1) / 1000
    a, b = f.alpha_sigma(jnp.asarray(t, jnp.float32))
    np.testing.assert_allclose(as_np(a) ** 2, abar, rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(as_np(a) ** 2 + as_np(b) ** 2, 1.0, atol=1e-6)
    a0, b0 = f.alpha_sigma(jnp.float32(0.0))
    assert float(a0) == 1.0 and float(b0) == 0.0
    a1, _ = f.alpha_sigma(jnp.float32(1.0))
    assert float(a1) == pytest.approx(math.sqrt(abar[-1]), rel=1e-5) and 0.06 < float(a1) < 0.08  # SNR(1) > 0


@pytest.mark.parametrize("name", [n for n in ALL if F.family_of(n) == "edm"])
def test_edm_reaches_sigma_zero_at_data_and_lognormal_sigma_near_noise(name):
    f = F.get(name)
    pm, ps = f.path.p_mean, f.path.p_std
    a, b = f.alpha_sigma(jnp.array([0.0, 1.0 - 1e-6], jnp.float32))
    assert as_np(a).tolist() == [1.0, 1.0] and float(b[0]) == 0.0
    expected = math.exp(pm + ps * stats.norm.ppf(float(np.float32(1.0 - 1e-6))))
    assert float(b[1]) == pytest.approx(expected, rel=1e-3)


def test_cosine_logsnr_matches_closed_form():
    for name in ["eps/cos", "v/cos"]:
        lam = as_np(F.get(name).logsnr(INTERIOR))
        np.testing.assert_allclose(lam, -2 * np.log(np.tan(np.pi * INTERIOR.astype(np.float64) / 2)), atol=2e-5)


def test_edm_rf_and_edm_cos_share_the_logsnr_of_rf_and_cos():
    np.testing.assert_allclose(as_np(F.get("edm/rf").logsnr(INTERIOR)), as_np(F.get("rf").logsnr(INTERIOR)), atol=2e-5)
    np.testing.assert_allclose(as_np(F.get("edm/cos").logsnr(INTERIOR)), as_np(F.get("v/cos").logsnr(INTERIOR)),
                               atol=2e-5)
    sigma = as_np(F.get("edm/rf").alpha_sigma(INTERIOR)[1])
    np.testing.assert_allclose(sigma, INTERIOR / (1 - INTERIOR.astype(np.float64)), rtol=1e-5)


@pytest.mark.parametrize("name", ALL)
def test_logsnr_strictly_decreasing_and_derivatives_match_finite_differences(name):
    f = F.get(name)
    t = np.linspace(1e-3, 1 - 1e-3, 997).astype(np.float32)
    lam = as_np(call("logsnr", f, t))
    assert np.all(np.isfinite(lam)) and np.all(np.diff(lam) < 0)
    h = 1e-3
    mid = np.float32(0.3137)  # off the LDM grid, where its path is linear in log(abar)
    a_plus, b_plus = (as_np(v) for v in call("alpha_sigma", f, jnp.float32(mid + h)))
    a_minus, b_minus = (as_np(v) for v in call("alpha_sigma", f, jnp.float32(mid - h)))
    da, db = (as_np(v) for v in call("path_derivatives", f, jnp.float32(mid)))
    np.testing.assert_allclose(da, (a_plus - a_minus) / (2 * h), rtol=2e-2, atol=1e-3)
    np.testing.assert_allclose(db, (b_plus - b_minus) / (2 * h), rtol=2e-2, atol=1e-3)


# ---- conversions ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_conversions_round_trip(name):
    f = F.get(name)
    key_x, key_e = jax.random.split(jax.random.key(0))
    t = jnp.asarray(np.linspace(0.05, 0.95, 8), jnp.float32)
    x0 = jax.random.normal(key_x, (8, 4, 4, 3))
    eps = jax.random.normal(key_e, (8, 4, 4, 3))
    z = call("noisy", f, x0, eps, t)
    target = call("target_value", f, x0, eps, t)
    x0_hat, eps_hat = call("to_x0_eps", f, z, target, t)
    np.testing.assert_allclose(as_np(x0_hat), as_np(x0), atol=2e-4 * max(1.0, float(jnp.max(jnp.abs(z)))))
    np.testing.assert_allclose(as_np(eps_hat), as_np(eps), atol=2e-4)
    # the ODE velocity at the true target is dz/dt along the fixed (x0, eps) line, checked by finite differences
    h = 1e-3
    fd = (call("noisy", f, x0, eps, t + h) - call("noisy", f, x0, eps, t - h)) / (2 * h)
    velocity = call("velocity", f, z, target, t)
    np.testing.assert_allclose(as_np(velocity), as_np(fd), rtol=2e-2, atol=2e-2 * float(jnp.max(jnp.abs(fd))))


def test_rf_velocity_is_eps_minus_x0_and_prediction_kinds():
    f = F.get("rf/lognorm(0.00, 1.00)")
    x0, eps = jnp.ones((2, 3)), 2 * jnp.ones((2, 3))
    np.testing.assert_allclose(as_np(f.target_value(x0, eps, jnp.array([0.2, 0.7]))), 1.0)
    assert {F.get(n).prediction for n in ["rf", "eps/linear", "v/cos", "edm/rf"]} == {"velocity", "eps", "v", "edm"}


def test_edm_conversion_is_karras_preconditioning():
    f = F.get("edm(-1.20, 1.20)")
    t = jnp.array([0.1, 0.5, 0.9], jnp.float32)
    sigma = as_np(f.alpha_sigma(t)[1])
    z, out = jnp.ones((3, 2)) * 1.5, jnp.ones((3, 2)) * -0.7
    c_skip = 0.25 / (sigma**2 + 0.25)
    c_out = sigma * 0.5 / np.sqrt(sigma**2 + 0.25)
    x0_hat, _ = f.to_x0_eps(z, out, t)
    np.testing.assert_allclose(as_np(x0_hat[:, 0]), c_skip * 1.5 + c_out * -0.7, rtol=1e-5)
    scaled, c_noise = f.network_inputs(z, t)
    np.testing.assert_allclose(as_np(scaled[:, 0]), 1.5 / np.sqrt(sigma**2 + 0.25), rtol=1e-5)
    np.testing.assert_allclose(as_np(c_noise), np.log(sigma) / 4, rtol=1e-5)


# ---- densities -----------------------------------------------------------------------------------


def reference_cdf(name):
    """Independent closed-form CDFs of the training-time densities (float64)."""
    spec = F.parse(name)
    family, p = spec.family, spec.params
    if family == "rf/lognorm":
        base = lambda t: stats.norm.cdf((np.log(t) - np.log1p(-t) - p["m"]) / p["s"])
    elif family == "rf/mode":
        def base(t):
            # CDF = 1 - f^{-1}(t); invert f_mode with a float64 root finder
            f_mode = lambda u, tt: 1 - u - p["s"] * (np.cos(np.pi * u / 2) ** 2 - 1 + u) - tt
            from scipy.optimize import brentq
            return np.array([1 - brentq(f_mode, 0, 1, args=(tt,), xtol=1e-14) if 0 < tt < 1 else float(tt >= 1)
                             for tt in np.atleast_1d(t)])
    elif family == "rf/cosmap":
        base = lambda t: 2 / np.pi * np.arctan(t / (1 - t))
    elif family in ("eps/linear", "v/linear"):
        base = lambda t: np.floor(np.asarray(t) * 1000 + 1e-4) / 1000
    else:
        base = lambda t: np.asarray(t, np.float64)
    cdf = base
    if "shift" in p:
        alpha = p["shift"]
        cdf = lambda t, c=cdf: c(np.asarray(t) / (alpha - (alpha - 1) * np.asarray(t)))
    if "uniform_fraction" in p:
        frac = p["uniform_fraction"]
        cdf = lambda t, c=cdf: (1 - frac) * c(t) + frac * np.asarray(t)
    return cdf


@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")  # float32 integrand: roundoff notes
@pytest.mark.parametrize("name", ALL)
def test_density_matches_independent_cdf_integrates_to_one_and_sampling_passes_ks(name):
    f = F.get(name)
    probe = np.linspace(0.0123, 0.9877, 40)
    np.testing.assert_allclose(as_np(call("t_cdf", f, probe.astype(np.float32))), reference_cdf(name)(probe), atol=2e-5)
    pdf = lambda t: float(call("t_pdf", f, jnp.float32(t)))
    # rf/mode(-1.00) has an integrable singularity at t = 1: integrate to 1 - 1e-5, add the reference tail
    top = 1 - 1e-5
    total, _ = integrate.quad(pdf, 0, top, limit=400, points=[1e-3, 0.5, 1 - 1e-3])
    tail = 1 - float(np.asarray(reference_cdf(name)(np.array([top])))[0])
    assert total + tail == pytest.approx(1.0, abs=2e-3)
    samples = as_np(sample_t(f, jax.random.key(7), 20000))
    margin = np.float32(F.T_MARGIN)
    assert samples.min() >= margin and samples.max() <= np.float32(1 - margin)
    if F.family_of(name) in ("eps/linear", "v/linear"):  # discrete: every step equally likely (chi-square)
        counts = np.bincount(np.round(samples * 1000).astype(int) - 1, minlength=1000)
        assert stats.chisquare(counts).pvalue > 1e-3
    else:
        assert stats.kstest(samples, reference_cdf(name)).pvalue > 1e-3


@pytest.mark.parametrize("name", [n for n in ALL if F.family_of(n) not in ("eps/linear", "v/linear")])
def test_pdf_is_derivative_of_cdf(name):
    f = F.get(name)
    t = np.linspace(0.05, 0.95, 19)
    spec = F.parse(name)
    if spec.family == "rf/mode":  # sharp peaks near s = 2/(pi-2): use the analytic 1 / |f'(f^-1(t))|
        s = spec.params["s"]
        u = 1 - reference_cdf(name)(t)
        expected = 1 / np.abs(-1 + s * (np.pi / 2 * np.sin(np.pi * u) - 1))
    else:
        h = 1e-4
        expected = (reference_cdf(name)(t + h) - reference_cdf(name)(t - h)) / (2 * h)
    np.testing.assert_allclose(as_np(call("t_pdf", f, t.astype(np.float32))), expected, rtol=2e-3, atol=1e-4)


def test_logit_normal_pdf_and_quantiles_match_scipy():
    for m, s in [(0.0, 1.0), (0.5, 0.6), (-1.0, 2.2)]:
        f = F.get(f"rf/lognorm({m}, {s})")
        t = np.linspace(0.01, 0.99, 50)
        expected = stats.norm.pdf(np.log(t / (1 - t)), m, s) / (t * (1 - t))
        np.testing.assert_allclose(as_np(f.t_pdf(t.astype(np.float32))), expected, rtol=2e-4, atol=1e-6)
        samples = as_np(f.sample_t(jax.random.key(1), (40000,)))
        q = np.array([0.05, 0.25, 0.5, 0.75, 0.95])
        np.testing.assert_allclose(np.quantile(samples, q), 1 / (1 + np.exp(-(m + s * stats.norm.ppf(q)))), atol=0.01)


def test_cosmap_pdf_matches_the_paper_formula():
    t = np.linspace(0.01, 0.99, 50)
    np.testing.assert_allclose(as_np(F.get("rf/cosmap").t_pdf(t.astype(np.float32))),
                               2 / (np.pi - 2 * np.pi * t + 2 * np.pi * t**2), rtol=1e-5)


@pytest.mark.parametrize("s", [-1.0, -0.5, 0.0, 0.83, 1.29, 1.75, float(2 / (np.pi - 2))])
def test_mode_sampling_is_monotone_in_its_valid_range(s):
    u = np.linspace(0, 1, 10001)
    f_mode = 1 - u - s * (np.cos(np.pi * u / 2) ** 2 - 1 + u)
    assert np.all(np.diff(f_mode) <= 1e-12) and f_mode[0] == 1 and abs(f_mode[-1]) < 1e-12
    F.get(f"rf/mode({s!r})")  # accepted


@pytest.mark.parametrize("s", [-1.2, 1.76, 2.0])
def test_mode_sampling_is_refused_outside_its_valid_range(s):
    u = np.linspace(0, 1, 10001)
    f_mode = 1 - u - s * (np.cos(np.pi * u / 2) ** 2 - 1 + u)
    assert np.any(np.diff(f_mode) > 0)  # the map really is not monotone there
    with pytest.raises(F.FormulationError, match="monotone"):
        F.get(f"rf/mode({s})")


def test_sd3_shift_maps_and_inverts():
    t = np.linspace(0, 1, 11)
    shifted = as_np(F.shift_time(t, 3.0))
    np.testing.assert_allclose(shifted, 3 * t / (1 + 2 * t), atol=1e-7)
    np.testing.assert_allclose(as_np(F.unshift_time(shifted, 3.0)), t, atol=1e-6)
    # sqrt(m/n) form from the paper: shifting 256^2 -> 1024^2 is alpha = 4
    assert float(F.shift_time(0.5, 4.0)) == pytest.approx(0.8)


# ---- weights -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in ALL if F.family_of(n).startswith("rf")])
def test_rf_effective_weight_identity(name):
    f = F.get(name)
    t = INTERIOR.astype(np.float64)
    expected = t / (1 - t) * as_np(call("t_pdf", f, INTERIOR))
    np.testing.assert_allclose(as_np(call("effective_weight", f, INTERIOR)), expected, rtol=2e-4, atol=1e-9)


def assert_proportional(values, reference):
    ratio = as_np(values) / reference
    np.testing.assert_allclose(ratio, ratio[0], rtol=5e-4)


def test_cosine_weights_match_the_paper_up_to_a_constant():
    lam = as_np(F.get("eps/cos").logsnr(INTERIOR))
    assert_proportional(F.get("eps/cos").effective_weight(INTERIOR), 1 / np.cosh(lam / 2))
    assert_proportional(F.get("v/cos").effective_weight(INTERIOR), np.exp(-lam / 2))


@pytest.mark.parametrize("name", [n for n in ALL if F.family_of(n) == "edm"])
def test_edm_weight_and_logsnr_distribution(name):
    f = F.get(name)
    pm, ps = f.path.p_mean, f.path.p_std
    lam = as_np(call("logsnr", f, INTERIOR))
    expected = stats.norm.pdf(lam, -2 * pm, 2 * ps) * (np.exp(-lam) + 0.5**2)
    assert_proportional(call("effective_weight", f, INTERIOR), expected)
    samples = as_np(call("logsnr", f, sample_t(f, jax.random.key(3), 20000)))
    assert stats.kstest(samples, stats.norm(-2 * pm, 2 * ps).cdf).pvalue > 1e-3


def test_min_snr_weights():
    t = INTERIOR
    snr = np.exp(as_np(F.get("eps/cos").logsnr(t)))
    np.testing.assert_allclose(as_np(F.get("eps/cos+minsnr(5.00)").loss_weight(t)), np.minimum(snr, 5) / snr, rtol=1e-4)
    np.testing.assert_allclose(as_np(F.get("v/cos+minsnr(5.00)").loss_weight(t)), np.minimum(snr, 5) / (snr + 1),
                               rtol=1e-4)


# ---- the loss ------------------------------------------------------------------------------------


def toy_model(z, c_noise):
    """A fixed smooth 'network' used to exercise the loss."""
    return jnp.tanh(0.7 * z + 0.1 * c_noise.reshape(-1, *([1] * (z.ndim - 1))))


toy_loss_at = jax.jit(lambda f, x0, eps, t: f.loss_at(toy_model, x0, eps, t))
toy_loss = jax.jit(lambda f, x0, key: f.loss(toy_model, x0, key))


@pytest.mark.parametrize("name", ALL)
def test_loss_is_finite_in_float32_near_both_ends(name):
    f = F.get(name)
    t = jnp.array([1e-6, 2e-6, 0.5, 1 - 2e-6, 1 - 1e-6], jnp.float32)
    x0 = jax.random.normal(jax.random.key(0), (5, 4, 4, 3))
    eps = jax.random.normal(jax.random.key(1), (5, 4, 4, 3))
    per_example = toy_loss_at(f, x0, eps, t)
    assert per_example.dtype == jnp.float32 and np.all(np.isfinite(as_np(per_example)))
    assert np.isfinite(float(toy_loss(f, x0, jax.random.key(2))))


def test_rf_loss_is_velocity_mse():
    f = F.get("rf")
    x0 = jax.random.normal(jax.random.key(0), (3, 2, 2, 1))
    eps = jax.random.normal(jax.random.key(1), (3, 2, 2, 1))
    t = jnp.array([0.1, 0.5, 0.9])
    z = (1 - t)[:, None, None, None] * x0 + t[:, None, None, None] * eps
    expected = np.mean((as_np(toy_model(z, t)) - as_np(eps - x0)) ** 2, axis=(1, 2, 3))
    np.testing.assert_allclose(as_np(f.loss_at(toy_model, x0, eps, t)), expected, rtol=1e-5)


def test_jit_and_vmap_over_stacked_variants():
    variants = [F.get(f"rf/lognorm({m}, 1.00)") for m in (-0.5, 0.0, 0.5)]
    stacked = jax.tree.map(lambda *leaves: jnp.stack([jnp.asarray(x, jnp.float32) for x in leaves]), *variants)
    x0 = jax.random.normal(jax.random.key(0), (16, 4, 4, 3))
    keys = jax.random.split(jax.random.key(1), 3)
    batched = jax.jit(jax.vmap(lambda f, k: f.loss(toy_model, x0, k)))(stacked, keys)
    one_by_one = [float(toy_loss(v, x0, k)) for v, k in zip(variants, keys)]
    np.testing.assert_allclose(as_np(batched), one_by_one, rtol=1e-5)
    t = jnp.full((3, 5), 0.3)
    pdfs = jax.vmap(lambda f, tt: f.t_pdf(tt))(stacked, t)
    assert pdfs.shape == (3, 5) and float(pdfs[0, 0]) != float(pdfs[2, 0])
