"""ODE samplers for every formulation: time grids, Euler / Heun / Dopri5 with one signature (and DDIM for
native coordinates), classifier-free guidance, and ``generate`` (default: Euler on the shared rectified-flow ODE).

>>> import jax
>>> from trajbench import formulations, samplers
>>> f = formulations.get("v/cos")
>>> net = lambda z, c, tokens, pooled: 0 * z           # any network(z_in, c_noise, tokens, pooled)
>>> tokens, pooled = jax.numpy.zeros((2, 4, 8)), jax.numpy.zeros((2, 8))
>>> images, info = samplers.generate(f, net, tokens, pooled, jax.random.key(0), steps=4, image_shape=(8, 8, 3))
>>> images.shape, info["nfe"]
((2, 8, 8, 3), 4)

Solvers: ``solver(velocity_fn, z_start, grid) -> (z_end, nfe)``, and "ddim" for native coordinates; see
:mod:`.solvers`.
Coordinates ("rf" / "native"), the evaluable time range, guidance: see :mod:`.sampling`.
"""

from trajbench.samplers.sampling import (
    COORDINATES,
    SAMPLE_T_MAX,
    SAMPLE_T_MIN,
    SIGMA_MAX,
    for_sampling,
    generate,
    guided_model,
    is_unguided,
    jit_generate,
    native_start,
    native_velocity,
    reachable_rf_range,
    rf_time,
    rf_to_formulation_time,
    rf_velocity,
    sample,
    sample_path,
)
from trajbench.samplers.setting import PROTOCOLS, SamplerSetting, SettingError
from trajbench.samplers.solvers import GRIDS, SOLVERS, ddim, dopri5, euler, get_solver, heun, time_grid

__all__ = [
    "PROTOCOLS",
    "SamplerSetting",
    "SettingError",
    "COORDINATES",
    "GRIDS",
    "SAMPLE_T_MAX",
    "SAMPLE_T_MIN",
    "SIGMA_MAX",
    "SOLVERS",
    "ddim",
    "dopri5",
    "euler",
    "for_sampling",
    "generate",
    "get_solver",
    "guided_model",
    "heun",
    "is_unguided",
    "jit_generate",
    "native_start",
    "native_velocity",
    "reachable_rf_range",
    "rf_time",
    "rf_to_formulation_time",
    "rf_velocity",
    "sample",
    "sample_path",
    "time_grid",
]
