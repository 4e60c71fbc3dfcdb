"""The results API, its figures and tables, and the `plot curves|ranks|samples` and `table` commands, checked
against a synthetic metrics.csv with the real columns: what is drawn and printed equals the rows it comes from."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trajbench import formulations, plots, results, tables
from trajbench.cli import main
from trajbench.grid import METRIC_COLUMNS, sample_grid_path
from trajbench.spec import Cell, table1_variants

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "experiments" / "smoke.toml"
BEST = "rf/lognorm(0.00, 1.00)"  # best FID and CLIP score in every setting of the fixture
TABLE1 = table1_variants()
OTHERS = [v for v in formulations.sd3_variants() if v not in TABLE1][:6]
VARIANTS = TABLE1 + OTHERS  # 22: more than plots.MAX_NAMED
DATASETS = ("synth-imagenet", "synth-cc12m")
# (label, steps, guidance, sampler, coordinates, protocol, role, weights)
SETTINGS = [(f"{n}x{g:g}@paper", n, g, "ddim", "native", "paper", "ranked", w)
            for n, g in ((5, 5.0), (10, 5.0), (25, 5.0), (50, 5.0), (50, 2.5)) for w in ("ema", "raw")]
SETTINGS += [(f"1x{g:g}@paper", 1, g, "ddim", "native", "paper", "baseline", w)
             for g in (5.0, 2.5) for w in ("ema", "raw")]
SETTINGS += [(f"{n}x5", n, 5.0, "euler", "rf", "shared", "control", "ema") for n in (5, 25)]


def synthetic_metrics() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for dataset in DATASETS:
        for variant in VARIANTS:
            for seed in (0, 1):
                for label, steps, guidance, sampler, coordinates, protocol, role, weights in SETTINGS:
                    base = {"spec": "smoke", "variant": variant, "family": formulations.family_of(variant),
                            "dataset": dataset, "seed": seed, "weights": weights, "setting": label, "steps": steps,
                            "guidance": guidance, "sampler": sampler, "coordinates": coordinates,
                            "protocol": protocol, "role": role, "nfe": 2 * steps, "samples": 32, "train_step": 40,
                            "train_seconds": 1.0, "sample_seconds": 0.1, "versions": "trajbench=0.1.0"}
                    best = variant == BEST
                    values = {"fid": 5.0 + rng.random() if best else 20 + 20 * rng.random(),
                              "clip_score": 0.9 - 0.05 * rng.random() if best else 0.2 + 0.3 * rng.random(),
                              "kid": 0.1 * rng.random()}
                    for metric, value in values.items():
                        half = 0.2 * value * rng.random()
                        rows.append({**base, "metric": metric, "value": value, "ci_low": value - half,
                                     "ci_high": value + half})
                    rows.append({**base, "metric": "ref_distance", "value": rng.random(), "ci_low": np.nan,
                                 "ci_high": np.nan})
    return pd.DataFrame(rows, columns=list(METRIC_COLUMNS))


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A results folder ``smoke/`` (the name of experiments/smoke.toml) with metrics.csv and two sample grids."""
    import matplotlib.image

    folder = tmp_path_factory.mktemp("results") / "smoke"
    folder.mkdir()
    synthetic_metrics().to_csv(folder / "metrics.csv", index=False)
    for k, variant in enumerate(("rf", "eps/linear")):
        path = sample_grid_path(folder, Cell(variant, DATASETS[0], 0))
        path.parent.mkdir(parents=True)
        matplotlib.image.imsave(path, np.full((12, 20, 3), 0.3 + 0.4 * k))
    return folder


@pytest.fixture(scope="module")
def table(root) -> pd.DataFrame:
    return results.load(root)


@pytest.fixture(scope="module")
def csv(root) -> pd.DataFrame:
    """The raw rows, read independently of trajbench."""
    return pd.read_csv(root / "metrics.csv")


def expected_curve(csv, variant, dataset, metric, guidance=5.0, seed=None):
    rows = csv[(csv["variant"] == variant) & (csv["dataset"] == dataset) & (csv["metric"] == metric)
               & (csv["protocol"] == "paper") & (csv["weights"] == "ema") & (csv["guidance"] == guidance)]
    if seed is not None:
        rows = rows[rows["seed"] == seed]
    return rows.groupby("steps")[["value", "ci_low", "ci_high"]].mean().reset_index()


def legend_labels(fig) -> list[str]:
    return [text.get_text() for legend in fig.legends for text in legend.get_texts()]


