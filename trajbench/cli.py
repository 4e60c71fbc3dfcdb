"""trajbench: a benchmark of diffusion trajectory formulations (the SD3 paper's Section 5.1 study) in JAX.
List the formulations, train and score one, or run, report and validate a whole experiment grid."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import signal
import sys
from pathlib import Path

from trajbench import eval_defaults as defaults
from trajbench.errors import UserError
from trajbench.overrides import parse_assignment


LIST_COLUMNS = ("name", "family", "paper", "prediction", "path", "density", "weighting", "params")


def list_rows(family: str | None = None) -> list[dict]:
    from trajbench import formulations

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


def cmd_train(args) -> None:
    from trajbench.run.config import resolve_config
    from trajbench.run.folder import check_run_folder
    from trajbench.train import train

    config = resolve_config(args.preset, args.set, formulation=args.formulation, dataset=args.dataset)
    if args.dry_run:
        if not args.fresh:
            check_run_folder(args.out, config)
        print(json.dumps(dataclasses.asdict(config), indent=1))
        return
    summary = train(config, args.out, progress=not args.no_progress, fresh=args.fresh)
    best = summary["best"]
    print(f"{config.formulation}: {summary['step']} steps, final loss {summary['final_loss']:.4g}, "
          f"best EMA validation loss {best['ema_val_loss']:.4g} at step {best['step']} ({args.out})")


def cmd_sample(args) -> None:
    import numpy as np

    from trajbench.data.preview import write_image_grid
    from trajbench.evaluate import evaluation_dataset, generate_images
    from trajbench.samplers import SamplerSetting
    from trajbench.run.load import load_run

    setting = SamplerSetting.parse(f"{args.steps}x{args.guidance}/{args.solver}")
    run = load_run(args.run_dir, args.checkpoint)
    dataset = evaluation_dataset(run.config)
    captions = list(args.prompt) or dataset.captions("val", np.arange(args.n))
    tokens, pooled = run.text_encoders.encode(captions)
    images, info = generate_images(run, args.weights, setting, tokens, pooled, seed=args.seed)
    title = (f"{run.config.formulation}, step {run.step} ({args.weights}), {setting.label}, "
             f"{info['nfe']} evaluations")
    print(f"wrote {write_image_grid(images, captions, args.out, title=title)}")


def cmd_eval(args) -> None:
    from trajbench.evaluate import evaluate_run

    settings = [s for item in args.settings for s in item.split(",") if s]
    from trajbench.metrics.judges import resolve_choice

    if args.step_axis < 0 or args.step_axis == 1:
        raise UserError(f"--step-axis {args.step_axis}: use 0 (off) or at least 2 prompts")
    rows = evaluate_run(args.run_dir, settings, weights=args.weights, num_samples=args.samples,
                        checkpoint=args.checkpoint, seed=args.seed, n_boot=args.n_boot,
                        evaluator_config=parse_assignments(args.evaluator_set, "--evaluator-set") or None,
                        geneval_config=parse_assignments(args.geneval_set, "--geneval-set") or None,
                        step_axis_samples=args.step_axis, features=resolve_choice(args.features, "features"),
                        clip_score=resolve_choice(args.clip_score, "clip_score"))
    if args.format == "json":
        for row in rows:
            print(json.dumps(row))
        return
    for row in rows:
        axis = (f"  ref {row['ref_distance']:.3f}  straightness {row['straightness']:.3f}"
                if "ref_distance" in row else "")
        print(f"{row['weights']:>4} {row['setting']:>12}  nfe {row['nfe']:>3}  FID {row['fid']:8.3f} "
              f"[{row['fid_ci'][0]:.2f}, {row['fid_ci'][1]:.2f}]  CLIP {row['clip_score']:.4f}  KID {row['kid']:.4f}"
              f"  accuracy {row.get('accuracy', float('nan')):.3f}{axis}")


def parse_assignments(items, option: str) -> dict:
    """``["steps=250", "widths=[8,8]"]`` -> ``{"steps": 250, "widths": [8, 8]}``
    (:func:`trajbench.overrides.parse_assignment`)."""
    values = {}
    for item in items:
        parsed = parse_assignment(item)
        if parsed is None:
            raise UserError(f"{option} {item!r}: expected key=value")
        values[parsed[0]] = parsed[2]
    return values


def cmd_convert_weights(args) -> None:
    """A local PyTorch checkpoint -> the .npz the JAX networks read (needs torch; open_clip for CLIP)."""
    if args.network == "clip":
        from trajbench.metrics.clip import convert_open_clip

        out = convert_open_clip(args.model, args.checkpoint, args.out, bpe_path=args.bpe)
    else:
        from trajbench.metrics.inception import convert_inception_checkpoint

        out = convert_inception_checkpoint(args.checkpoint, args.out)
    print(f"wrote {out}; use it as {args.network}:{out}")


def cmd_evaluator_report(args) -> None:
    from trajbench.metrics.report import format_report, report_json

    text = report_json(args.dataset, args.resolution, seed=args.seed)
    print(text if args.format == "json" else format_report(json.loads(text)))


def cmd_data_preview(args) -> None:
    from trajbench.data import get_dataset
    from trajbench.data.preview import write_preview

    dataset = get_dataset(args.dataset, resolution=args.resolution)
    print(f"wrote {write_preview(dataset, args.out, n=args.n)}")


def cmd_demo(args) -> None:
    """The main job on the embedded default: the registry and its densities, the two datasets, then the grid of
    ``--spec`` (by default ``experiments/smoke.toml``, a pipeline check in about a minute) trained, scored, ranked
    and reported, and our Table 1 printed beside the paper's."""
    from trajbench.data import DATASET_NAMES, get_dataset
    from trajbench.data.preview import write_preview
    from trajbench.grid import GridLayout, run_grid
    from trajbench.report import plot_densities

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = list_rows()
    paper = sum(r["paper"] for r in rows)
    print(f"trajbench registry: {len(rows)} formulations ({paper} from the SD3 paper, {len(rows) - paper} extras)")
    (out / "formulations.csv").write_text(format_rows(rows, "csv"))
    print(f"wrote {out / 'formulations.csv'}")
    print(f"wrote {plot_densities(None, out / 'densities.png')}")
    for name in DATASET_NAMES:
        print(f"wrote {write_preview(get_dataset(name, resolution=32), out / f'{name}.png')}")
    spec = load_spec_args(args)
    counts = run_grid(spec, out, progress=not args.no_progress)
    if counts.get("failed"):
        raise UserError(f"{counts['failed']} cell(s) failed; `trajbench grid status {args.spec} --results {out}` "
                        f"shows why")
    root = GridLayout(spec, out).root
    metrics = read_metrics_of(root)
    _write_report(spec, root, metrics)
    print(f"wrote the report of {spec.name} to {root / 'README.md'}\n")
    _print_comparison(spec, root, metrics)


