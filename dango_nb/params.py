"""Validated parameter sets for the notebooks (one YAML file per notebook).

Every notebook reads ``params/<notebook stem>.yaml`` (``make report PARAMS=<dir>`` switches the whole
directory, e.g. ``params/tiny``). A file is checked against the notebook's schema (dataclasses below)
before any work: an unknown key, a missing required key or a wrong type raises :class:`ParamsError`
naming the file, the key and what was allowed.

Relative data paths (``string_file``, ``kuzmin_file``, ``earlier_string``, ...) are looked up in
``data.data_dir`` when it is set, else in ``$DANGO_DATA_DIR`` / the user cache
(:func:`dango_nb.data.download.data_dir`); absolute paths are used as they are.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Union

import yaml

from .argtypes import MAX_SEED
from .errors import ParamsError, shown, shown_key
from .eval.options import EvaluationOptions
from .fileio import check_folder_path, check_path_length, load_yaml
from .schedules import SCHEDULES
from .train.config import MAX_EPOCHS, TrainConfig

#: Upper bounds of notebook counts (beyond them a notebook would only exhaust memory).
MAX_NEGATIVES, MAX_BATCH = 1000, 10_000_000

__all__ = [
    "NOTEBOOKS", "SCHEMAS", "DataParams", "LambdaParams", "PretrainingParams", "LossSchedulesParams",
    "EvaluationParams", "EvaluationOptions", "ParamsError", "load_params", "load_param_dir", "params_from_mapping",
    "params_to_dict", "run_name", "load_lambdas", "default_lambdas_file",
]

#: Notebook stems in execution order; ``params/<stem>.yaml`` holds each one's parameters.
NOTEBOOKS = ("01_lambda_determination", "02_pretraining", "03_loss_schedules", "04_evaluation")
#: Other files a parameter directory may hold: a run (``dango-nb train``) and a sweep (``dango-nb sweep``),
#: validated by :mod:`dango_nb.runs`.
RUN_FILES = ("train", "sweep")

#: The paper's percentages of decreased zeros (STRING v9.1 -> v10) for the two channels it quotes.
PAPER_REFERENCE_PCT = {"cooccurence": 0.02, "coexpression": 2.42}


def run_name(stem: str) -> str:
    """``"03_loss_schedules"`` -> ``"loss_schedules"`` (the report folder of that notebook)."""
    head, _, tail = stem.partition("_")
    return tail if head.isdigit() and tail else stem


# --------------------------------------------------------------------------------------- schemas
@dataclass
class DataParams:
    """Where the study comes from.

    Default: the embedded synthetic benchmark (``preset``, ``seed``), generated into ``data_dir``
    (or ``$DANGO_DATA_DIR`` / the user cache) and read back through the real-format loaders. Real data:
    give ``kuzmin_file`` plus either ``string_file`` (a STRING ``protein.links.detailed`` file) or
    ``dango_folder`` (the DANGO release's per-channel adjacency files).
    """

    preset: Literal["tiny", "small", "kuzmin"] = "small"
    seed: int = 0
    data_dir: str | None = None
    string_file: str | None = None
    dango_folder: str | None = None
    kuzmin_file: str | None = None

    def __post_init__(self):
        if not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed: expected an integer from 0 to {MAX_SEED}, got {shown(self.seed)}")
        for key in ("string_file", "dango_folder", "kuzmin_file"):
            if getattr(self, key) is not None:
                check_path_length(getattr(self, key), key)
        if self.data_dir is not None:
            check_folder_path(self.data_dir, "data_dir")
        if self.kuzmin_file is None and (self.string_file or self.dango_folder):
            raise ValueError("string_file / dango_folder need kuzmin_file as well (real data needs both)")
        if self.kuzmin_file is not None and not (self.string_file or self.dango_folder):
            raise ValueError("kuzmin_file needs string_file or dango_folder as well")
        if self.string_file and self.dango_folder:
            raise ValueError("give string_file or dango_folder, not both")

    @property
    def real(self) -> bool:
        return self.kuzmin_file is not None

    def root(self) -> Path:
        if self.data_dir is not None:
            return Path(os.path.expanduser(self.data_dir))
        from .data.download import data_dir

        return Path(data_dir())

    def resolve(self, path: str) -> Path:
        """An absolute path as is; a relative one inside :meth:`root`. A bare file name missing there
        goes through :func:`dango_nb.data.download.fetch` (downloads known files such as
        ``4932.protein.links.detailed.v11.0.txt.gz`` when online, else says where to put it)."""
        p = Path(os.path.expanduser(path))
        if p.is_absolute():
            return p
        local = self.root() / p
        if local.exists() or len(p.parts) != 1:
            return local
        from .data.download import fetch

        return fetch(str(p), folder=self.root())

    def benchmark_dir(self) -> Path:
        """Where the embedded benchmark of ``preset`` + ``seed`` is generated (and reused)."""
        from .data.study import benchmark_dir

        return benchmark_dir(self.preset, self.seed, self.data_dir)

    def load_study(self):
        """The :class:`~dango_nb.data.study.Study` these parameters describe."""
        from .data import study as study_mod

        if self.real:
            string = self.resolve(self.string_file or self.dango_folder)
            return study_mod.load_study_from_files(string, self.resolve(self.kuzmin_file))
        return study_mod.load_study(preset=self.preset, seed=self.seed, data_dir=self.data_dir)


def _check_lambdas_file(path: str | None) -> None:
    """A lambda file's name is checked with the other keys (the notebooks read it later; the file itself
    may be written by the lambda notebook of the same report)."""
    if path is not None:
        check_path_length(path, "lambdas_file")


@dataclass
class LambdaParams:
    """``01_lambda_determination``: compare an earlier and a later STRING release.

    Without ``earlier_string`` / ``later_string`` the embedded benchmark's v9.1 and v11.0 releases are
    compared (``data.preset``, ``data.seed``). A channel whose percentage of decreased zeros exceeds
    ``threshold_pct`` gets lambda 0.1, else 1.0 (:func:`dango_nb.lambdas.determine_lambdas`).
    """

    data: DataParams = field(default_factory=DataParams)
    earlier_string: str | None = None
    later_string: str | None = None
    threshold_pct: float = 1.0
    reference_pct: dict[str, float] = field(default_factory=lambda: dict(PAPER_REFERENCE_PCT))

    def __post_init__(self):
        if self.threshold_pct != self.threshold_pct:
            raise ValueError("threshold_pct: expected a number (a percentage), got nan")
        if (self.earlier_string is None) != (self.later_string is None):
            raise ValueError("give both earlier_string and later_string, or neither")

    @property
    def synthetic(self) -> bool:
        return self.earlier_string is None

    def load_releases(self):
        """``(earlier, later)`` :class:`~dango_nb.data.string_db.StringNetworks`."""
        from .data.string_db import read_string_detailed

        if self.earlier_string is not None:
            return (read_string_detailed(self.data.resolve(self.earlier_string)),
                    read_string_detailed(self.data.resolve(self.later_string)))
        from .data.synthetic import generate_benchmark

        files = generate_benchmark(self.data.benchmark_dir(), preset=self.data.preset, seed=self.data.seed)
        return (read_string_detailed(files.string_v9_1, version="9.1"),
                read_string_detailed(files.string_v11_0, version="11.0"))

    def ground_truth(self) -> dict | None:
        """The benchmark's planted answer (``planted_lambda``, ``planted_decreased_zeros_pct``, ...) or
        ``None`` for real releases."""
        if not self.synthetic:
            return None
        from .data.synthetic import generate_benchmark

        files = generate_benchmark(self.data.benchmark_dir(), preset=self.data.preset, seed=self.data.seed)
        return json.loads(Path(files.ground_truth_json).read_text(encoding="utf-8"))


@dataclass
class PretrainingParams:
    """``02_pretraining``: reconstruction-only pre-training of the per-channel GNNs.

    ``holdout_fraction`` of each channel's edges (seeded by ``data.seed``) is removed before
    pre-training and scored afterwards against as many sampled non-edges times
    ``negatives_per_positive``. The meta-embedding scorer gets no gradient from reconstruction, so
    ``finetune_epochs`` > 0 continues from the pre-trained model with the paper's second stage
    (interaction loss + 0.001 x reconstruction, all triplets) before the meta weights are plotted.
    """

    data: DataParams = field(default_factory=DataParams)
    train: TrainConfig = field(default_factory=TrainConfig)
    holdout_fraction: float = 0.1
    negatives_per_positive: int = 1
    finetune_epochs: int = 0
    lambdas_file: str | None = None

    def __post_init__(self):
        _check_lambdas_file(self.lambdas_file)
        if not 0 <= self.finetune_epochs <= MAX_EPOCHS:
            raise ValueError(f"finetune_epochs: expected an integer from 0 to {MAX_EPOCHS}, got {self.finetune_epochs}")
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must be in (0, 1), got {self.holdout_fraction}")
        if not 1 <= self.negatives_per_positive <= MAX_NEGATIVES:
            raise ValueError(f"negatives_per_positive: expected an integer from 1 to {MAX_NEGATIVES}, "
                             f"got {self.negatives_per_positive}")


@dataclass
class LossSchedulesParams:
    """``03_loss_schedules``: overfit one fixed batch of ``batch_size`` triplets under each schedule.

    ``schedules`` and ``transition_epoch`` are set here, not in ``train`` (``train.schedule`` and
    ``train.transition_epoch`` are rejected so the file has one source of truth). ``widget_epochs`` is
    the length of the short overfit the widget's "Run" button starts.
    """

    data: DataParams = field(default_factory=DataParams)
    train: TrainConfig = field(default_factory=TrainConfig)
    schedules: list[str] = field(default_factory=lambda: [
        "PreThenPost", "LinearUntilUniform", "LinearUntilFlipped", "PaperTwoStage"])
    transition_epoch: int = 40
    batch_size: int = 128
    widget_epochs: int = 30
    lambdas_file: str | None = None

    def __post_init__(self):
        _check_lambdas_file(self.lambdas_file)
        unknown = [s for s in self.schedules if s not in SCHEDULES]
        if unknown:
            raise ValueError(f"unknown schedule(s) {shown(unknown)}; known: {', '.join(sorted(SCHEDULES))}")
        if not self.schedules:
            raise ValueError("schedules is empty")
        if self.transition_epoch < 0 or self.batch_size < 2 or self.widget_epochs < 1:
            raise ValueError("need transition_epoch >= 0, batch_size >= 2 and widget_epochs >= 1")
        for key, most in (("transition_epoch", MAX_EPOCHS), ("widget_epochs", MAX_EPOCHS), ("batch_size", MAX_BATCH)):
            if getattr(self, key) > most:
                raise ValueError(f"{key}: expected at most {most}, got {getattr(self, key)}")
        for epochs in (self.train.epochs, self.widget_epochs):  # each schedule overfits the batch
            config = self.train.replace(epochs=epochs, transition_epoch=self.transition_epoch)
            for name in self.schedules:
                config.check_trains_interaction(SCHEDULES[name](self.transition_epoch))


@dataclass
class EvaluationParams:
    """``04_evaluation``: train and test on held-out triplets against baselines (front end of
    :func:`dango_nb.eval.run_evaluation`); ``train`` configures every DANGO fit, ``evaluation`` the
    runner (:class:`~dango_nb.eval.options.EvaluationOptions`)."""

    data: DataParams = field(default_factory=DataParams)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluation: EvaluationOptions = field(default_factory=EvaluationOptions)
    lambdas_file: str | None = None

    def __post_init__(self):
        _check_lambdas_file(self.lambdas_file)
        self.evaluation.check_config(self.train)


SCHEMAS: dict[str, type] = dict(zip(NOTEBOOKS, (LambdaParams, PretrainingParams, LossSchedulesParams,
                                                EvaluationParams)))

# keys a schema takes from elsewhere and rejects inside ``train``
_TRAIN_FORBIDDEN = {LossSchedulesParams: ("schedule", "transition_epoch")}


# ------------------------------------------------------------------------------------ validation
def _type_name(tp) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in args)
    if origin in (list, tuple):
        return f"a list of {_type_name(args[0])}" if args else "a list"
    if origin is dict or tp is dict:
        return f"a mapping of str to {_type_name(args[1])}" if args else "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if tp is Any:
        return "any value"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, getattr(tp, "__name__", str(tp)))


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls, globalns=dict(vars(sys.modules[cls.__module__])))


def _container_of(value: Any, tp: Any) -> bool:
    """Whether ``value`` is the mapping or list that ``tp`` (a dataclass, dict or list type) expects."""
    origin = typing.get_origin(tp) or tp
    if dataclasses.is_dataclass(tp) or origin is dict:
        return isinstance(value, Mapping)
    return origin in (list, tuple) and isinstance(value, (list, tuple))


def _convert(value: Any, tp: Any, key: str, source: str) -> Any:
    def bad() -> ParamsError:
        return ParamsError(f"{source}: key {shown_key(key)}: expected {_type_name(tp)}, got {type(value).__name__} {shown(value)}")

    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return copy.deepcopy(value)
    if origin in (Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise bad()
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key, source)
            except ParamsError:
                if _container_of(value, arg):  # the value has this arm's shape: its error names the field
                    raise
                continue
        raise bad()
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise bad()
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise bad()
        return _build(tp, value, source, prefix=key + ".")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad()
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad()
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise bad()
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad()
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise bad()
        inner = args[0] if args else Any
        out = [_convert(v, inner, f"{key}[{i}]", source) for i, v in enumerate(value)]
        return tuple(out) if (origin or tp) is tuple else out
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise bad()
        inner = args[1] if args else Any
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ParamsError(f"{source}: key {shown_key(key)}: mapping keys must be strings, got {shown(k)}")
            out[k] = _convert(v, inner, f"{key}.{k}", source)
        return out
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise bad()


def _build(cls, mapping: Mapping, source: str, prefix: str = ""):
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    where = f"'{prefix[:-1]}'" if prefix else "the top level"
    for k in mapping:
        if k not in fields:
            raise ParamsError(f"{source}: unknown key {shown_key(prefix + str(k))}; allowed keys in {where}: "
                              f"{', '.join(fields)}")
    train = mapping.get("train")
    for k in _TRAIN_FORBIDDEN.get(cls, ()):
        if isinstance(train, Mapping) and k in train:
            raise ParamsError(f"{source}: key '{prefix}train.{k}' is not allowed in this file; "
                              f"set '{prefix}{k}' at the top level instead")
    kwargs = {}
    for name, f in fields.items():
        if name in mapping:
            kwargs[name] = _convert(mapping[name], hints[name], prefix + name, source)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ParamsError(f"{source}: missing required key '{prefix}{name}' ({_type_name(hints[name])})")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError, KeyError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        raise ParamsError(f"{source}: {where}: {msg}") from err


def params_from_mapping(mapping: Mapping | None, schema: type | str, source: str = "<parameters>"):
    """Validate ``mapping`` against ``schema`` (a dataclass or a notebook stem) and build it."""
    if isinstance(schema, str):
        schema = _schema_for(schema, source)
    if mapping is None:
        mapping = {}
    if not isinstance(mapping, Mapping):
        raise ParamsError(f"{source}: expected a mapping of parameter names to values at the top level, "
                          f"got {type(mapping).__name__}")
    return _build(schema, mapping, source)


def _schema_for(name: str, source: str) -> type:
    for stem, cls in SCHEMAS.items():
        if name in (stem, run_name(stem)):
            return cls
    raise ParamsError(f"{source}: no parameter schema for {shown(name)}; parameter files are named "
                      f"{', '.join(s + '.yaml' for s in NOTEBOOKS)}")


def _merge(base: dict, over: Mapping) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def load_params(path: str | os.PathLike, schema: type | str | None = None,
                overrides: Mapping | None = None):
    """Read and validate one parameter file; ``schema`` defaults to the one named by the file's stem.

    ``overrides`` (a nested mapping, e.g. ``{"train": {"epochs": 5}}``) is merged over the file before
    validation, so it is checked just the same.
    """
    path = Path(path)
    source = str(path)
    if schema is None:
        schema = path.stem
    if isinstance(schema, str):
        schema = _schema_for(schema, source)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParamsError(f"{source}: parameter file not found") from None
    try:
        raw = load_yaml(text, source)  # safe_load that refuses duplicate keys
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise ParamsError(f"{where}: not valid YAML: {getattr(err, 'problem', None) or err}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ParamsError(f"{source}: expected a mapping of parameter names to values at the top level, "
                          f"got {type(raw).__name__}")
    if overrides:
        raw = _merge(raw, overrides)
    return _build(schema, raw, source)


def load_param_dir(folder: str | os.PathLike, notebooks: tuple[str, ...] = NOTEBOOKS) -> dict[str, Any]:
    """Validate ``<folder>/<stem>.yaml`` for every notebook stem; all are checked before returning."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ParamsError(f"{folder}: parameter directory not found")
    missing = [s for s in notebooks if not (folder / f"{s}.yaml").is_file()]
    if missing:
        raise ParamsError(f"{folder}: missing parameter file(s) {', '.join(m + '.yaml' for m in missing)}; "
                          f"a parameter directory holds one file per notebook: "
                          f"{', '.join(s + '.yaml' for s in notebooks)}")
    extra = sorted(p.name for p in folder.glob("*.yaml")
                   if p.stem not in SCHEMAS and p.stem not in RUN_FILES and not p.stem.startswith("sweep_"))
    if extra:
        raise ParamsError(f"{folder}: unexpected parameter file(s) {', '.join(extra)}; allowed: "
                          f"{', '.join(s + '.yaml' for s in SCHEMAS)}, {', '.join(s + '.yaml' for s in RUN_FILES)} "
                          f"and sweep files sweep_<name>.yaml")
    return {s: load_params(folder / f"{s}.yaml", s) for s in notebooks}


