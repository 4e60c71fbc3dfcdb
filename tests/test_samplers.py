"""Tests of trajbench.samplers against the exact solution for Gaussian data.

For x0 ~ N(mu, sd^2 I) and z = a x0 + b eps the posterior means are closed-form,
    x0-hat = mu + a sd^2 (z - a mu) / (a^2 sd^2 + b^2),   eps-hat = b (z - a mu) / (a^2 sd^2 + b^2),
so the exact network of every formulation is F = p x0-hat + q eps-hat (its target coefficients), and
the probability-flow ODE keeps w = (z - a mu) / sqrt(a^2 sd^2 + b^2) constant: started from z_1 at
(a_1, b_1) it ends at x0 = mu + sd w (at a data end with b = 0).
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trajbench import formulations as F
from trajbench import samplers as S
from trajbench.formulations.targets import EDMPreconditioning
from trajbench.samplers import SamplerSetting, SettingError

SHAPE = (2, 4, 4, 2)  # [B, H, W, C]
SD = 0.5
MU = jnp.asarray(np.random.default_rng(0).uniform(-0.5, 0.5, SHAPE[1:]), jnp.float32)
EPS = jax.random.normal(jax.random.key(1), SHAPE)
# Sampling reads only path and target: this maps the 67 names onto 8 pytree structures.
ALL = {name: S.for_sampling(F.get(name)) for name in F.names()}


@functools.partial(jax.tree_util.register_dataclass, data_fields=["index", "members"], meta_fields=[])
@dataclasses.dataclass(frozen=True)
class Switched:
    """Formulation ``members[index]``, dispatched with ``lax.switch`` on a traced index.

    Only to save compile time in tests that sweep every formulation: one compiled sampler (one
    diffrax program) serves all 8 structures, with each formulation's own methods in its branch.
    """

    index: jax.Array
    members: tuple

    def _switch(self, method, *args):
        branches = [functools.partial(lambda m, *a, name=method: getattr(m, name)(*a), m) for m in self.members]
        return jax.lax.switch(self.index, branches, *args)

    def alpha_sigma(self, t):
        return self._switch("alpha_sigma", t)

    def logsnr(self, t):
        return self._switch("logsnr", t)

    def path_derivatives(self, t):
        return self._switch("path_derivatives", t)

    def network_inputs(self, z, t):
        return self._switch("network_inputs", z, t)

    def to_x0_eps(self, z, output, t):
        return self._switch("to_x0_eps", z, output, t)

    def velocity(self, z, output, t):
        return self._switch("velocity", z, output, t)

    def predict(self, model_fn, z, t):
        return model_fn(*self.network_inputs(z, t))


REPRESENTATIVES = {}  # structure -> (index, a formulation of that structure)
for _f in ALL.values():
    REPRESENTATIVES.setdefault(jax.tree.structure(_f), (len(REPRESENTATIVES), _f))
assert len(REPRESENTATIVES) == 8


def switched(f):
    """f as a Switched over one formulation per structure (f in its structure's slot)."""
    index, _ = REPRESENTATIVES[jax.tree.structure(f)]
    members = tuple(f if i == index else g for i, g in REPRESENTATIVES.values())
    return Switched(jnp.int32(index), members)
TIGHT = functools.partial(S.dopri5, rtol=1e-6, atol=1e-6)


def oracle(f):
    """The exact network(z_in, c_noise, tokens, pooled) of formulation f for the Gaussian data."""
    if isinstance(f, Switched):
        return lambda *args: jax.lax.switch(f.index, [oracle(m) for m in f.members], *args)
    edm = isinstance(f.target, EDMPreconditioning)

    def network(z_in, c_noise, tokens, pooled):
        c = c_noise.reshape(-1, 1, 1, 1)
        if edm:  # c_noise = log(sigma) / 4, c_in = 1 / sqrt(sigma^2 + sd_data^2), a = 1
            a, b = jnp.ones_like(c), jnp.exp(4.0 * c)
            z, da, db = z_in * jnp.sqrt(b**2 + f.target.sigma_data**2), None, None
        else:  # c_noise = t, c_in = 1
            a, b = f.alpha_sigma(c)
            (da, db), z = f.path_derivatives(c), z_in
        den = a**2 * SD**2 + b**2
        x0 = MU + a * SD**2 * (z - a * MU) / den
        eps = b * (z - a * MU) / den
        p, q = f.target.coefficients(a, b, da, db)
        return p * x0 + q * eps

    return network


def closed_form(f, z1, t_start, t_end=None):
    """ODE endpoint from z1 at t_start; at t_end (if given) the result is z_end / a_end."""
    a1, b1 = f.alpha_sigma(jnp.float32(t_start))
    w = (z1 - a1 * MU) / jnp.sqrt(a1**2 * SD**2 + b1**2)
    if t_end is None:
        return MU + SD * w
    a0, b0 = f.alpha_sigma(jnp.float32(t_end))
    return MU + jnp.sqrt(SD**2 + (b0 / a0) ** 2) * w


def expected(f, coordinates="rf"):
    """rf starts from z1 = b(t_max) eps, native from z1 = b(t_start) eps, where b / a reaches 80 (see
    trajbench.samplers.sampling)."""
    if coordinates == "native":
        t_start = S.native_start(f)
        return closed_form(f, f.alpha_sigma(t_start)[1] * EPS, t_start, S.SAMPLE_T_MIN)
    _, b1 = f.alpha_sigma(jnp.float32(S.SAMPLE_T_MAX))
    return closed_form(f, b1 * EPS, S.SAMPLE_T_MAX)


GRID_LENGTH = 33


def padded_grid(steps):
    """time_grid(steps) preceded by repeats of its start, so every grid has GRID_LENGTH points and one
    compiled program serves every step count: the extra steps have zero length and change nothing.
    (More steps than that: the plain grid.)"""
    return jnp.concatenate([jnp.ones(max(GRID_LENGTH - 1 - steps, 0)), S.time_grid(steps)])


@functools.partial(jax.jit, static_argnames=("solver", "coordinates"))
def run_on(f, grid, solver="euler", coordinates="rf"):
    model_fn, _ = S.guided_model(oracle(f), jnp.zeros((SHAPE[0], 3, 4)), jnp.zeros((SHAPE[0], 4)), 1.0)
    return S.sample(f, model_fn, EPS, grid, solver=solver, coordinates=coordinates)


def run(f, steps, solver="euler", coordinates="rf"):
    """x0-hat of ``steps`` solver steps (for dopri5: only the initial step size depends on steps)."""
    return run_on(f, padded_grid(steps), solver, coordinates)[0]


def max_err(x, y):
    return float(jnp.max(jnp.abs(x - y)))


# ---- time grids and the rf-time inversion -------------------------------------------------------------
@pytest.mark.parametrize("kind", S.GRIDS)
def test_time_grid(kind):
    grid = np.asarray(S.time_grid(10, kind, shift=3.0))
    assert grid.shape == (11,) and grid[0] == 1.0 and grid[-1] == 0.0
    assert np.all(np.diff(grid) < 0)
    uniform = np.linspace(1.0, 0.0, 11)
    want = uniform if kind == "uniform" else np.asarray(F.shift_time(uniform, 3.0))
    np.testing.assert_allclose(grid, want, atol=1e-6)
    with pytest.raises(ValueError):
        S.time_grid(4, "cosine")


@jax.jit
def _inversion(f, s):
    t = S.rf_to_formulation_time(f, s)
    s_lo, s_hi = S.reachable_rf_range(f)
    # the float32 resolution of t: the log-SNR step to the neighbouring representable times
    ulp = jnp.maximum(*(jnp.abs(f.logsnr(jnp.nextafter(t, end)) - f.logsnr(t)) for end in (0.0, 1.0)))
    return f.logsnr(t), t, s_lo, s_hi, ulp


def test_rf_time_inversion_every_formulation():
    s = jnp.linspace(0.01, 0.99, 99)
    target = np.asarray(2 * jnp.log((1 - s) / s))
    for name, f in ALL.items():
        logsnr, t, s_lo, s_hi, ulp = map(np.asarray, _inversion(switched(f), s))
        inside = (s > s_lo * 1.01) & (s < s_hi * 0.999)
        assert inside.sum() >= 80, name
        error = np.abs(logsnr - target)[inside]
        assert np.all(error <= 1e-3 + ulp[inside]), (name, error.max())
        # out of reach (LDM-linear near s = 1, narrow EDMs): clamped to the ends of [t_min, t_max]
        assert np.all(t[s >= s_hi] == np.float32(S.SAMPLE_T_MAX)), name
        assert np.all((t >= S.SAMPLE_T_MIN) & (t <= S.SAMPLE_T_MAX)), name
    lo, hi = S.reachable_rf_range(ALL["eps/linear"])
    assert 0.93 < float(hi) < 0.94 and float(lo) < 1e-10


# ---- accuracy against the closed form ---------------------------------------------------------------
def test_dopri5_rf_matches_closed_form_for_every_formulation():
    errors = {name: max_err(run(switched(f), 8, TIGHT), expected(f)) for name, f in ALL.items()}
    worst = max(errors, key=errors.get)
    assert errors[worst] < 1e-3, (worst, errors[worst])


def test_dopri5_native_matches_closed_form():
    """(Native EDM time is too stiff at its ends for a tight adaptive solve: d sigma / dt -> inf.)"""
    f = ALL["eps/linear"]
    assert max_err(run(f, 8, TIGHT, "native"), expected(f, "native")) < 1e-3


def test_rf_coordinates_give_one_sampler_for_all_formulations():
    """Exact networks of formulations that reach both ends integrate the same rf ODE on the same grid.

    (Not eps/cos: at t_max its x0-hat = (z - b eps-hat) / a amplifies the float32 rounding of eps-hat
    by b / a = 6e5, an O(h) error of ~7e-3 here; see trajbench.samplers.sampling.)
    """
    results = [run(ALL[name], 6) for name in ["rf", "v/cos", "edm/rf", "edm/cos"]]
    for x in results[1:]:
        assert max_err(x, results[0]) < 2e-4


@pytest.mark.parametrize(
    "name, coordinates",
    # native: only a path smooth in t (EDM's sigma(t) and LDM's b ~ sqrt(t) are not, at the ends)
    [("rf", "rf"), ("v/cos", "rf"), ("eps/linear", "rf"), ("edm(-1.20, 1.20)", "rf"), ("v/cos", "native")],
)
def test_euler_and_heun_convergence_orders(name, coordinates):
    f, want = ALL[name], expected(ALL[name], coordinates)
    euler = np.array([max_err(run(f, n, "euler", coordinates), want) for n in (8, 16, 32)])
    heun = np.array([max_err(run(f, n, "heun", coordinates), want) for n in (4, 8, 16)])
    assert np.all((1.7 < euler[:-1] / euler[1:]) & (euler[:-1] / euler[1:] < 2.4)), euler
    assert np.all((3.0 < heun[:-1] / heun[1:]) & (heun[:-1] / heun[1:] < 5.5)), heun


@pytest.mark.parametrize(
    "name, max_ratio",
    # edm(0.00, 0.60) converges slowly: its uniform t grid is coarse in sigma near the data (the last
    # point before t_min has sigma = exp(0.6 Phi^-1(1 / N)) = 0.29 at N = 50; see sampling's docstring)
    [("rf", 0.15), ("v/cos", 0.15), ("eps/linear", 0.2), ("edm(-1.20, 1.20)", 0.15), ("edm(0.00, 0.60)", 0.45)],
)
def test_native_ddim_converges_for_every_kind_of_path(name, max_ratio):
    """The paper protocol (native + ddim) converges to the closed form, EDM included (native Euler does not)."""
    f, want = ALL[name], expected(ALL[name], "native")
    errors = np.array([max_err(run(switched(f), n, "ddim", "native"), want) for n in (5, 10, 25, 50)])
    assert np.all(np.isfinite(errors)) and errors[0] < 1.0, errors
    assert np.all(np.diff(errors) < 0) and errors[-1] < max_ratio * errors[0], errors
    if name.startswith("edm"):  # plain Euler in native EDM time overshoots by orders of magnitude
        assert max_err(run(f, 5, "euler", "native"), want) > 100.0


def test_native_ddim_is_euler_for_rf_and_needs_native_coordinates():
    f = ALL["rf"]
    ddim, euler = run(f, 7, "ddim", "native"), run(f, 7, "euler", "native")
    assert max_err(ddim, euler) < 1e-5 and max_err(ddim, expected(f, "native")) < 0.5
    with pytest.raises(ValueError, match="native"):
        run(f, 7, "ddim", "rf")


def test_native_start_is_where_the_noise_level_reaches_sigma_max():
    def noise_level(f, t):  # b / a
        a, b = f.alpha_sigma(t)
        return b / a

    for name in ["edm(-1.20, 1.20)", "edm(-1.20, 1.80)", "edm/cos", "rf"]:
        f = ALL[name]
        assert float(noise_level(f, jnp.float32(S.SAMPLE_T_MAX))) > 80.0, name
        t = S.native_start(f)
        # b / a = 80 to the float32 resolution of t (the log step to a neighbour) and of s = 80 / 81
        log_level = lambda t: float(jnp.log(noise_level(f, t)))
        ulp = max(abs(log_level(jnp.nextafter(t, end)) - log_level(t)) for end in (0.0, 1.0))
        assert abs(log_level(t) - np.log(80.0)) <= ulp + 1e-5, name
    np.testing.assert_allclose(S.native_start(ALL["rf"]), 80 / 81, rtol=1e-6)
    t = S.native_start(ALL["edm(-1.20, 1.20)"])  # 1 - 1.7e-6: float32 resolves b / a to 0.4 % there
    assert abs(float(noise_level(ALL["edm(-1.20, 1.20)"], t)) - 80.0) < 0.5
    # paths that never reach b / a = 80 start at t_max, as does sigma_max=None
    for name in ["eps/linear", "edm(0.00, 0.60)"]:
        assert float(S.native_start(ALL[name])) == np.float32(S.SAMPLE_T_MAX), name
    assert float(S.native_start(ALL["rf"], sigma_max=None)) == np.float32(S.SAMPLE_T_MAX)


# ---- evaluation counts --------------------------------------------------------------------------------
def counted(fn):
    """fn plus a runtime call counter (jax.debug.callback runs once per executed call, also in loops)."""
    calls = []

    def wrapped(*args):
        jax.debug.callback(lambda z: calls.append(z.shape), args[0])
        return fn(*args)

    return wrapped, calls


def _count(solver, steps, **kw):
    f = ALL["rf"]
    velocity, calls = counted(S.rf_velocity(f, S.guided_model(oracle(f), EPS, EPS, 1.0)[0]))
    _, nfe = jax.jit(lambda z: solver(velocity, z, S.time_grid(steps), **kw))(EPS)
    jax.effects_barrier()
    return int(nfe), len(calls)


def test_nfe_is_the_true_number_of_velocity_calls():
    assert _count(S.euler, 7) == (7, 7)
    assert _count(S.heun, 7) == (13, 13)  # last step Euler (EDM)
    assert _count(S.heun, 7, last_step_euler=False) == (14, 14)
    nfe, calls = _count(S.dopri5, 4, rtol=1e-5, atol=1e-5)  # includes rejected steps
    assert nfe == calls and nfe > 7


def network(z, c_noise, tokens, pooled):
    """A cheap network that depends on everything it is fed."""
    cond = tokens.mean(axis=(1, 2))[:, None, None, None] + pooled.mean(axis=1)[:, None, None, None]
    return 0.5 * z + 0.1 * c_noise[:, None, None, None] + cond


def _conditions(batch=2, key=3):
    k1, k2 = jax.random.split(jax.random.key(key))
    return jax.random.normal(k1, (batch, 3, 4)), jax.random.normal(k2, (batch, 4))


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_euler_network_passes_with_and_without_guidance(guidance):
    counting_network, calls = counted(network)
    tokens, pooled = _conditions()
    _, info = S.generate(
        ALL["rf"], counting_network, tokens, pooled, jax.random.key(0),
        steps=5, guidance=guidance, image_shape=(4, 4, 2),
    )
    jax.effects_barrier()
    copies = 1 if guidance == 1.0 else 2
    assert calls == [(2 * copies, 4, 4, 2)] * 5  # 5 calls, each of batch 2B with guidance
    assert info == dict(nfe=5, network_passes=5, network_batch=2 * copies, evals_per_sample=5 * copies)


def test_native_ddim_network_passes():
    counting_network, calls = counted(network)
    tokens, pooled = _conditions()
    _, info = S.generate(
        ALL["edm(-1.20, 1.20)"], counting_network, tokens, pooled, jax.random.key(0),
        steps=5, guidance=3.0, solver="ddim", coordinates="native", image_shape=(4, 4, 2),
    )
    jax.effects_barrier()
    assert calls == [(4, 4, 4, 2)] * 5
    assert info == dict(nfe=5, network_passes=5, network_batch=4, evals_per_sample=10)


# ---- guidance -------------------------------------------------------------------------------------
NETWORK = jax.tree_util.Partial(network)
GEN = dict(key=jax.random.key(5), image_shape=(4, 4, 2), clip=False)


@functools.partial(jax.jit, static_argnames="steps")
def _traced_guidance(f, tokens, pooled, g, steps):
    """guidance traced (not a Python number): always the [cond; uncond] batch, even for g = 1."""
    return S.generate(f, NETWORK, tokens, pooled, steps=steps, guidance=g, **GEN)[0]


def test_guidance_one_is_conditional_and_zero_is_unconditional():
    tokens, pooled = _conditions()
    f = ALL["rf"]
    assert S.is_unguided(None) and S.is_unguided(1) and not S.is_unguided(jnp.float32(1.0))
    cond = S.jit_generate(f, NETWORK, tokens, pooled, steps=3, guidance=1.0, **GEN)[0]  # batch B
    assert max_err(_traced_guidance(f, tokens, pooled, 1.0, 3), cond) < 1e-6  # batch 2B, g = 1
    zeros = jnp.zeros_like(tokens), jnp.zeros_like(pooled)
    uncond = S.jit_generate(f, NETWORK, *zeros, steps=3, guidance=1.0, **GEN)[0]
    assert max_err(_traced_guidance(f, tokens, pooled, 0.0, 3), uncond) < 1e-6
    assert max_err(cond, uncond) > 1e-2


def test_one_euler_step_is_linear_in_guidance():
    tokens, pooled = _conditions()
    x = {g: _traced_guidance(ALL["edm(0.00, 1.80)"], tokens, pooled, g, 1) for g in (0.0, 1.0, 2.5, 4.0)}
    scale = 1 + float(jnp.max(jnp.abs(x[4.0])))
    for g in (2.5, 4.0):
        np.testing.assert_allclose(x[g], x[0.0] + g * (x[1.0] - x[0.0]), atol=2e-6 * scale)


# ---- jit ---------------------------------------------------------------------------------------------
def test_jit_generate_matches_eager():
    tokens, pooled = _conditions()
    kw = dict(steps=4, guidance=2.0, grid="shifted", image_shape=(4, 4, 2))
    f = F.get("rf/lognorm(0.00, 1.00)")
    eager, info = S.generate(f, NETWORK, tokens, pooled, jax.random.key(9), **kw)
    jitted, jinfo = S.jit_generate(f, NETWORK, tokens, pooled, jax.random.key(9), **kw)
    np.testing.assert_allclose(jitted, eager, atol=1e-6)
    assert {k: int(v) for k, v in jinfo.items()} == info
    assert info == dict(nfe=4, network_passes=4, network_batch=4, evals_per_sample=8)
    assert float(jnp.max(jnp.abs(jitted))) <= 1.0  # clipped to the data range
    # another formulation of the same structure reuses the compiled program
    compiled = S.jit_generate._cache_size()
    other = S.jit_generate(F.get("rf/lognorm(0.50, 0.60)"), NETWORK, tokens, pooled, jax.random.key(9), **kw)[0]
    assert S.jit_generate._cache_size() == compiled
    np.testing.assert_allclose(other, jitted, atol=1e-6)  # the density does not enter sampling


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the options concern XLA:CPU")
def test_jit_generate_compiles_the_mmdit_without_ynnpack_fusions():
    """xla.FORWARD_COMPILER_OPTIONS reach the sampling program: the same MMDiT forward has YNNPACK fusions under
    XLA's default options and none in jit_generate."""
    from trajbench.models.mmdit import MMDiT, MMDiTConfig

    cfg = MMDiTConfig(depth=1, width=32, heads=2, patch_size=2, image_size=4, channels=2, text_dim=8, pooled_dim=8,
                      max_text_tokens=3)
    model = MMDiT(cfg)
    tokens, pooled = jnp.zeros((2, 3, 8)), jnp.zeros((2, 8))
    params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((2, 4, 4, 2)), jnp.zeros((2,)), tokens, pooled)
    params = jax.tree.map(lambda leaf: jnp.full(leaf.shape, 0.1, leaf.dtype), params)
    forward = jax.jit(model.apply).lower(params, jnp.zeros((2, 4, 4, 2)), jnp.zeros((2,)), tokens, pooled)
    assert "__ynn_fusion" in forward.compile().as_text()
    kw = dict(steps=2, guidance=2.0, image_shape=(4, 4, 2))
    network = jax.tree_util.Partial(model.apply, params)
    sampling = S.jit_generate.lower(F.get("rf"), network, tokens, pooled, jax.random.key(0), **kw)
    assert "__ynn_fusion" not in sampling.compile().as_text()


