"""The registry of diffusion trajectory formulations (math only, no network code).

>>> from trajbench import formulations
>>> f = formulations.get("rf/lognorm(0.00, 1.00)")
>>> a, b = f.alpha_sigma(0.5)
"""

from trajbench.formulations.densities import shift_time, unshift_time
from trajbench.formulations.formulation import T_MARGIN, Formulation
from trajbench.formulations.registry import (
    EXTRAS,
    FAMILIES,
    FormulationError,
    describe,
    family_of,
    get,
    matches_family,
    names,
    parse,
    program_key,
    sd3_variants,
)

__all__ = [
    "EXTRAS",
    "FAMILIES",
    "T_MARGIN",
    "Formulation",
    "FormulationError",
    "describe",
    "family_of",
    "get",
    "matches_family",
    "names",
    "parse",
    "program_key",
    "sd3_variants",
    "shift_time",
    "unshift_time",
]
