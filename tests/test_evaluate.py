"""Sampler settings of `trajbench eval` / `trajbench sample`."""

import pytest

from trajbench.evaluate import SamplerSetting
from trajbench.train import RunError


def test_settings_parse_and_label():
    setting = SamplerSetting.parse("25x2.0")
    assert (setting.steps, setting.guidance, setting.solver, setting.coordinates) == (25, 2.0, "euler", "rf")
    assert setting.label == "25x2" and SamplerSetting.parse("10x1.5/heun").label == "10x1.5/heun"


@pytest.mark.parametrize("bad, message", [("25", "malformed"), ("0x2", "malformed"), ("5x2/rk4", "unknown solver")])
def test_bad_settings_are_one_line_errors(bad, message):
    with pytest.raises(RunError, match=message):
        SamplerSetting.parse(bad)
