"""A grid's results as one tidy pandas table, for notebooks and for the ``plot`` and ``table`` commands::

    from trajbench import plots, results, tables

    t = results.load("experiments/quick.toml")         # or a results folder, or a metrics.csv
    rf = results.select(t, variants=["rf", "eps/linear"], metrics="fid", protocols="paper")
    plots.curves(t, variants=["rf", "eps/linear"], metrics=["fid", "clip_score"])   # a matplotlib Figure
    tables.compare(t, variants=["rf", "eps/linear"], settings=["25x5.0@paper"])     # a DataFrame

The table has one row per (variant, dataset, seed, weights, sampler setting, metric) and the columns of
:data:`trajbench.grid.METRIC_COLUMNS`. Every selector checks its values against the table and, for one that is
not there, raises :class:`ResultsError` naming the closest valid values.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import numpy as np
import pandas as pd

from trajbench import formulations
from trajbench.errors import UserError

SUMMARY_KEYS = ("spec", "variant", "family", "dataset", "weights", "setting", "steps", "guidance", "sampler",
                "coordinates", "protocol", "role", "nfe", "metric")
"""What identifies a row once the seeds are averaged (:func:`summarise`)."""


class ResultsError(UserError, ValueError):
    """Bad input to the results API (an unknown variant, metric or setting; no results yet): one line."""


def higher_is_better(metric: str) -> bool:
    """CLIP score, recognisability and GenEval scores rise with quality; FID, KID and the step-axis distances fall."""
    return metric.startswith(("clip_score", "accuracy", "geneval_"))


# ---- loading ------------------------------------------------------------------------------------------


def load(source, *, results: str | Path = "results", overrides=()) -> pd.DataFrame:
    """The tidy table of a spec (a TOML path or an :class:`~trajbench.spec.ExperimentSpec`: its
    ``RESULTS/NAME/metrics.csv``, ``overrides`` as ``--set``), a results folder, or a metrics.csv / .parquet.
    ``table.attrs["root"]`` is the results folder (its ``samples/`` hold the sample grids)."""
    from trajbench.grid import GridLayout, read_metrics
    from trajbench.spec import ExperimentSpec, load_spec

    if isinstance(source, ExperimentSpec) or Path(source).suffix == ".toml":
        spec = source if isinstance(source, ExperimentSpec) else load_spec(source, overrides)
        root = GridLayout(spec, results).root
        path, what, command = root / "metrics.csv", f"spec {spec.name!r}", spec.source or spec.name
    else:
        path = Path(source) / "metrics.csv" if Path(source).is_dir() else Path(source)
        root, what, command = path.parent, str(source), "SPEC"
    make = f"`trajbench grid run {command}` makes them (`trajbench grid collect {command}` after sharded runs)"
    if not path.is_file():
        raise ResultsError(f"no results for {what} yet ({path} not found); {make}")
    table = read_metrics(path)
    if table.empty:
        raise ResultsError(f"no results for {what} yet ({path} has no rows: no cell is done); {make}")
    table.attrs["root"] = str(root)
    return table


# ---- selecting ----------------------------------------------------------------------------------------


def as_list(values) -> list | None:
    """One value or several as a list (None stays None)."""
    if values is None:
        return None
    return [values] if np.isscalar(values) else list(values)


def unknown(kind: str, value, valid) -> ResultsError:
    """The error for a value not in the results, naming the closest valid ones."""
    valid = [str(v) for v in dict.fromkeys(valid)]
    close = difflib.get_close_matches(str(value), valid, n=3, cutoff=0.3)
    hint = (f"closest: {', '.join(close)}" if close
            else f"valid: {', '.join(valid[:8])}" + (f" and {len(valid) - 8} more" if len(valid) > 8 else ""))
    return ResultsError(f"no {kind} {value!r} in these results; {hint}")


def variant_names(table: pd.DataFrame, variants) -> list[str]:
    """The table's variants that ``variants`` names, in the order named: exact names in any spelling
    (``rf/lognorm(0,1)``), or whatever a spec accepts (a family with parameters, a glob, ``table1``)."""
    from trajbench.spec import SpecError, resolve_variants

    present = list(dict.fromkeys(table["variant"]))
    chosen = []
    for item in as_list(variants):
        try:
            found = [v for v in resolve_variants([item]) if v in present]
        except (SpecError, formulations.FormulationError):
            found = []
        if not found:
            raise unknown("variant", item, present)
        chosen += found
    return list(dict.fromkeys(chosen))


def setting_labels(table: pd.DataFrame, settings) -> list[str]:
    """Sampler settings in any spelling (``25x5.0@paper``) as the table's labels (``25x5@paper``)."""
    from trajbench.samplers import SamplerSetting, SettingError

    present = list(dict.fromkeys(table["setting"]))
    labels = []
    for item in as_list(settings):
        try:
            label = SamplerSetting.parse(str(item)).label
        except SettingError:
            label = str(item)
        if label not in present:
            raise unknown("sampler setting", item, present)
        labels.append(label)
    return labels