def params_to_dict(params) -> dict:
    """Plain nested dict (for reports and summaries)."""
    return json.loads(json.dumps(dataclasses.asdict(params), default=str))


# -------------------------------------------------------------------------------------- lambdas
def default_lambdas_file(report_root: str | os.PathLike) -> Path:
    """Where ``01_lambda_determination`` writes the lambda mapping inside a report folder."""
    return Path(report_root) / run_name(NOTEBOOKS[0]) / "lambdas.json"


def load_lambdas(path: str | os.PathLike) -> dict[str, float]:
    """Read the ``channel -> lambda`` mapping written by the lambda notebook (key ``lambdas``)."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: lambda file not found; run notebooks/01_lambda_determination.ipynb "
                          f"first (or `make report`), or set lambdas_file in the parameters")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ParamsError(f"{path}:{err.lineno}: not valid JSON: {err.msg}") from None
    lambdas = raw.get("lambdas") if isinstance(raw, dict) else None
    if not isinstance(lambdas, dict) or not lambdas:
        raise ParamsError(f"{path}: expected a JSON object with a non-empty 'lambdas' mapping")
    from .lambdas import check_lambdas

    try:
        return check_lambdas(lambdas, str(path))
    except ValueError as err:
        raise ParamsError(str(err)) from None
