"""What one run is: a validated parameter set (data, lambdas, ``TrainConfig``, split) as a YAML file.

A run parameter file (``dango-nb train PARAMS.yaml``)::

    data: {preset: tiny, seed: 0}          # dango_nb.params.DataParams (synthetic preset or real files)
    train: {epochs: 3, lr: 0.01, ...}      # every field of TrainConfig
    split: {name: random, fold: 0}         # held-out test part + validation part; null: train on all
    lambdas_file: null                     # or lambdas: {channel: value}; default: determined from the
                                           # study's STRING v9.1 and v11.0 releases (synthetic benchmark)

The same file, with every default filled in, is what a run folder records as ``params.yaml``, so a
run folder's parameters train the same model again.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping


from ..errors import ParamsError, shown, shown_key
from ..fileio import check_path_length, read_yaml
from ..params import DataParams, params_from_mapping, params_to_dict
from ._api import TrainConfig

__all__ = ["SplitParams", "RunParams", "load_run_params", "run_params", "resolved_dict", "set_key",
           "section_fields"]


@dataclass
class SplitParams:
    """Which part of the triplets is held out (:func:`dango_nb.eval.splits.make_splits`).

    ``seed`` defaults to ``data.seed`` (as in the evaluation notebook), so a run's test part is the
    one the evaluation uses for the same split and fold.
    """

    name: Literal["random", "gene1", "gene2"] = "random"
    fold: int = 0
    n_folds: int = 5
    val_fraction: float = 0.1
    seed: int | None = None
    n_test_genes: int | None = None

    def __post_init__(self):
        from ..argtypes import MAX_SEED
        from ..eval.options import MAX_FOLDS

        if not 2 <= self.n_folds <= MAX_FOLDS:
            raise ValueError(f"n_folds: expected an integer from 2 to {MAX_FOLDS}, got {self.n_folds}")
        if self.seed is not None and not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed: expected null or an integer from 0 to {MAX_SEED}, got {self.seed}")
        if self.n_folds < 2 or not 0 <= self.fold < self.n_folds:
            raise ValueError(f"need n_folds >= 2 and 0 <= fold < n_folds, got fold={self.fold}, "
                             f"n_folds={self.n_folds}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.name == "random" and self.n_test_genes is not None:
            raise ValueError("n_test_genes applies to the gene splits only")


@dataclass
class RunParams:
    """One DANGO fit: data source, lambdas, training configuration and split."""

    data: DataParams = field(default_factory=DataParams)
    train: TrainConfig = field(default_factory=TrainConfig)
    split: SplitParams | None = field(default_factory=SplitParams)
    lambdas_file: str | None = None
    lambdas: dict[str, float] | None = None

    def __post_init__(self):
        self.train.check_trains_interaction()  # a run always fits triplets
        if self.lambdas_file is not None and self.lambdas is not None:
            raise ValueError("give lambdas_file or lambdas, not both")
        if self.lambdas_file is not None:  # read when the run starts: its name is checked with the other keys
            check_path_length(self.lambdas_file, "lambdas_file")
            if not os.path.isfile(os.path.expanduser(self.lambdas_file)):
                raise ValueError(f"lambdas_file: {shown(self.lambdas_file)}: lambda file not found")
        if self.lambdas is not None:
            from ..lambdas import check_lambdas

            self.lambdas = check_lambdas(self.lambdas)


def section_fields() -> dict[str, list[str]]:
    """The keys each section of a run parameter file takes (for sweep-axis validation)."""
    import inspect

    from ..models import Dango

    model = [p for p in inspect.signature(Dango.__init__).parameters if p not in ("self", "gene_num", "edge_types")]
    return {
        "data": [f.name for f in dataclasses.fields(DataParams)],
        "train": [f.name for f in dataclasses.fields(TrainConfig)],
        "train.model": model,
        "split": [f.name for f in dataclasses.fields(SplitParams)],
        "": [f.name for f in dataclasses.fields(RunParams)],
    }


def run_params(mapping: Mapping | None, source: str = "<run parameters>") -> RunParams:
    """Validate a run parameter mapping; errors name ``source`` and the key."""
    return params_from_mapping(mapping, RunParams, source)



def load_run_mapping(path: str | os.PathLike) -> dict:
    raw = read_yaml(path)
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ParamsError(f"{path}: expected a mapping of parameter names to values at the top level, "
                          f"got {type(raw).__name__}")
    return dict(raw)


def load_run_params(path: str | os.PathLike, overrides: Mapping[str, Any] | None = None) -> RunParams:
    """Read and validate a run parameter file; ``overrides`` are dotted keys (``train.epochs``)."""
    mapping = load_run_mapping(path)
    for key, value in (overrides or {}).items():
        mapping = set_key(mapping, key, value, source=str(path))
    return run_params(mapping, str(path))


def set_key(mapping: Mapping, key: str, value: Any, source: str) -> dict:
    """A copy of ``mapping`` with the dotted ``key`` (``train.model.hidden_channels``) set to ``value``."""
    out = copy.deepcopy(dict(mapping))
    parts = key.split(".")
    node = out
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = {}
        elif not isinstance(child, Mapping):
            raise ParamsError(f"{source}: key {shown_key('.'.join(parts[:i + 1]))} is not a mapping, "
                             f"cannot set {shown_key(key)}")
        node[part] = dict(child)
        node = node[part]
    node[parts[-1]] = copy.deepcopy(value)
    return out


def resolved_dict(params: RunParams, lambdas: Mapping[str, float] | None = None,
                  checkpoint_dir: str | None = "checkpoints") -> dict:
    """Every value of ``params`` as a plain mapping (defaults filled in): the split seed made explicit,
    the lambdas used (when given) and ``train.checkpoint_dir`` relative to the run folder."""
    out = params_to_dict(params)
    if out.get("split") is not None and out["split"]["seed"] is None:
        out["split"]["seed"] = int(params.data.seed)
    if lambdas is not None:
        out["lambdas"] = {k: float(v) for k, v in sorted(lambdas.items())}
        out["lambdas_file"] = None
    out["train"]["checkpoint_dir"] = checkpoint_dir
    out["train"]["model"] = {**model_defaults(), **out["train"]["model"]}
    return out


def model_defaults() -> dict[str, Any]:
    """Dango's keyword defaults (recorded so a run folder states the architecture in full)."""
    import inspect

    from ..models import Dango

    return {p.name: p.default for p in inspect.signature(Dango.__init__).parameters.values()
            if p.default is not inspect.Parameter.empty}