def load_spec_args(args):
    from trajbench.spec import load_spec

    return load_spec(args.spec, args.set)


def cmd_grid_run(args) -> None:
    from trajbench.grid import parse_shard, run_grid, shard_cells
    from trajbench.estimate import estimate_grid_seconds, format_seconds

    spec = load_spec_args(args)
    shard = parse_shard(args.shard)
    if args.dry_run:
        cells = shard_cells(spec, shard)
        for cell in cells:
            print(f"{cell.dataset:>16}  seed {cell.seed}  {cell.variant}")
        config = spec.train_config(cells[0]) if cells else None
        estimate = estimate_grid_seconds(spec, cells)
        print(json.dumps({"spec": spec.to_dict(), "train_config": dataclasses.asdict(config) if config else None,
                          "estimate": estimate}, indent=1))
        print(f"{len(cells)} cells; estimated wall time on this machine {format_seconds(estimate['total_seconds'])} "
              f"(matmul peak {estimate['matmul_peak_gflops']} GFLOP/s)")
        return
    counts = run_grid(spec, args.results, shard=shard, retry_failed=args.retry_failed, progress=not args.no_progress)
    print(f"{spec.name}: " + ", ".join(f"{n} {state}" for state, n in counts.items() if n))
    if counts.get("failed"):
        raise UserError(f"{counts['failed']} cell(s) failed; `trajbench grid status {args.spec}` shows why, "
                        f"--retry-failed runs them again")


