"""The grid's cost estimate: compilations are counted by recipe and program key, as the grid and trainer share them."""

from pathlib import Path

from trajbench.estimate import compiled_programs
from trajbench.formulations import family_of, program_key
from trajbench.grid import stack_groups
from trajbench.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "experiments" / "smoke.toml"


def test_estimate_counts_one_compilation_per_recipe_and_family():
    spec = load_spec(ROOT / "experiments" / "sd3_study.toml")
    cells = spec.cells()
    assert len(cells) == 122
    programs = compiled_programs(spec, cells)
    families = {(c.dataset, family_of(c.variant)) for c in cells}
    assert len(programs) == len(families) < 30  # not one per cell: same-family cells share their programs
    assert len(compiled_programs(spec, cells[:3])) == len({family_of(c.variant) for c in cells[:3]})


def test_a_shifted_density_is_its_own_program_in_the_estimate_and_the_grid():
    shifted = ["rf/lognorm(0.00, 1.00)", "rf/lognorm(0.50, 0.60)", "rf/lognorm(0.00, 1.00)+shift(3.00)"]
    spec = load_spec(SMOKE, [f"variants={shifted!r}".replace("'", '"'), "grid.multivariant=true"])
    cells = spec.cells()
    assert len({family_of(c.variant) for c in cells}) == 1
    assert program_key(shifted[0]) == program_key(shifted[1]) != program_key(shifted[2])
    assert len(compiled_programs(spec, cells)) == 2
    assert sorted(len(group) for group in stack_groups(spec, cells)) == [1, 2]
