"""Sampler settings: ``STEPSxGUIDANCE[/SOLVER][@PROTOCOL]`` parsed into a :class:`SamplerSetting`, and the two
sampler protocols (see :mod:`trajbench.evaluate`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from trajbench.errors import UserError
from trajbench.samplers.solvers import SOLVERS


class SettingError(UserError, ValueError):
    """A sampler setting that cannot be parsed: one line naming the problem and the valid forms."""


_SETTING = re.compile(
    r"^(?P<steps>\d+)x(?P<guidance>[0-9.]+)(?:/(?P<solver>[a-z0-9]+))?(?:@(?P<protocol>[a-z]+))?$")

PROTOCOLS = {
    # name: (coordinates, default solver, x0_clip) -- see the module docstring
    "shared": ("rf", "euler", 1.0),
    "paper": ("native", "ddim", None),
}


@dataclass(frozen=True)
class SamplerSetting:
    """One sampler setting: ``STEPSxGUIDANCE[/SOLVER][@PROTOCOL]``, e.g. ``25x2.0``, ``10x1.5/heun`` or
    ``5x5.0@paper`` (protocols: :data:`PROTOCOLS`; ``shared`` when none is given)."""

    steps: int
    guidance: float
    solver: str = "euler"
    coordinates: str = "rf"
    grid: str = "uniform"
    x0_clip: float | None = 1.0

    @classmethod
    def parse(cls, text: str) -> "SamplerSetting":
        match = _SETTING.match(text.strip())
        if match is None or int(match["steps"]) < 1:
            raise SettingError(f"sampler setting {text!r} is malformed; write STEPSxGUIDANCE[/SOLVER][@PROTOCOL], "
                           f"e.g. 25x2.0 or 5x5.0@paper")
        protocol = match["protocol"] or "shared"
        if protocol not in PROTOCOLS:
            raise SettingError(f"unknown protocol {protocol!r} in {text!r}; protocols are {', '.join(PROTOCOLS)}")
        coordinates, default_solver, x0_clip = PROTOCOLS[protocol]
        solver = match["solver"] or default_solver
        if solver not in SOLVERS:
            raise SettingError(f"unknown solver {solver!r} in {text!r}; solvers are {', '.join(SOLVERS)}")
        if solver == "ddim" and coordinates != "native":
            raise SettingError(f"solver 'ddim' in {text!r} steps along a formulation's own path; use it with @paper")
        return cls(int(match["steps"]), float(match["guidance"]), solver, coordinates, x0_clip=x0_clip)

    @property
    def protocol(self) -> str:
        return "paper" if self.coordinates == "native" else "shared"

    @property
    def label(self) -> str:
        default_solver = PROTOCOLS[self.protocol][1]
        return (f"{self.steps}x{self.guidance:g}" + ("" if self.solver == default_solver else f"/{self.solver}")
                + ("" if self.protocol == "shared" else f"@{self.protocol}"))

    def x0_clip_for(self, run) -> float | None:
        """The clip of x0-hat for a run: ``x0_clip`` in pixel space, none for a latent run (its standardised
        latents have no [-1, 1] range; its decoded images are clipped instead)."""
        return self.x0_clip if run.autoencoder is None else None

    def with_steps(self, steps: int) -> "SamplerSetting":
        """The same setting with another step count (e.g. the 1-step conditional-mean baseline)."""
        from dataclasses import replace

        return replace(self, steps=int(steps))