def cmd_grid_status(args) -> None:
    from trajbench.grid import grid_status

    spec = load_spec_args(args)
    status = grid_status(spec, args.results)
    if args.format == "json":
        print(json.dumps(status, indent=1))
        return
    for row in status["cells"]:
        if "reason" in row:
            note = f"  ({row['reason']})"
        elif row["state"] == "done" and _done_note(row):
            note = f"  ({_done_note(row)})"
        elif "steps" in row:
            scoring = row["state"] == "running" and row["step"] >= row["steps"]
            resumes = f", resumes from {row['resume_step']}" if row.get("resume_step", row["step"]) < row["step"] else ""
            note = f"  (step {row['step']} of {row['steps']}" + (", scoring)" if scoring else resumes + ")")
        else:
            note = ""
        print(f"{row['state']:>8}  {row['dataset']:>16}  seed {row['seed']}  {row['variant']}{note}")
    left = status["seconds_left"]
    eta = "" if left is None else "; about " + (f"{left / 60:.0f} min" if left < 7200 else f"{left / 3600:.1f} h") \
        + " left at the done cells' median cost"
    print(", ".join(f"{n} {state}" for state, n in status["counts"].items()) + eta)


def _done_note(row: dict) -> str:
    """What a done cell cost and scored: ``79 min; ema 50x5@paper: FID 6.87, CLIP 0.885, recognisability 0.930,
    1-step FID / FID 2.52``."""
    parts = [] if row.get("seconds") is None else [f"{row['seconds'] / 60:.0f} min"]
    scores = row.get("headline")
    if scores:
        named = [("FID", "fid", ".2f"), ("CLIP", "clip_score", ".3f"), ("recognisability", "accuracy", ".3f")]
        text = ", ".join(f"{name} {scores[key]:{fmt}}" for name, key, fmt in named if scores.get(key) is not None)
        if scores.get("baseline_fid") is not None and scores.get("fid"):
            text += f", {scores['baseline_steps']}-step FID / FID {scores['baseline_fid'] / scores['fid']:.2f}"
        parts.append(f"{scores['setting']}: {text}")
    return "; ".join(parts)


def cmd_grid_collect(args) -> None:
    from trajbench.grid import GridLayout, collect

    spec = load_spec_args(args)
    table = collect(spec, args.results)
    print(f"wrote {GridLayout(spec, args.results).metrics_csv} ({len(table)} rows)")


def read_metrics_of(root: Path):
    from trajbench.grid import read_metrics

    return read_metrics(root / "metrics.csv")


def _metrics_for(args):
    from trajbench.grid import GridLayout, read_metrics

    spec = load_spec_args(args)
    root = GridLayout(spec, args.results).root
    path = args.metrics or root / "metrics.csv"
    metrics = read_metrics(path)
    if metrics.empty:
        raise UserError(f"{path} has no rows: no cell of {spec.name} is done; `trajbench grid status {args.spec}` "
                        f"shows why, `trajbench grid run {args.spec} --retry-failed` runs failed cells again")
    return spec, root, metrics


def _validity(spec, root: Path, metrics):
    """(gates, sensitivity tables) of a grid's results; the sensitivity tables are computed once and stored."""
    from trajbench.validity import check_gates, ensure_sensitivity

    datasets = list(dict.fromkeys(metrics["dataset"])) if len(metrics) else []
    sensitivities = {d: ensure_sensitivity(spec, root, d) for d in datasets}
    return check_gates(metrics, sensitivities, spec.report.curve_guidance, spec.cells()), sensitivities


def _validity_markdown(spec, root: Path, metrics) -> str:
    from trajbench.validity import validity_markdown

    gates, sensitivities = _validity(spec, root, metrics)
    return validity_markdown(gates, sensitivities, metrics)


def _write_report(spec, root: Path, metrics) -> dict:
    from trajbench.report import write_report

    return write_report(metrics, root, name=spec.name, table2_setting=spec.report.table2_setting,
                        table2_weights=spec.report.table2_weights, curve_guidance_value=spec.report.curve_guidance,
                        curve_weights=spec.report.curve_weights, validity=_validity_markdown(spec, root, metrics))


