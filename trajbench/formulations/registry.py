"""Names of formulations: the grammar, the paper's 61 variants, and the extras.

Grammar::

    name      := family [ "(" number {", " number} ")" ] { "+" modifier "(" number ")" }
    family    := rf | rf/mode | rf/lognorm | rf/cosmap | eps/linear | v/linear | eps/cos | v/cos
                 | edm | edm/rf | edm/cos
    modifier  := shift (rf: SD3 timestep shift of pi) | unif (rf: mix pi with a uniform fraction)
                 | minsnr (eps, v: Min-SNR-gamma weighting)

Numbers are printed with two decimals, as the paper prints them (``rf/lognorm(0.00, 1.00)``).
A variant is data (family + parameters); the families below are the only place its parts are chosen.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from dataclasses import dataclass
from typing import Callable

import jax

from trajbench.errors import UserError
from trajbench.formulations.densities import (
    MODE_SCALE_MAX,
    MODE_SCALE_MIN,
    CosMap,
    DiscreteUniform,
    LogitNormal,
    ModeSampling,
    Shifted,
    Uniform,
    UniformMixture,
)
from trajbench.formulations.formulation import Formulation
from trajbench.formulations.paths import CosinePath, LDMLinearPath, LinearPath, LogNormalVEPath, VEFormPath
from trajbench.formulations.targets import EDMPreconditioning, Epsilon, MinSNR, VPrediction, Velocity


class FormulationError(UserError, ValueError):
    """An unknown, malformed or out-of-range formulation name."""


@dataclass(frozen=True)
class Family:
    params: tuple[str, ...]
    build: Callable[..., Formulation]
    check: Callable[..., str | None] = lambda *args: None  # returns a reason when parameters are invalid


def _positive(label):
    return lambda value, *rest: None if value > 0 else f"{label} must be > 0"


def _mode_check(s):
    if MODE_SCALE_MIN <= s <= float(MODE_SCALE_MAX):
        return None
    return f"s must lie in [{MODE_SCALE_MIN:g}, {float(MODE_SCALE_MAX):.4f}] (= 2/(pi-2)) for f_mode to be monotone"


FAMILIES: dict[str, Family] = {
    "rf": Family((), lambda: Formulation(LinearPath(), Uniform(), Velocity())),
    "rf/mode": Family(("s",), lambda s: Formulation(LinearPath(), ModeSampling(s), Velocity()), _mode_check),
    "rf/lognorm": Family(
        ("m", "s"), lambda m, s: Formulation(LinearPath(), LogitNormal(m, s), Velocity()),
        lambda m, s: _positive("s")(s),
    ),
    "rf/cosmap": Family((), lambda: Formulation(LinearPath(), CosMap(), Velocity())),
    "eps/linear": Family((), lambda: Formulation(LDMLinearPath(), DiscreteUniform(), Epsilon())),
    "v/linear": Family((), lambda: Formulation(LDMLinearPath(), DiscreteUniform(), VPrediction())),
    "eps/cos": Family((), lambda: Formulation(CosinePath(), Uniform(), Epsilon())),
    "v/cos": Family((), lambda: Formulation(CosinePath(), Uniform(), VPrediction())),
    "edm": Family(
        ("p_mean", "p_std"), lambda pm, ps: Formulation(LogNormalVEPath(pm, ps), Uniform(), EDMPreconditioning()),
        lambda pm, ps: _positive("p_std")(ps),
    ),
    "edm/rf": Family((), lambda: Formulation(VEFormPath(LinearPath()), Uniform(), EDMPreconditioning())),
    "edm/cos": Family((), lambda: Formulation(VEFormPath(CosinePath()), Uniform(), EDMPreconditioning())),
}


@dataclass(frozen=True)
class Modifier:
    param: str
    applies_to: tuple[str, ...]  # family prefixes
    apply: Callable[[Formulation, float], Formulation]
    check: Callable[[float], str | None]


MODIFIERS: dict[str, Modifier] = {
    "shift": Modifier(
        "shift", ("rf",), lambda f, alpha: dataclasses.replace(f, density=Shifted(f.density, alpha)), _positive("shift")
    ),
    "unif": Modifier(
        "uniform_fraction", ("rf",), lambda f, frac: dataclasses.replace(f, density=UniformMixture(f.density, frac)),
        lambda frac: None if 0.0 <= frac <= 1.0 else "the uniform fraction must lie in [0, 1]",
    ),
    "minsnr": Modifier(
        "min_snr_gamma", ("eps", "v"), lambda f, gamma: dataclasses.replace(f, weighting=MinSNR(gamma)), _positive("gamma")
    ),
}


def _number(value: float) -> str:
    """Two decimals as the paper prints them, more only when the value needs them."""
    return f"{value:.2f}" if round(value, 2) == value else f"{value:g}"


def format_name(family: str, args=(), modifiers=()) -> str:
    name = family + (f"({', '.join(_number(a) for a in args)})" if args else "")
    return name + "".join(f"+{mod}({_number(v)})" for mod, v in modifiers)


# ---- the paper's 61 and our extras ---------------------------------------------------------------
MODE_SCALES = tuple(round(-1.0 + k * 2.75 / 6, 2) for k in range(7)) + (1.0,)
LOGNORM_MEANS = (-1.0, -0.5, 0.0, 0.5, 1.0)
LOGNORM_STDS = (0.2, 0.6, 1.0, 1.4, 1.8, 2.2)
EDM_MEANS = (-1.2, -0.6, 0.0, 0.6, 1.2)
EDM_STDS = (0.6, 1.2, 1.8)

SD3_VARIANTS: tuple[str, ...] = (
    ("rf",)
    + tuple(format_name("rf/mode", (s,)) for s in sorted(MODE_SCALES))
    + tuple(format_name("rf/lognorm", (m, s)) for m in LOGNORM_MEANS for s in LOGNORM_STDS)
    + ("rf/cosmap", "eps/linear", "v/linear", "eps/cos", "v/cos")
    + tuple(format_name("edm", (pm, ps)) for pm in EDM_MEANS for ps in EDM_STDS)
    + ("edm/rf", "edm/cos")
)

EXTRAS: dict[str, str] = {
    "rf/lognorm(0.00, 1.00)+shift(3.00)": "SD3's shifted logit-normal for high-resolution training (shift 3)",
    "rf/lognorm(0.00, 1.00)+unif(0.10)": "logit-normal with 10% of training times drawn uniformly",
    "edm(-0.40, 1.00)": "EDM2's log-normal noise distribution (P_mean -0.4, P_std 1.0)",
    "eps/cos+minsnr(5.00)": "Min-SNR-5 weighting, eps-prediction on the cosine path",
    "v/cos+minsnr(5.00)": "Min-SNR-5 weighting, v-prediction on the cosine path",
    "eps/linear+minsnr(5.00)": "Min-SNR-5 weighting, eps-prediction on LDM-linear",
}

_NAME = re.compile(
    r"^(?P<family>[a-z0-9]+(?:/[a-z0-9]+)?)\s*(?:\((?P<args>[^()]*)\))?(?P<mods>(?:\s*\+\s*[a-z]+\s*\([^()]*\))*)$"
)
_MOD = re.compile(r"\+\s*(?P<mod>[a-z]+)\s*\((?P<arg>[^()]*)\)")


@dataclass(frozen=True)
class Spec:
    """A parsed name: family, its parameters, modifiers, and the canonical spelling."""

    name: str
    family: str
    params: dict
    modifiers: tuple[tuple[str, float], ...]

    @property
    def is_paper_variant(self) -> bool:
        return self.name in SD3_VARIANTS


def _numbers(text: str, where: str) -> tuple[float, ...]:
    if text is None or not text.strip():
        return ()
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise FormulationError(f"malformed parameters {text!r} in {where!r}: expected numbers separated by commas")
    if not all(math.isfinite(v) for v in values):
        raise FormulationError(f"parameters {text!r} in {where!r} must be finite numbers")
    return values


def _unknown(name: str) -> FormulationError:
    """An error that names the closest valid names (respecting the parameters when they parse)."""
    text = str(name).strip()
    corrected = []
    match = _NAME.match(text.lower().replace(" ", ""))
    if match:  # a misspelt family with good parameters: suggest the same parameters in the right family
        try:
            args = _numbers(match["args"], text)
        except FormulationError:
            args = None
        for family in difflib.get_close_matches(match["family"], list(FAMILIES), n=3, cutoff=0.5):
            if args is not None and len(args) == len(FAMILIES[family].params):
                corrected.append(format_name(family, args))
    known = list(SD3_VARIANTS) + list(EXTRAS)
    close = list(dict.fromkeys(corrected + difflib.get_close_matches(text, known, n=3, cutoff=0.4)))[:3]
    hint = f"closest valid names: {', '.join(close)}" if close else f"families are {', '.join(FAMILIES)}"
    return FormulationError(f"unknown formulation {text!r}; {hint} (`trajbench list` shows every name)")


def parse(name: str) -> Spec:
    """Parse and validate a name; raise :class:`FormulationError` naming the problem and a fix."""
    match = _NAME.match(name.strip()) if isinstance(name, str) else None
    if match is None or match["family"] not in FAMILIES:
        raise _unknown(str(name))
    family_name = match["family"]
    family = FAMILIES[family_name]
    args = _numbers(match["args"], name)
    if len(args) != len(family.params):
        example = format_name(family_name, (0.0, 1.0)[: len(family.params)] if family_name != "rf/mode" else (1.29,))
        raise FormulationError(
            f"{family_name} takes {len(family.params)} parameter(s) ({', '.join(family.params) or 'none'}), "
            f"got {len(args)} in {name!r}; e.g. {example!r}"
        )
    reason = family.check(*args)
    if reason:
        raise FormulationError(f"invalid formulation {name!r}: {reason}")
    modifiers = []
    for mod_match in _MOD.finditer(match["mods"] or ""):
        mod_name = mod_match["mod"]
        modifier = MODIFIERS.get(mod_name)
        if modifier is None:
            raise FormulationError(f"unknown modifier +{mod_name}(...) in {name!r}; modifiers are {', '.join(MODIFIERS)}")
        values = _numbers(mod_match["arg"], name)
        if len(values) != 1:
            raise FormulationError(f"+{mod_name}(...) takes one number in {name!r}, got {len(values)}")
        if not family_name.split("/")[0] in modifier.applies_to:
            raise FormulationError(
                f"+{mod_name} applies only to {'/'.join(modifier.applies_to)}/* formulations, not {family_name!r}"
            )
        reason = modifier.check(values[0])
        if reason:
            raise FormulationError(f"invalid modifier in {name!r}: {reason}")
        modifiers.append((mod_name, values[0]))
    canonical = format_name(family_name, args, modifiers)
    params = dict(zip(family.params, args)) | {MODIFIERS[m].param: v for m, v in modifiers}
    return Spec(canonical, family_name, params, tuple(modifiers))


def get(name: str) -> Formulation:
    """The formulation for any well-formed name, e.g. ``get("rf/lognorm(0.30, 0.80)")``."""
    spec = parse(name)
    formulation = FAMILIES[spec.family].build(*(spec.params[p] for p in FAMILIES[spec.family].params))
    for mod_name, value in spec.modifiers:
        formulation = MODIFIERS[mod_name].apply(formulation, value)
    return formulation.with_name(spec.name)


def sd3_variants() -> list[str]:
    """The 61 variants of the SD3 paper's Section 5.1, spelled as the paper prints them."""
    return list(SD3_VARIANTS)