# ---- x0 clipping ---------------------------------------------------------------------------------------
def test_x0_clip_is_exact_when_inactive_and_bounds_eps_prediction_near_pure_noise():
    f = ALL["eps/cos"]
    exact = S.guided_model(oracle(f), EPS, EPS, 1.0)[0]
    noisy = lambda z_in, c: exact(z_in, c) + 1e-3 * jnp.sin(7.0 * z_in)  # a small, smooth network error
    grid = S.time_grid(25)
    sample = jax.jit(lambda model, clip: S.sample(f, model, EPS, grid, x0_clip=clip)[0], static_argnums=(0, 1))
    want = expected(f)
    assert max_err(sample(exact, 100.0), sample(exact, None)) < 1e-5  # never active: the same ODE
    assert max_err(sample(noisy, None), want) > 1.0  # x0-hat = (z - b eps-hat) / a, b / a = 6e5
    assert max_err(sample(noisy, 3.0), want) < 0.2  # |x0| < 3 for these data: bounded


# ---- sampler settings -------------------------------------------------------------------------------


def test_settings_parse_and_label():
    setting = SamplerSetting.parse("25x2.0")
    assert (setting.steps, setting.guidance, setting.solver, setting.coordinates) == (25, 2.0, "euler", "rf")
    assert setting.label == "25x2" and SamplerSetting.parse("10x1.5/heun").label == "10x1.5/heun"


def test_protocols_parse_and_label():
    paper = SamplerSetting.parse("5x5.0@paper")
    assert (paper.coordinates, paper.solver, paper.x0_clip, paper.protocol) == ("native", "ddim", None, "paper")
    assert paper.label == "5x5@paper" and SamplerSetting.parse(paper.label) == paper
    shared = SamplerSetting.parse("5x5.0@shared")
    assert shared == SamplerSetting.parse("5x5") and shared.label == "5x5" and shared.protocol == "shared"
    assert SamplerSetting.parse("5x5/euler@paper").label == "5x5/euler@paper"
    assert paper.with_steps(1).label == "1x5@paper"


@pytest.mark.parametrize("bad, message", [("25", "malformed"), ("0x2", "malformed"), ("5x2/rk4", "unknown solver"),
                                          ("5x2@nice", "unknown protocol"), ("5x2/ddim", "use it with @paper")])
def test_bad_settings_are_one_line_errors(bad, message):
    with pytest.raises(SettingError, match=message):
        SamplerSetting.parse(bad)