# ---- loading and selecting ----------------------------------------------------------------------------


def test_load_reads_a_spec_a_folder_or_a_file_alike(root, csv):
    by_spec = results.load(SMOKE, results=root.parent)
    by_folder, by_file = results.load(root), results.load(root / "metrics.csv")
    pd.testing.assert_frame_equal(by_spec, by_folder)
    pd.testing.assert_frame_equal(by_folder, by_file)
    assert len(by_spec) == len(csv) and list(by_spec.columns) == list(METRIC_COLUMNS)
    assert by_spec.attrs["root"] == str(root)


def test_a_spec_without_results_names_the_command_that_makes_them(tmp_path):
    with pytest.raises(results.ResultsError, match=r"no results for spec 'smoke'.*`trajbench grid run .*smoke.toml`"):
        results.load(SMOKE, results=tmp_path)


def test_select_reads_names_and_settings_in_any_spelling(table):
    rows = results.select(table, variants=["rf/lognorm(0,1)", "eps/linear"], settings="25x5.0@paper",
                          metrics="fid", datasets="synth-cc12m", weights="ema")
    assert set(rows["variant"]) == {BEST, "eps/linear"} and set(rows["setting"]) == {"25x5@paper"}
    assert len(rows) == 2 * 2  # two variants, two seeds
    family = results.select(table, families="rf")  # rf and every family under it
    assert set(family["family"]) == {f for f in table["family"] if f == "rf" or f.startswith("rf/")}
    modes = [v for v in formulations.sd3_variants() if v.startswith("rf/mode(") and v in VARIANTS]
    assert len(modes) > 2 and results.variant_names(table, ["rf/mode", "rf"]) == modes + ["rf"]
    assert set(results.select(table, protocols="shared", guidance=5)["role"]) == {"control"}


@pytest.mark.parametrize("selector, value, closest", [
    ("variants", "eps/lin", "eps/linear"), ("metrics", "fdi", "fid"), ("settings", "25x5.0@papr", "25x5@paper"),
    ("datasets", "imagenet", "synth-imagenet"), ("families", "rf/lognrm", "rf/lognorm"), ("guidance", 4.0, "5"),
    ("protocols", "papr", "paper")])
def test_unknown_values_name_the_closest_valid_ones(table, selector, value, closest):
    with pytest.raises(results.ResultsError) as error:
        results.select(table, **{selector: value})
    message = str(error.value)
    assert "\n" not in message and (f"{value:g}" if isinstance(value, float) else repr(value)) in message
    assert closest in message.split("closest: ")[1].split(", ")


def test_summarise_averages_seeds(table, csv):
    summary = results.summarise(results.select(table, metrics="fid", settings="5x5@paper", weights="ema"))
    raw = csv[(csv["metric"] == "fid") & (csv["setting"] == "5x5@paper") & (csv["weights"] == "ema")]
    means = raw.groupby(["dataset", "variant"])[["value", "ci_low", "ci_high"]].mean()
    got = summary.set_index(["dataset", "variant"])[["value", "ci_low", "ci_high"]]
    pd.testing.assert_frame_equal(got.sort_index(), means.sort_index(), check_names=False)
    assert (summary["seeds"] == 2).all()


# ---- figures --------------------------------------------------------------------------------------------

CHOSEN = [BEST, "eps/linear", "edm(-1.20, 1.20)"]


def test_curves_draw_exactly_the_rows_of_metrics_csv(table, csv):
    """One seed: each line's points and band bounds are metrics.csv's value, ci_low and ci_high at each step."""
    fig = plots.curves(results.select(table, seeds=0), variants=CHOSEN, metrics=["fid", "clip_score"],
                       protocol="paper", guidance=5.0)
    assert legend_labels(fig) == CHOSEN
    axes = np.array(fig.axes).reshape(len(DATASETS), 2)
    for r, dataset in enumerate(DATASETS):
        for c, metric in enumerate(("fid", "clip_score")):
            ax = axes[r, c]
            assert ax.get_title() == dataset and ax.get_ylabel().startswith(metric) and ax.get_xscale() == "log"
            assert sorted(line.get_gid() for line in ax.get_lines()) == sorted(CHOSEN)
            bands = {band.get_gid(): band for band in ax.collections}
            for line in ax.get_lines():
                want = expected_curve(csv, line.get_gid(), dataset, metric, seed=0)
                assert list(want["steps"]) == [1, 5, 10, 25, 50]  # the 1-step baseline is drawn
                np.testing.assert_allclose(line.get_xydata(), want[["steps", "value"]].to_numpy())
                vertices = bands[line.get_gid()].get_paths()[0].vertices
                for step, low, high in want[["steps", "ci_low", "ci_high"]].itertuples(index=False):
                    ys = vertices[np.isclose(vertices[:, 0], step), 1]
                    np.testing.assert_allclose([ys.min(), ys.max()], [low, high])