def names() -> list[str]:
    """Every registered name: the paper's 61, then the extras."""
    return list(SD3_VARIANTS) + list(EXTRAS)


def family_of(name: str) -> str:
    return parse(name).family


def program_key(name: str):
    """What decides whether two formulations share one compiled program (a Trainer's steps, a stack of runs): the
    tree structure of their pytrees. Names that differ only in parameter values share it; ``+shift`` or ``+unif``
    wraps the density, so ``rf/lognorm(0.00, 1.00)+shift(3.00)`` needs a program of its own although its
    :func:`family_of` is ``rf/lognorm``."""
    return jax.tree.structure(get(name))


def matches_family(name: str, pattern: str) -> bool:
    """True when ``name``'s family is ``pattern`` or lies under it (``rf`` matches ``rf/lognorm``)."""
    family = family_of(name)
    return family == pattern or family.startswith(pattern.rstrip("/") + "/")


def describe(name: str) -> dict:
    """One row of ``trajbench list``: the parts of a formulation in words."""
    spec = parse(name)
    formulation = get(spec.name)
    return {
        "name": spec.name,
        "family": spec.family,
        "path": formulation.path.describe(),
        "prediction": formulation.prediction,
        "density": formulation.density.describe(),
        "weighting": formulation.weighting.describe(),
        "params": spec.params,
        "paper": spec.is_paper_variant,
        "note": EXTRAS.get(spec.name, ""),
    }