def _print_comparison(spec, root: Path, metrics, fmt: str = "markdown") -> None:
    from trajbench.paper import compare, format_comparison
    from trajbench.paper_tables import ranked_rows, table1

    ranked = ranked_rows(metrics)
    result = compare(table1(ranked).drop(columns="family"), ranked)
    if fmt == "json":
        from trajbench.validity import gate_lines

        gates, _ = _validity(spec, root, metrics)
        print(json.dumps({"table": result["table"].to_dict("records"),
                          "correlations": result["correlations"].to_dict("records"),
                          "findings": result["findings"],
                          "validity": {"passed": all(g.passed for g in gates), "gates": gate_lines(gates)}},
                         indent=1, default=float))
    else:
        print(_validity_markdown(spec, root, metrics))
        print(format_comparison(result))


def cmd_report(args) -> None:
    spec, root, metrics = _metrics_for(args)
    out = _write_report(spec, root, metrics)
    print(f"wrote {root / 'README.md'}, table1.csv, table2.csv, tables.md, tables.tex, {', '.join(out['figures'])}")


def cmd_compare_paper(args) -> None:
    spec, root, metrics = _metrics_for(args)
    _print_comparison(spec, root, metrics, args.format)


def cmd_validate(args) -> None:
    """Print the sensitivity tables and every gate; exit 1 when one fails (sys.exit, after printing)."""
    from trajbench.validity import sensitivity_markdown

    spec, root, metrics = _metrics_for(args)
    gates, sensitivities = _validity(spec, root, metrics)
    for dataset, table in sensitivities.items():
        print(f"evaluator sensitivity, {dataset} ({table['n']} held-out real images):")
        print(sensitivity_markdown(table))
        print()
    for gate in gates:
        print(gate.line())
    failed = [g for g in gates if not g.passed]
    print(f"{len(gates) - len(failed)} of {len(gates)} gates pass" + (f"; {len(failed)} FAIL" if failed else ""))
    if failed:
        raise SystemExit(1)


def _on_results(command):
    """A command on a grid's results table; the results API's bad input is a user error (one line, exit 2)."""
    def run(args) -> None:
        from trajbench.results import ResultsError, load

        try:
            command(args, load(args.spec, results=args.results, overrides=args.set))
        except ResultsError as error:
            raise UserError(str(error)) from None
    return run


@_on_results
def cmd_plot_curves(args, table) -> None:
    from trajbench.plots import curves, save

    figure = curves(table, variants=args.variants, families=args.family, metrics=args.metric, datasets=args.dataset,
                    guidance=args.guidance, weights=args.weights, protocol=args.protocol, x=args.x)
    print(f"wrote {save(figure, args.out)}")


@_on_results
def cmd_plot_ranks(args, table) -> None:
    from trajbench.plots import ranks, save

    figure = ranks(table, variants=args.variants, families=args.family, datasets=args.dataset, protocol=args.protocol)
    print(f"wrote {save(figure, args.out)}")


@_on_results
def cmd_plot_samples(args, table) -> None:
    from trajbench.plots import samples, save

    print(f"wrote {save(samples(table, variants=args.variants, dataset=args.dataset, seed=args.seed), args.out)}")


@_on_results
def cmd_table(args, table) -> None:
    from trajbench.tables import compare, format_table

    frame = compare(table, variants=args.variants, families=args.family, settings=args.setting, metrics=args.metric,
                    datasets=args.dataset, weights=args.weights)
    print(format_table(frame, args.format).rstrip("\n"))


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default after its help; an option with no default (None, or an empty list) says in its
    help what happens without it."""

    def _get_help_string(self, action):
        empty = action.default is None or action.default == []
        return action.help if empty or action.required else super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """An argument parser whose help shows every option's default and whose errors are one line: the problem,
    then where the help is (exit 2)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return int(text)


