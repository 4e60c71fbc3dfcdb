"""The `trajbench` command."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

from trajbench import formulations


class UserError(Exception):
    """Bad input: reported as one line on stderr with exit code 2."""


LIST_COLUMNS = ("name", "family", "paper", "prediction", "path", "density", "weighting", "params")


def list_rows(family: str | None = None) -> list[dict]:
    names = formulations.names()
    if family:
        if not any(formulations.matches_family(n, family) for n in names):
            raise UserError(f"no formulation in family {family!r}; families are {', '.join(formulations.FAMILIES)}")
        names = [n for n in names if formulations.matches_family(n, family)]
    return [formulations.describe(n) for n in names]


def format_rows(rows: list[dict], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(rows, indent=1)
    cells = [{k: (json.dumps(r[k]) if k == "params" else str(r[k])) for k in LIST_COLUMNS} for r in rows]
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=LIST_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(cells)
        return buffer.getvalue()
    widths = {k: max(len(k), *(len(c[k]) for c in cells)) for k in LIST_COLUMNS}
    lines = ["  ".join(k.ljust(widths[k]) for k in LIST_COLUMNS)]
    lines += ["  ".join(c[k].ljust(widths[k]) for k in LIST_COLUMNS) for c in cells]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def cmd_list(args) -> None:
    sys.stdout.write(format_rows(list_rows(args.family), args.format))


def cmd_plot_densities(args) -> None:
    from trajbench.report import plot_densities

    out = plot_densities(args.variants, args.out)
    print(f"wrote {out}")


def cmd_demo(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = list_rows()
    paper = sum(r["paper"] for r in rows)
    print(f"trajbench registry: {len(rows)} formulations ({paper} from the SD3 paper, {len(rows) - paper} extras)")
    (out / "formulations.csv").write_text(format_rows(rows, "csv"))
    print(f"wrote {out / 'formulations.csv'}")
    from trajbench.report import plot_densities

    print(f"wrote {plot_densities(None, out / 'densities.png')}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trajbench", description=__doc__,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("list", help="list every formulation", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--family", help="only this family or those under it (e.g. rf, rf/lognorm, edm)")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    p.set_defaults(run=cmd_list)

    plot = commands.add_parser("plot", help="plots").add_subparsers(dest="plot", required=True)
    p = plot.add_parser("densities", help="pi(t) and the effective weight over log-SNR, one curve per variant")
    p.add_argument("variants", nargs="*", help="formulation names (default: one per family)")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.set_defaults(run=cmd_plot_densities)

    p = commands.add_parser("demo", help="run the main job on the embedded default",
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="results/demo", help="output folder")
    p.set_defaults(run=cmd_demo)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (UserError, formulations.FormulationError) as error:
        print(f"trajbench: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