def test_curves_average_seeds_and_default_to_the_ranked_protocol(table, csv):
    fig = plots.curves(table, variants=["rf", "v/cos"], datasets="synth-imagenet", x="nfe")
    assert legend_labels(fig) == ["rf", "v/cos"] and len(fig.axes) == 1
    assert "paper protocol, guidance 5" in fig._suptitle.get_text()
    for line in fig.axes[0].get_lines():
        want = expected_curve(csv, line.get_gid(), "synth-imagenet", "fid")
        np.testing.assert_allclose(line.get_xydata(), np.c_[2 * want["steps"], want["value"]])


def test_figure3_names_the_table1_rows_and_greys_the_others(table):
    fig = plots.figure3(table)
    assert legend_labels(fig) == TABLE1 + [f"{len(OTHERS)} other variants"]
    assert len(fig.axes) == len(DATASETS) * 2  # one panel per dataset and metric
    for ax in fig.axes:
        colours = {line.get_gid(): line.get_color() for line in ax.get_lines()}
        assert set(colours) == set(VARIANTS) and not ax.collections  # no bands
        assert {colours[v] for v in OTHERS} == {plots.GREY} and plots.GREY not in {colours[v] for v in TABLE1}
        assert len({(colours[v], ax.get_lines()[VARIANTS.index(v)].get_linestyle()) for v in TABLE1}) == 16


def test_ranks_put_a_dominating_variant_first_at_every_step(table):
    fig = plots.ranks(table, variants=["eps/linear", BEST, "rf"], datasets="synth-imagenet")
    assert legend_labels(fig) == ["eps/linear", BEST, "rf"]
    lines = {line.get_gid(): line for line in fig.axes[0].get_lines()}
    np.testing.assert_array_equal(lines[BEST].get_xdata(), [5, 10, 25, 50])  # the baseline is not ranked
    np.testing.assert_array_equal(lines[BEST].get_ydata(), 1.0)
    assert all(line.get_ydata().min() > 1.0 for name, line in lines.items() if name != BEST)
    assert fig.axes[0].yaxis_inverted()


def test_samples_show_each_variants_grid_in_its_own_row(table, root):
    import matplotlib.image

    fig = plots.samples(table, variants=["eps/linear", "rf"])
    assert [ax.get_title(loc="left") for ax in fig.axes] == ["eps/linear", "rf"]
    for ax, variant in zip(fig.axes, ("eps/linear", "rf")):
        expected = matplotlib.image.imread(sample_grid_path(root, Cell(variant, DATASETS[0], 0)))
        np.testing.assert_array_equal(ax.get_images()[0].get_array(), expected)
    with pytest.raises(results.ResultsError, match=r"no sample grid for v/cos .*trajbench grid run"):
        plots.samples(table, variants=["rf", "v/cos"])


# ---- tables ---------------------------------------------------------------------------------------------


def test_compare_has_the_requested_rows_and_the_csv_numbers(table, csv):
    frame = tables.compare(table, variants=["v/cos", "rf"], settings=["25x5.0@paper", "5x5@paper"],
                           datasets="synth-imagenet")
    assert list(frame.index) == ["v/cos", "rf"]
    assert list(dict.fromkeys(frame.columns.droplevel("stat"))) == [
        ("synth-imagenet", s, m) for s in ("25x5@paper", "5x5@paper") for m in ("fid", "clip_score")]
    raw = csv[(csv["dataset"] == "synth-imagenet") & (csv["weights"] == "ema")]
    means = raw.groupby(["variant", "setting", "metric"])[["value", "ci_low", "ci_high"]].mean()
    for variant in frame.index:
        for _, setting, metric, stat in frame.columns:
            assert frame.loc[variant, ("synth-imagenet", setting, metric, stat)] == pytest.approx(
                means.loc[(variant, setting, metric), stat])


def test_compare_defaults_to_the_ranked_settings_at_the_common_guidance(table):
    frame = tables.compare(table)
    assert len(frame) == len(VARIANTS)
    assert list(dict.fromkeys(frame.columns.get_level_values("setting"))) == [
        "5x5@paper", "10x5@paper", "25x5@paper", "50x5@paper"]