def png_file(text: str) -> str:
    """An argparse type: a PNG file to write (not an existing folder)."""
    if Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file name such as {Path(text) / 'out.png'}")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="trajbench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("list", help="list every formulation")
    p.add_argument("--family", help="only this family or those under it (e.g. rf, rf/lognorm, edm); default: all")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table", help="output format")
    p.set_defaults(run=cmd_list)

    plot = commands.add_parser("plot", help="plots").add_subparsers(dest="plot", required=True)
    p = plot.add_parser("densities", help="pi(t) and the effective weight over log-SNR, one curve per variant")
    p.add_argument("variants", nargs="*", help="formulation names (default: one per family)")
    p.add_argument("--out", required=True, type=png_file, help="PNG file to write")
    p.set_defaults(run=cmd_plot_densities)

    p = commands.add_parser("train", help="train one formulation on one dataset")
    p.add_argument("--formulation", required=True, help='e.g. "rf/lognorm(0.00, 1.00)"')
    p.add_argument("--dataset", required=True, help="synth-imagenet, synth-cc12m, folder:PATH or cifar10:PATH")
    p.add_argument("--preset", choices=("smoke", "quick", "study"), default="smoke",
                   help="the config's starting point: smoke (seconds on a CPU), quick (minutes), study (the paper's "
                        "recipe at small scale)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field (repeatable); default: the preset's values")
    p.add_argument("--out", required=True, help="run folder (resumed if it exists)")
    p.add_argument("--fresh", action="store_true", help="start over: discard the run that --out holds")
    p.add_argument("--dry-run", action="store_true", help="check the config and --out, print the config and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=cmd_train)

    p = commands.add_parser("sample", help="a grid of samples from a trained run, with their prompts")
    p.add_argument("run_dir", help="a run folder written by `trajbench train`")
    p.add_argument("--steps", type=positive_int, default=25, help="sampler steps")
    p.add_argument("--guidance", type=float, default=2.0, help="classifier-free guidance scale (1 = none)")
    p.add_argument("--solver", default="euler", help="euler, heun or dopri5")
    p.add_argument("--weights", choices=("ema", "raw"), default="ema", help="EMA or raw network weights")
    p.add_argument("--checkpoint", default="best", help="best, last, or a kept step")
    p.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable); default: validation captions")
    p.add_argument("-n", type=positive_int, default=16, help="number of validation prompts when no --prompt is given")
    p.add_argument("--seed", type=int, default=0, help="sampling noise seed")
    p.add_argument("--out", required=True, type=png_file, help="PNG file to write")
    p.set_defaults(run=cmd_sample)

    p = commands.add_parser("eval", help="sample and score a trained run (FID, CLIP score, KID, GenEval)")
    p.add_argument("run_dir", help="a run folder written by `trajbench train`")
    p.add_argument("--settings", nargs="+", default=[",".join(defaults.SETTINGS)],
                   help="sampler settings STEPSxGUIDANCE[/SOLVER], space or comma separated")
    p.add_argument("--weights", nargs="+", choices=("ema", "raw"), default=list(defaults.WEIGHTS),
                   help="EMA and/or raw network weights")
    p.add_argument("--samples", type=positive_int, default=defaults.SAMPLES, help="generated images per setting")
    p.add_argument("--checkpoint", default=defaults.CHECKPOINT, help="best, last, or a kept step")
    p.add_argument("--seed", type=int, default=defaults.SEED, help="sampling noise seed")
    p.add_argument("--n-boot", type=positive_int, default=defaults.N_BOOT,
                   help="bootstrap replicates per confidence interval")
    p.add_argument("--evaluator-set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of the CLIP-style evaluator's config (part of its cache key)")
    p.add_argument("--geneval-set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of the GenEval classifier's config (part of its cache key)")
    p.add_argument("--step-axis", type=int, default=0, metavar="K",
                   help="also measure the distance to an accurate solve and straightness on K prompts")
    p.add_argument("--features", default=defaults.JUDGE, metavar="JUDGE",
                   help="features of FID / KID: inhouse, inception:PATH or clip:PATH (a converted .npz)")
    p.add_argument("--clip-score", default=defaults.JUDGE, metavar="JUDGE",
                   help="CLIP score by: inhouse or clip:PATH")
    p.add_argument("--format", choices=("table", "json"), default="table", help="output format")
    p.set_defaults(run=cmd_eval)

    p = commands.add_parser("convert-weights", help="convert a local PyTorch checkpoint (Inception, CLIP) to the "
                            ".npz trajbench reads (needs torch; CLIP also open_clip)",
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("network", choices=("inception", "clip"), help="which network the checkpoint holds")
    p.add_argument("checkpoint", help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth, an OpenCLIP checkpoint "
                                      "or OpenAI's ViT-*.pt")
    p.add_argument("--out", required=True, help=".npz file to write")
    p.add_argument("--model", default="ViT-B-32", help="CLIP: the OpenCLIP model name (ViT-B-32, ViT-L-14, ...)")
    p.add_argument("--bpe", help="CLIP: the tokenizer's bpe_simple_vocab_16e6.txt.gz (default: open_clip's copy)")
    p.set_defaults(run=cmd_convert_weights)

    evaluator = commands.add_parser("evaluator", help="the in-house evaluator networks").add_subparsers(
        dest="evaluator", required=True)
    p = evaluator.add_parser("report", help="evaluator quality: retrieval accuracy and the FID floor")
    p.add_argument("--dataset", required=True, help="synth-imagenet, synth-cc12m, folder:PATH or cifar10:PATH")
    p.add_argument("--resolution", type=positive_int, default=16, help="image size in pixels")
    p.add_argument("--seed", type=int, default=0, help="the evaluator's training seed")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    p.set_defaults(run=cmd_evaluator_report)

    data = commands.add_parser("data", help="datasets").add_subparsers(dest="data", required=True)
    p = data.add_parser("preview", help="a grid of examples with their captions")
    p.add_argument("dataset", help="synth-imagenet, synth-cc12m, folder:PATH or cifar10:PATH")
    p.add_argument("--out", required=True, type=png_file, help="PNG file to write")
    p.add_argument("-n", type=positive_int, default=16, help="number of examples")
    p.add_argument("--resolution", type=positive_int, default=32, help="image size in pixels")
    p.set_defaults(run=cmd_data_preview)

    def spec_command(parent, name, help_text):
        p = parent.add_parser(name, help=help_text)
        p.add_argument("spec", help="experiment spec (TOML), e.g. experiments/quick.toml")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a spec field, e.g. train.steps=200 or seeds=[0,1,2]")
        p.add_argument("--results", default="results", help="results root; the spec's results go in RESULTS/NAME")
        return p

    grid = commands.add_parser("grid", help="experiment grids").add_subparsers(dest="grid", required=True)
    p = spec_command(grid, "run", "train and score every cell of a spec (resumable, failure-isolated, shardable)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved cells and a wall-time estimate")
    p.add_argument("--shard", help="run only cells i, i+n, ... as worker i of n (i/n), or auto from the environment; "
                                         "default: every cell")
    p.add_argument("--retry-failed", action="store_true", help="run failed cells again")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=cmd_grid_run)
    p = spec_command(grid, "status", "done / running / failed / partial / pending per cell")
    p.add_argument("--format", choices=("table", "json"), default="table", help="output format")
    p.set_defaults(run=cmd_grid_status)
    p = spec_command(grid, "collect", "write metrics.csv from the finished cells (after sharded runs)")
    p.set_defaults(run=cmd_grid_collect)

    p = spec_command(commands, "report", "tables (CSV, Markdown, LaTeX), figures and README.md from metrics.csv")
    p.add_argument("--metrics", help="a metrics.csv to report on (default: RESULTS/NAME/metrics.csv)")
    p.set_defaults(run=cmd_report)
    p = spec_command(commands, "compare-paper", "our Table 1 beside the paper's, correlations and findings")
    p.add_argument("--metrics", help="a metrics.csv (default: RESULTS/NAME/metrics.csv)")
    p.add_argument("--format", choices=("markdown", "json"), default="markdown", help="output format")
    p.set_defaults(run=cmd_compare_paper)

    p = spec_command(commands, "validate", "do the study's models pass the validity gates? (exit 1 if not)")
    p.add_argument("--metrics", help="a metrics.csv (default: RESULTS/NAME/metrics.csv)")
    p.set_defaults(run=cmd_validate)

    def results_command(parent, name, help_text):
        p = spec_command(parent, name, help_text + " (SPEC may also be a results folder or a metrics.csv)")
        p.add_argument("--variants", nargs="+", metavar="V", help="variants, families with parameters or table1")
        p.add_argument("--dataset", help="one dataset (default: every dataset)")
        return p

    p = results_command(plot, "curves", "a metric against sampling steps, one line per variant with its interval")
    p.add_argument("--family", nargs="+", metavar="F", help="only the variants of these families (e.g. rf, edm)")
    p.add_argument("--metric", nargs="+", default=["fid"], help="one panel per metric (fid, clip_score, kid, ...)")
    p.add_argument("--guidance", type=float, help="default: the most common guidance")
    p.add_argument("--weights", choices=("ema", "raw"), default="ema", help="EMA or raw network weights")
    p.add_argument("--protocol", choices=("paper", "shared"), help="default: the ranked protocol")
    p.add_argument("--x", choices=("steps", "nfe"), default="steps", help="x axis (log scale)")
    p.add_argument("--out", required=True, help="image file to write (PNG, PDF, SVG)")
    p.set_defaults(run=cmd_plot_curves)
    p = results_command(plot, "ranks", "mean non-dominated-sorting rank against sampling steps")
    p.add_argument("--family", nargs="+", metavar="F", help="only the variants of these families")
    p.add_argument("--protocol", choices=("paper", "shared"), help="default: the ranked protocol")
    p.add_argument("--out", required=True, help="image file to write")
    p.set_defaults(run=cmd_plot_ranks)
    p = results_command(plot, "samples", "the sample grids of several variants, one per row, same prompts")
    p.add_argument("--seed", type=int, help="training seed (default: the smallest)")
    p.add_argument("--out", required=True, help="image file to write")
    p.set_defaults(run=cmd_plot_samples)
    p = results_command(commands, "table", "chosen variants at chosen settings with intervals, best in bold")
    p.add_argument("--family", nargs="+", metavar="F", help="only the variants of these families")
    p.add_argument("--setting", nargs="+", metavar="S",
                   help="sampler settings, e.g. 25x5.0@paper (default: the ranked ones at the most common guidance)")
    p.add_argument("--metric", nargs="+", help="default: fid clip_score")
    p.add_argument("--weights", choices=("ema", "raw"), default="ema", help="EMA or raw network weights")
    p.add_argument("--format", choices=("md", "latex", "csv"), default="md", help="output format")
    p.set_defaults(run=cmd_table)

    p = commands.add_parser("demo", help="the whole chain on a study that runs in about a minute (train, score, "
                                         "rank, report, Table 1 beside the paper's); its models do not pass "
                                         "`trajbench validate`")
    p.add_argument("--out", default="results/demo", help="output folder (the grid's results folder)")
    p.add_argument("--spec", default="experiments/smoke.toml",
                   help="the study to run (experiments/quick.toml: the 16 Table 1 variants at the calibrated recipe, "
                        "about 40 h on a 2-core CPU)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a spec field")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(run=cmd_demo)
    return parser


