"""Experiment specs: a TOML file naming variants, datasets, seeds, the training recipe and the evaluation.

A spec expands into cells (variant x dataset x seed); every cell trains with the same recipe and is scored
with the same sampler settings, so the cells of a spec are comparable. Example (``experiments/smoke.toml``)::

    name = "smoke"
    variants = ["rf/lognorm(0.00, 1.00)", "eps/linear"]
    datasets = ["synth-imagenet"]
    seeds = [0]

    [train]                # a preset of trajbench.run.config.PRESETS, then any TrainConfig field
    preset = "smoke"
    steps = 60

    [train.synth-imagenet] # optional: fields that differ for one dataset's cells
    text_words = 5

    [eval]                 # see EvalSpec
    settings = ["5x2.0", "10x2.0"]
    samples = 64

Variants are exact names (``"rf/lognorm(0.50, 0.60)"``), a family with parameters (``"rf/lognorm"``: its
variants in the paper), a glob over registered names (``"edm(-1.20, *)"``), or a set: ``"paper"`` (the SD3 paper's 61),
``"table1"`` (the 16 rows of its Table 1), ``"extras"``. ``--set key=value`` overrides any field, with
dotted keys for tables (``train.steps=200``, ``eval.samples=64``) and TOML values (``seeds=[0, 1, 2]``).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from trajbench import eval_defaults
from trajbench import formulations
from trajbench.errors import UserError, check_like
from trajbench.overrides import parse_assignment

TOP_LEVEL = ("name", "description", "variants", "datasets", "seeds", "train", "eval", "report", "grid")


class SpecError(UserError):
    """A spec that cannot be used: one line naming the field, the problem and the fix."""


@dataclass(frozen=True)
class EvalSpec:
    """How every cell is scored (see :func:`trajbench.evaluate.evaluate_run`)."""

    settings: tuple[str, ...] = eval_defaults.SETTINGS  # the defaults: trajbench.eval_defaults
    weights: tuple[str, ...] = eval_defaults.WEIGHTS
    samples: int = eval_defaults.SAMPLES
    n_boot: int = eval_defaults.N_BOOT
    checkpoint: str = eval_defaults.CHECKPOINT
    seed: int = eval_defaults.SEED
    # overrides of the judge networks' configs: fields for every dataset, and a table of a dataset's own
    # ([eval.evaluator.synth-cc12m]) that overrides them for that dataset
    evaluator: dict = field(default_factory=dict)  # the CLIP-style evaluator's
    geneval: dict = field(default_factory=dict)  # the GenEval classifier's
    grid_images: int = 8  # prompts in each cell's sample grid (0: none)
    grid_setting: str = "25x2.0"  # sampler setting of the sample grids (EMA weights)
    control_settings: tuple[str, ...] = ()  # a second protocol, ranked separately (e.g. the shared rf grid)
    control_weights: tuple[str, ...] = ("ema",)
    baseline_steps: int = 1  # every (guidance, protocol) also scored at this many steps (0: none); not ranked
    step_axis_samples: int = 32  # prompts per setting for the distance to an accurate solve (0: not measured)
    # held-out real images scored under each disturbance (the evaluator's sensitivity, `trajbench validate`): a
    # property of the evaluator, measured on more images than `samples` because FID's small-sample bias hides a
    # 1 px blur at 128 (results/README.md, "Calibration for validity")
    sensitivity_samples: int = 512
    classifier: dict = field(default_factory=dict)  # overrides of the recognisability classifier's config
    # who judges (trajbench.metrics.judges): "inhouse" | "inception:PATH" | "clip:PATH" (features of FID / KID),
    # "inhouse" | "clip:PATH" (CLIP score); $VARIABLES are expanded, and of a list the first usable entry is taken
    features: str = eval_defaults.JUDGE
    clip_score: str = eval_defaults.JUDGE
    CHOICE_FIELDS: ClassVar[tuple[str, ...]] = ("features", "clip_score")  # a string, or a list of them

    def judges(self) -> dict[str, str]:
        """The judges' identities as result rows record them: ``{"features": ..., "clip_judge": ...}`` (``inhouse``,
        ``inception:<sha256>``, ``clip:<arch>:<sha256>``; :mod:`trajbench.metrics.judges`)."""
        from trajbench.metrics.judges import identities

        return identities(self.features, self.clip_score)

    JUDGE_NETWORKS: ClassVar[tuple[str, ...]] = ("evaluator", "geneval", "classifier")  # their config overrides

    def judge_config(self, network: str, dataset: str) -> dict | None:
        """The overrides of one judge network's config on ``dataset``: the section's fields, then the dataset's
        own table over them (None: the defaults)."""
        overrides = getattr(self, network)
        values = {k: v for k, v in overrides.items() if not isinstance(v, dict)} | overrides.get(dataset, {})
        return values or None

    def judge_options(self, dataset: str) -> dict:
        """The keyword arguments of :class:`trajbench.evaluate.Judges` that this section sets for ``dataset``."""
        return {**{f"{network}_config": self.judge_config(network, dataset) for network in self.JUDGE_NETWORKS},
                "features": self.features, "clip_score": self.clip_score}

    def run_options(self, dataset: str) -> dict:
        """The keyword arguments of :func:`trajbench.evaluate.evaluate_run` that this section sets for a cell of
        ``dataset`` (besides which pairs it scores, :meth:`scored`)."""
        return {"num_samples": self.samples, "checkpoint": self.checkpoint, "seed": self.seed, "n_boot": self.n_boot,
                "step_axis_samples": self.step_axis_samples, **self.judge_options(dataset)}

    def scored(self) -> list[tuple[str, "SamplerSetting", str]]:
        """Every (weights, setting, role) a cell is scored with: role ``ranked`` (Table 1), ``control`` (the
        control protocol's own Table 1) or ``baseline`` (the ``baseline_steps``-step sampler of each guidance
        and protocol, e.g. one Euler step: the conditional mean)."""
        from trajbench.samplers import SamplerSetting

        out, seen = [], set()
        for role, settings, weights in (("ranked", self.settings, self.weights),
                                        ("control", self.control_settings, self.control_weights)):
            for text in settings:
                setting = SamplerSetting.parse(text)
                out += [(w, setting, role) for w in weights]
        labels = {s.label for _, s, _ in out}
        if self.baseline_steps:
            for w, setting, role in list(out):
                base = setting.with_steps(self.baseline_steps)
                if base.label not in labels and (w, base.label) not in seen:
                    seen.add((w, base.label))
                    out.append((w, base, "baseline"))
        return out

    def role_of(self, label: str) -> str:
        """The role of a scored setting label (see :meth:`scored`); ``baseline`` for any other label."""
        return next((role for _, setting, role in self.scored() if setting.label == label), "baseline")


@dataclass(frozen=True)
class ReportSpec:
    """What the report shows: Table 2's sampler setting and weights, the guidance of the step curves."""

    table2_setting: str = "25x2.0"
    table2_weights: str = "ema"
    curve_guidance: float | None = None  # None: the most common guidance among the settings
    curve_weights: str = "ema"