def _families(table: pd.DataFrame, families) -> list[str]:
    """The table's families at or under each named family (``rf`` takes ``rf/lognorm`` too)."""
    present = list(dict.fromkeys(table["family"]))
    chosen = []
    for item in as_list(families):
        found = [f for f in present if f == item or f.startswith(str(item).rstrip("/") + "/")]
        if not found:
            raise unknown("family", item, present)
        chosen += found
    return chosen


def _exact(table: pd.DataFrame, column: str, kind: str, values) -> list:
    present = list(dict.fromkeys(table[column]))
    for item in as_list(values):
        if item not in present:
            raise unknown(kind, item, present)
    return as_list(values)


def _guidance(table: pd.DataFrame, values) -> np.ndarray:
    present = np.unique(table["guidance"].to_numpy(float))
    mask = np.zeros(len(table), bool)
    for item in as_list(values):
        hit = np.isclose(table["guidance"].to_numpy(float), float(item))
        if not hit.any():
            nearest = sorted(present, key=lambda g: abs(g - float(item)))[:3]
            raise ResultsError(f"no guidance {float(item):g} in these results; closest: "
                               f"{', '.join(f'{g:g}' for g in nearest)}")
        mask |= hit
    return mask


def select(table: pd.DataFrame, *, variants=None, families=None, datasets=None, settings=None, protocols=None,
           metrics=None, weights=None, guidance=None, seeds=None, roles=None) -> pd.DataFrame:
    """The rows matching every given selector (one value or a list; None keeps all). Variants and settings are
    read as :func:`variant_names` and :func:`setting_labels` read them; a family takes the families under it."""
    mask = np.ones(len(table), bool)
    if variants is not None:
        mask &= table["variant"].isin(variant_names(table, variants)).to_numpy()
    if families is not None:
        mask &= table["family"].isin(_families(table, families)).to_numpy()
    if settings is not None:
        mask &= table["setting"].isin(setting_labels(table, settings)).to_numpy()
    if guidance is not None:
        mask &= _guidance(table, guidance)
    for column, kind, values in (("dataset", "dataset", datasets), ("protocol", "protocol", protocols),
                                 ("metric", "metric", metrics), ("weights", "weights", weights),
                                 ("seed", "seed", seeds), ("role", "role", roles)):
        if values is not None:
            mask &= table[column].isin(_exact(table, column, kind, values)).to_numpy()
    return table[mask]


# ---- summaries ----------------------------------------------------------------------------------------


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Means over seeds: one row per :data:`SUMMARY_KEYS` with ``value``, ``ci_low`` and ``ci_high`` (the means of
    the seeds' values and interval bounds) and ``seeds`` (how many), in the table's order."""
    keys = [k for k in SUMMARY_KEYS if k in table]
    return table.groupby(keys, sort=False, dropna=False).agg(
        value=("value", "mean"), ci_low=("ci_low", "mean"), ci_high=("ci_high", "mean"),
        seeds=("seed", "nunique")).reset_index()


def default_protocol(table: pd.DataFrame) -> str:
    """The protocol of the ranked rows (Table 1's), else the most common one."""
    ranked = table[table["role"] == "ranked"]
    return str((ranked if len(ranked) else table)["protocol"].mode().iloc[0])