@pytest.mark.parametrize("fmt, bold", [("md", r"\*\*(.+?)\*\*"), ("latex", r"\\textbf\{(.+?)\}")])
def test_the_best_value_of_each_column_is_bold(table, csv, fmt, bold):
    chosen = ["rf", "eps/linear", "v/cos", "edm/rf"]
    frame = tables.compare(table, variants=chosen, settings=["10x5@paper"], metrics=["fid", "clip_score", "kid"],
                           datasets="synth-cc12m")
    text = tables.format_table(frame, fmt)
    split = (lambda line: line.strip("|").split("|")) if fmt == "md" else (lambda line: line.rstrip(" \\").split("&"))
    body = [cells for cells in map(split, text.splitlines()) if cells[0].strip() in chosen]
    assert [cells[0].strip() for cells in body] == chosen
    raw = csv[(csv["dataset"] == "synth-cc12m") & (csv["weights"] == "ema") & (csv["setting"] == "10x5@paper")]
    means = raw.groupby(["metric", "variant"])["value"].mean()
    for column, metric in enumerate(("fid", "clip_score", "kid"), start=1):
        best = means[metric][chosen].idxmax() if metric == "clip_score" else means[metric][chosen].idxmin()
        marked = [cells[0].strip() for cells in body if re.search(bold, cells[column])]
        assert marked == [best]
        cell = next(cells[column] for cells in body if cells[0].strip() == best)
        value, low, high = re.search(r"([\d.e-]+) \[([\d.e-]+), ([\d.e-]+)\]", cell).groups()
        want = raw[(raw["metric"] == metric) & (raw["variant"] == best)][["value", "ci_low", "ci_high"]].mean()
        np.testing.assert_allclose([float(value), float(low), float(high)], want.to_numpy(), rtol=1e-3)


def test_csv_format_keeps_every_number(table):
    frame = tables.compare(table, variants=["rf", "eps/linear"], settings="50x2.5@paper")
    import io

    back = pd.read_csv(io.StringIO(tables.format_table(frame, "csv"))).set_index("variant")
    assert list(back.columns[:3]) == ["synth-imagenet 50x2.5@paper fid", "synth-imagenet 50x2.5@paper fid ci_low",
                                      "synth-imagenet 50x2.5@paper fid ci_high"]
    np.testing.assert_allclose(back.to_numpy(), frame.to_numpy())


# ---- the commands ---------------------------------------------------------------------------------------


def test_plot_commands_write_images(root, tmp_path, capsys):
    assert main(["plot", "curves", str(SMOKE), "--results", str(root.parent), "--variants", BEST, "eps/linear",
                 "edm(-1.20, 1.20)", "--metric", "fid", "clip_score", "--out", str(tmp_path / "c.png")]) == 0
    assert main(["plot", "ranks", str(root), "--family", "rf/lognorm", "--out", str(tmp_path / "r.png")]) == 0
    assert main(["plot", "samples", str(root), "--variants", "rf", "eps/linear", "--out", str(tmp_path / "s.png")]) == 0
    out = capsys.readouterr().out
    assert all(f"wrote {tmp_path / name}" in out for name in ("c.png", "r.png", "s.png"))
    assert all((tmp_path / name).stat().st_size > 1000 for name in ("c.png", "r.png", "s.png"))


def test_table_command_prints_the_requested_rows(root, capsys):
    assert main(["table", str(SMOKE), "--results", str(root.parent), "--variants", "rf", "eps/linear",
                 "--format", "md"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and [line.split("|")[1].strip() for line in lines[2:]] == ["rf", "eps/linear"]


@pytest.mark.parametrize("argv, closest", [
    (["table", "--variants", "rf", "eps/lin"], "eps/linear"),
    (["table", "--metric", "clip"], "clip_score"),
    (["table", "--setting", "25x5.0@papr"], "25x5@paper"),
    (["plot", "curves", "--variants", "rf/lognorm(0.00, 1.1)", "--out", "x.png"], BEST),
    (["plot", "curves", "--metric", "fdi", "--out", "x.png"], "fid")])
def test_bad_input_is_one_line_naming_the_closest_and_exits_2(root, capsys, argv, closest):
    command = argv[:2] if argv[0] == "plot" else argv[:1]
    assert main([*command, str(root), *argv[len(command):]]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and closest in err.split("closest: ")[1]


def test_a_spec_without_results_exits_2_naming_the_command(tmp_path, capsys):
    assert main(["table", str(SMOKE), "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "`trajbench grid run" in err