def is_user_error(error: Exception) -> bool:
    """Errors caused by input, reported in one line: bad names, bad specs, missing or unusable files, diverged
    runs (every :class:`trajbench.errors.UserError`)."""
    return isinstance(error, (UserError, FileNotFoundError))


def enable_compilation_cache() -> None:
    """Keep compiled XLA programs on disk (``$JAX_COMPILATION_CACHE_DIR``, else ``$TRAJBENCH_CACHE/xla``, else
    ``~/.cache/trajbench/xla``), so the cells of a grid and a resumed run do not compile the same step again.
    Every program is kept, not only those over jax's default 1 s of compile time: a run's dozens of small
    programs (initialisation, validation, EMA, sampling) otherwise compile again in every process
    (measured in benchmarks/README.md).
    Before jax is imported this only sets the environment jax reads (so commands that never need jax stay fast)."""
    import os

    root = Path(os.environ.get("TRAJBENCH_CACHE") or Path.home() / ".cache" / "trajbench").expanduser()
    settings = {"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": ("jax_persistent_cache_min_compile_time_secs", 0.0),
                "JAX_COMPILATION_CACHE_DIR": ("jax_compilation_cache_dir", str(root / "xla"))}
    for variable, (option, value) in settings.items():
        if os.environ.get(variable):
            continue  # jax reads it itself
        if "jax" in sys.modules:
            sys.modules["jax"].config.update(option, value)
        else:
            os.environ[variable] = str(value)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    enable_compilation_cache()
    try:
        args.run(args)
    except KeyboardInterrupt as error:
        from trajbench.run.folder import StopRequested

        if isinstance(error, StopRequested):
            print(f"trajbench: {error}; run the same command again to resume from there", file=sys.stderr)
            return 128 + signal.SIGTERM
        resumable = args.command in ("train", "grid", "demo")
        print("trajbench: interrupted" + ("; run the same command again to resume from the last checkpoint"
                                          if resumable else ""), file=sys.stderr)
        return 130
    except Exception as error:
        if not is_user_error(error):
            raise
        print(f"trajbench: error: {' '.join(str(error).splitlines())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