@dataclass(frozen=True)
class GridSpec:
    """How cells are run: ``multivariant`` trains cells that differ only in their formulation's parameters
    together in one compiled program (up to ``max_stack`` at a time); ``order`` is the order cells run in:
    ``"variant"`` (each variant's seeds together) or ``"seed"`` (the first seed of every variant, then the next
    seed, so a partial grid already covers every variant)."""

    ORDERS: ClassVar[tuple[str, ...]] = ("variant", "seed")

    multivariant: bool = False
    max_stack: int = 16
    order: str = "variant"


@dataclass(frozen=True)
class Cell:
    """One training run of the grid and its evaluation."""

    variant: str
    dataset: str
    seed: int

    @property
    def key(self) -> str:
        """A folder-safe unique path: ``dataset/variant-slug/seed-N``."""
        return f"{self.dataset.replace(':', '_').replace('/', '_')}/{variant_slug(self.variant)}/seed-{self.seed}"


def variant_slug(name: str) -> str:
    """``rf/lognorm(0.00, 1.00)+shift(3.00)`` -> ``rf_lognorm_0.00_1.00+shift_3.00``."""
    out = []
    for ch in name:
        out.append(ch if ch.isalnum() or ch in ".+-" else "_")
    return "_".join(part for part in "".join(out).split("_") if part)


