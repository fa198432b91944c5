"""The evaluation's model registry: a model name is one registration, which params files, the
command line and :func:`~dango_nb.eval.runner.run_evaluation` all validate against.

A model is ``fn(data: FoldData) -> predictions``: an ``(M,)`` array of tau for
``data.test_indices``, a ``(predictions, spread)`` pair, or a :class:`ModelOutput`. It is fitted
on ``data.train``, may select on ``data.val`` and never sees test targets::

    @register_model("ridge_on_pairs")
    def ridge_on_pairs(data):
        ...

Built-in models are registered by :mod:`dango_nb.eval.runners`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from dango_nb.errors import ParamsError, shown

__all__ = ["FoldData", "DangoVariant", "ModelOutput", "ModelSpec", "MODELS", "DEFAULT_MODELS", "register_model", "get_model",
           "model_names", "check_model_names"]


@dataclass
class FoldData:
    """What a model sees for one fold: training and validation triplets with targets, the test
    triplets' gene indices only (``test_indices`` (M, 3) int64), and shared context: the run's
    :class:`~dango_nb.eval.options.EvaluationOptions`, the ``TrainConfig`` and lambdas for DANGO
    fits, a ``workdir`` for checkpoints and a per-fold ``cache`` (where the runner puts the fold's
    DANGO fits when it trained them beforehand as run folders: ``cache[("fits", variant)]``, a list
    of :class:`~dango_nb.eval.runners.DangoRun` per seed)."""

    split: str
    fold: int
    cell_graph: Any
    train: Any  # TripletTensors
    val: Any  # TripletTensors (may be empty)
    test_indices: np.ndarray
    n_genes: int
    seed: int
    config: Any = None
    lambdas: Mapping[str, float] | None = None
    workdir: Path | None = None
    cache: dict = field(default_factory=dict)
    options: Any = None
    test_signal: np.ndarray | None = None  # the planted signal of the test triplets (ground truth only)


@dataclass(frozen=True)
class DangoVariant:
    """How a DANGO model differs from the configured one: another ``schedule``, extra ``model``
    keyword arguments (``TrainConfig.model``), or the cell graph restricted to one ``channel``."""

    schedule: str | None = None
    model: tuple[tuple[str, Any], ...] = ()
    channel: str | None = None


@dataclass
class ModelOutput:
    """Test predictions ``(M,)``, optional per-prediction ``spread`` ``(M,)`` and the fit time
    (``None``: the runner's wall time is used).

    A model fitted with several seeds returns ``prediction`` as ``(S, M)`` (one row per seed,
    ``spread`` the same shape or None, ``fit_s`` one value per seed): each seed is scored on its
    own (``seed`` column of the metrics), so the summary shows the spread over seeds."""

    prediction: np.ndarray
    spread: np.ndarray | None = None
    fit_s: float | Sequence[float] | None = None


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: its function, whether it trains DANGO (needs ``TrainConfig`` and
    lambdas), whether it needs the benchmark's ground truth, and the DANGO variant it trains."""

    name: str
    fn: Callable[..., Any]
    trains_dango: bool = False
    needs_ground_truth: bool = False
    variant: DangoVariant | None = field(default=None)


MODELS: dict[str, ModelSpec] = {}
#: What an evaluation runs unless told otherwise.
DEFAULT_MODELS = ("mean", "additive", "pairwise_additive", "mlp_embeddings", "dango", "dango_ensemble")


def register_model(name: str, fn: Callable | None = None, *, trains_dango: bool = False,
                   needs_ground_truth: bool = False, variant: DangoVariant | None = None, replace: bool = False):
    """Register ``fn`` under ``name``; usable as ``register_model(name, fn)`` or as a decorator
    ``@register_model(name)``. A second registration of a taken name needs ``replace=True``."""

    def wrap(f: Callable) -> Callable:
        if not callable(f):
            raise TypeError(f"model {name!r}: {f!r} is not callable")
        if name in MODELS and not replace:
            raise ValueError(f"a model named {name!r} is already registered")
        MODELS[name] = ModelSpec(name, f, trains_dango, needs_ground_truth, variant)
        return f

    return wrap if fn is None else wrap(fn)


def get_model(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ParamsError(f"unknown model {name!r}; registered: {', '.join(model_names())}") from None


def model_names() -> list[str]:
    return list(MODELS)


def check_model_names(names) -> None:
    """``ValueError`` listing every unregistered name (and the registered ones)."""
    bad = [m for m in names if m not in MODELS]
    if bad:
        raise ParamsError(f"unknown model(s) {shown(bad)}; registered: {', '.join(model_names())}")
