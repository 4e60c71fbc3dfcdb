"""The one key=value grammar of every --set-style option."""

from trajbench.overrides import parse_assignment


def test_values_are_toml_else_text():
    assert parse_assignment(" steps = 200 ") == ("steps", "200", 200)
    assert parse_assignment("seeds=[0, 1]")[2] == [0, 1]
    assert parse_assignment("lr=1e-3")[2] == 1e-3 and parse_assignment("on=true")[2] is True
    assert parse_assignment('name="x"')[2] == "x"
    assert parse_assignment("formulation=rf/lognorm(0.00, 1.00)")[2] == "rf/lognorm(0.00, 1.00)"
    assert parse_assignment("steps") is None and parse_assignment("=3") is None