@dataclass(frozen=True)
class ExperimentSpec:
    name: str
    variants: tuple[str, ...]
    datasets: tuple[str, ...]
    seeds: tuple[int, ...]
    train: dict
    eval: EvalSpec
    report: ReportSpec
    grid: GridSpec
    description: str = ""
    source: str = ""

    def cells(self) -> list[Cell]:
        """Every cell, in a fixed order: dataset, then variant, then seed (the order of the results table)."""
        return [Cell(v, d, s) for d in self.datasets for v in self.variants for s in self.seeds]

    def run_order(self) -> list[Cell]:
        """Every cell, in the order the grid runs them (``[grid] order``): dataset, then variant and seed nested
        as the order says."""
        if self.grid.order == "seed":
            return [Cell(v, d, s) for d in self.datasets for s in self.seeds for v in self.variants]
        return self.cells()

    def train_config(self, cell: Cell):
        """The resolved :class:`trajbench.run.config.TrainConfig` of a cell: the preset, then ``[train]``, then the
        cell's dataset table ``[train.<dataset>]`` if there is one."""
        from trajbench.run.config import resolve_config

        values = {k: v for k, v in self.train.items() if k != "preset" and not isinstance(v, dict)}
        values |= self.train.get(cell.dataset, {})
        return resolve_config(self.train.get("preset"), formulation=cell.variant, dataset=cell.dataset,
                              seed=cell.seed, **values)

    def recipe(self) -> dict:
        """What every cell's numbers depend on besides its own (variant, dataset, seed).  An external judge enters
        by its identity (the weights' content), not its path; in-house judges add nothing, so results written
        before judges could be chosen keep their recipe."""
        evaluation = _plain(dataclasses.asdict(self.eval))
        for role, judge in zip(("features", "clip_score"), self.eval.judges().values()):
            if judge == "inhouse":
                del evaluation[role]
            else:
                evaluation[role] = judge
        return {"train": dict(self.train), "eval": evaluation}

    def to_dict(self) -> dict:
        return _plain({"name": self.name, "description": self.description, "variants": self.variants,
                       "datasets": self.datasets, "seeds": self.seeds, "train": self.train,
                       "eval": dataclasses.asdict(self.eval), "report": dataclasses.asdict(self.report),
                       "grid": dataclasses.asdict(self.grid)})


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# ---- variant selection --------------------------------------------------------------------------------


def table1_variants() -> list[str]:
    """The 16 variants of the paper's Table 1, in its order."""
    from trajbench.reference import paper_table1

    return list(paper_table1()["variant"])


def resolve_variants(patterns) -> list[str]:
    """Expand names, families, globs and sets into canonical names, in order, without duplicates."""
    if isinstance(patterns, str):
        patterns = [patterns]
    registered = formulations.names()
    sets = {"paper": formulations.sd3_variants, "table1": table1_variants,
            "extras": lambda: [n for n in registered if n not in formulations.sd3_variants()]}
    chosen: list[str] = []
    for pattern in patterns:
        pattern = str(pattern).strip()
        if pattern in sets:
            found = sets[pattern]()
        elif any(ch in pattern for ch in "*?["):
            found = [n for n in registered if fnmatch.fnmatchcase(n, pattern)]
            if not found:
                raise SpecError(f"variant pattern {pattern!r} matches no registered formulation; "
                                f"see `trajbench list`")
        elif pattern in formulations.FAMILIES and "(" not in pattern and _family_has_params(pattern):
            found = [n for n in formulations.sd3_variants() if formulations.family_of(n) == pattern]
        else:
            found = [formulations.parse(pattern).name]  # raises FormulationError with suggestions
        chosen += [formulations.parse(n).name for n in found]
    return list(dict.fromkeys(chosen))


def _family_has_params(family: str) -> bool:
    return bool(formulations.FAMILIES[family].params)


