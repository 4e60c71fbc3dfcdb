"""The `trajbench` command: list, plot, errors, help."""

import argparse
import json
import subprocess
import sys

import pytest

from trajbench import formulations
from trajbench.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_list_json_has_each_paper_name_once_and_extras_flagged(capsys):
    code, out, _ = run_cli(capsys, "list", "--format", "json")
    rows = json.loads(out)
    assert code == 0
    paper = [r["name"] for r in rows if r["paper"]]
    assert sorted(paper) == sorted(formulations.sd3_variants()) and len(paper) == 61
    extras = [r["name"] for r in rows if not r["paper"]]
    assert set(extras) == set(formulations.EXTRAS) and len(extras) >= 2
    row = next(r for r in rows if r["name"] == "rf/lognorm(0.00, 1.00)")
    assert row["family"] == "rf/lognorm" and row["prediction"] == "velocity" and row["params"] == {"m": 0.0, "s": 1.0}


def test_list_family_filter_and_csv(capsys):
    code, out, _ = run_cli(capsys, "list", "--family", "edm", "--format", "csv")
    lines = out.strip().splitlines()
    assert code == 0 and lines[0].startswith("name,family,paper")
    assert len(lines) - 1 == 15 + 2 + 1  # edm(...) grid, edm/rf, edm/cos, and the EDM2 extra
    code, out, _ = run_cli(capsys, "list", "--family", "rf/lognorm")
    assert code == 0 and out.count("rf/lognorm(") == 30 + 2  # plus the shifted and mixed extras


def test_unknown_family_is_a_one_line_error(capsys):
    code, out, err = run_cli(capsys, "list", "--family", "ddpm")
    assert code == 2 and out == "" and "families are" in err and err.count("\n") == 1


def test_plot_densities_writes_png_and_rejects_bad_variant(tmp_path, capsys):
    out = tmp_path / "d.png"
    code, _, _ = run_cli(capsys, "plot", "densities", "--out", str(out), "rf", "edm(-0.40, 1.00)")
    assert code == 0 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, _, err = run_cli(capsys, "plot", "densities", "--out", str(tmp_path / "x.png"), "rf/lognorm(0.00)")
    assert code == 2 and "rf/lognorm takes 2 parameter" in err and not (tmp_path / "x.png").exists()


def test_console_script_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "trajbench.cli", "list", "--family", "rf/cosmap"],
                            capture_output=True, text=True, check=True)
    assert "rf/cosmap" in result.stdout


def test_plot_densities_without_png_suffix_writes_the_path_it_prints(tmp_path, capsys):
    out = tmp_path / "densities"
    code, printed, _ = run_cli(capsys, "plot", "densities", "--out", str(out), "rf")
    assert code == 0 and printed == f"wrote {out}\n" and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def all_parsers(parser):
    """``parser`` and every subcommand's parser under it."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                yield from all_parsers(child)


def test_help_imports_no_jax_and_every_option_has_help_and_shows_its_default():
    from trajbench.cli import build_parser

    probe = "import sys, trajbench.cli; trajbench.cli.build_parser().format_help(); print('jax' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout == "False\n"
    top = subprocess.run([sys.executable, "-m", "trajbench.cli", "--help"], capture_output=True, text=True, check=True)
    assert "benchmark of diffusion trajectory formulations" in top.stdout
    for parser in all_parsers(build_parser()):
        text = " ".join(parser.format_help().split())
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            assert action.help, f"{parser.prog} {action.option_strings or action.dest} has no help"
            if action.default not in (None, []) and not action.required:
                assert f"(default: {action.default})" in text, (parser.prog, action.dest)