# ---- loading -----------------------------------------------------------------------------------------


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"train.steps=200"`` -> (["train", "steps"], 200) (:func:`trajbench.overrides.parse_assignment`)."""
    parsed = parse_assignment(item)
    path = [p.strip() for p in parsed[0].split(".")] if parsed else []
    if not parsed or not all(path):
        raise SpecError(f"--set {item!r}: expected key=value, e.g. train.steps=200 or seeds=[0,1]")
    return path, parsed[2]


def _apply_override(raw: dict, path: list[str], value) -> None:
    if path[0] not in TOP_LEVEL:
        raise SpecError(f"--set {'.'.join(path)}: unknown field {path[0]!r}; fields are {', '.join(TOP_LEVEL)}")
    target = raw
    for part in path[:-1]:
        target = target.setdefault(part, {})
        if not isinstance(target, dict):
            raise SpecError(f"--set {'.'.join(path)}: {part!r} is not a table")
    target[path[-1]] = value


def _section(cls, raw: dict, name: str):
    raw = dict(raw.get(name, {}))
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise SpecError(f"[{name}] has unknown field(s) {', '.join(unknown)}; valid: {', '.join(fields)}")
    defaults = cls()
    for key, value in raw.items():
        like = getattr(defaults, key)
        if key in getattr(cls, "CHOICE_FIELDS", ()) and isinstance(value, list):
            like = (like,)  # a list of choices, each like the default
        check_like(f"[{name}] {key}", value, like, SpecError)
    return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in raw.items()})


def _as_list(raw: dict, name: str, kind) -> tuple:
    value = raw.get(name)
    if value is None:
        raise SpecError(f"the spec has no {name!r}; add e.g. {name} = [...]")
    value = value if isinstance(value, list) else [value]
    if not value or not all(isinstance(v, kind) for v in value):
        raise SpecError(f"{name!r} must be a non-empty list of {kind.__name__}, got {value!r}")
    return tuple(value)


def build_spec(raw: dict, *, source: str = "") -> ExperimentSpec:
    """Validate a parsed spec dict (from TOML) into an :class:`ExperimentSpec`."""
    from trajbench.run.config import PRESETS, RunError, TrainConfig
    from trajbench.samplers import SamplerSetting, SettingError

    unknown = sorted(set(raw) - set(TOP_LEVEL))
    if unknown:
        raise SpecError(f"unknown top-level field(s) {', '.join(unknown)}; fields are {', '.join(TOP_LEVEL)}")
    name = raw.get("name")
    if not isinstance(name, str) or not name or variant_slug(name) != name:
        raise SpecError(f"'name' must be a folder-safe string (letters, digits, . + -), got {name!r}")
    train = dict(raw.get("train", {}))
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"formulation", "dataset", "seed"}
    datasets = _as_list(raw, "datasets", str)
    tables = {key for key, value in train.items() if isinstance(value, dict)}
    for key in sorted(tables):
        if key not in datasets:
            raise SpecError(f"[train.{key}] names no dataset of this spec; per-dataset tables must be one of "
                            f"{', '.join(datasets)}")
    for where, fields in [("[train]", set(train) - tables), *((f"[train.{k}]", set(train[k])) for k in sorted(tables))]:
        bad = sorted(fields - train_fields - ({"preset"} if where == "[train]" else set()))
        if bad:
            raise SpecError(f"{where} has unknown or per-cell field(s) {', '.join(bad)}; "
                            f"valid: preset, {', '.join(sorted(train_fields))}")
    if "preset" in train and train["preset"] not in PRESETS:
        raise SpecError(f"[train] preset {train['preset']!r} is unknown; presets are {', '.join(PRESETS)}")
    evaluation = _section(EvalSpec, raw, "eval")
    try:
        for setting in (*evaluation.settings, evaluation.grid_setting):
            SamplerSetting.parse(setting)
    except SettingError as error:
        raise SpecError(f"[eval] {error}") from None
    if not evaluation.weights or set(evaluation.weights) - {"ema", "raw"}:
        raise SpecError(f"[eval] weights must be a subset of ['ema', 'raw'], got {list(evaluation.weights)}")
    if not evaluation.control_weights or set(evaluation.control_weights) - {"ema", "raw"}:
        raise SpecError(f"[eval] control_weights must be a subset of ['ema', 'raw'], "
                        f"got {list(evaluation.control_weights)}")
    try:
        for setting in evaluation.control_settings:
            SamplerSetting.parse(setting)
    except SettingError as error:
        raise SpecError(f"[eval] control_settings: {error}") from None
    both = {SamplerSetting.parse(s).label for s in evaluation.settings} & {
        SamplerSetting.parse(s).label for s in evaluation.control_settings}
    if both:
        raise SpecError(f"[eval] {', '.join(sorted(both))} is in both settings and control_settings; keep it in one")
    from trajbench.metrics.judges import JudgeChoiceError, resolve_choice

    try:
        evaluation = dataclasses.replace(evaluation, **{role: resolve_choice(getattr(evaluation, role), role)
                                                        for role in ("features", "clip_score")})
    except JudgeChoiceError as error:
        raise SpecError(f"[eval] {error}") from None
    _check_judge_configs(evaluation, datasets)
    for field_name, least in (("baseline_steps", 0), ("step_axis_samples", 0), ("samples", 1), ("n_boot", 1),
                              ("sensitivity_samples", 2),
                              ("grid_images", 0)):
        value = getattr(evaluation, field_name)
        if value < least:
            raise SpecError(f"[eval] {field_name} must be an integer >= {least}, got {value!r}")
    from trajbench.data import DATASET_NAMES

    for dataset in datasets:
        if ":" not in dataset and dataset not in DATASET_NAMES:
            raise SpecError(f"unknown dataset {dataset!r}; use {', '.join(DATASET_NAMES)}, folder:PATH or cifar10:PATH")
    spec = ExperimentSpec(
        name=name, description=str(raw.get("description", "")),
        variants=tuple(resolve_variants(_as_list(raw, "variants", str))),
        datasets=datasets, seeds=_as_list(raw, "seeds", int), train=train,
        eval=evaluation, report=_section(ReportSpec, raw, "report"), grid=_section(GridSpec, raw, "grid"),
        source=source)
    if spec.grid.order not in GridSpec.ORDERS:
        raise SpecError(f"[grid] order must be one of {', '.join(map(repr, GridSpec.ORDERS))}, got {spec.grid.order!r}")
    try:  # every dataset's config must resolve (catches bad values such as steps = 0)
        for dataset in datasets:
            spec.train_config(Cell(spec.variants[0], dataset, spec.seeds[0]))
    except (RunError, TypeError) as error:
        raise SpecError(f"[train] {error}") from None
    return spec


def _check_judge_configs(evaluation: EvalSpec, datasets: tuple[str, ...]) -> None:
    """Each judge network's overrides must name datasets of the spec and build a valid config on each."""
    from trajbench.auxnet.cache import EvaluatorConfigError
    from trajbench.metrics.classifier import ClassifierConfig
    from trajbench.metrics.evaluator import EvaluatorConfig
    from trajbench.metrics.geneval import GenEvalConfig

    kinds = {"evaluator": EvaluatorConfig, "geneval": GenEvalConfig, "classifier": ClassifierConfig}
    for network in EvalSpec.JUDGE_NETWORKS:
        tables = sorted(k for k, v in getattr(evaluation, network).items() if isinstance(v, dict))
        for key in tables:
            if key not in datasets:
                raise SpecError(f"[eval.{network}.{key}] names no dataset of this spec; per-dataset tables must be "
                                f"one of {', '.join(datasets)}")
        for dataset in datasets:
            try:
                kinds[network].from_any(evaluation.judge_config(network, dataset)).validate()
            except EvaluatorConfigError as error:
                raise SpecError(f"[eval.{network}] on {dataset}: {error}") from None


def load_spec(path: str | Path, overrides=()) -> ExperimentSpec:
    """Read a TOML spec and apply ``key=value`` overrides."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"spec file {path} not found; the shipped specs are in experiments/")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise SpecError(f"{path} is not valid TOML ({error}); fix the file") from None
    for item in overrides:
        _apply_override(raw, *parse_override(item))
    return build_spec(raw, source=str(path))
