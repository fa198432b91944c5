"""The evaluation's options: one typed definition that the library, params files
(``evaluation:`` in ``04_evaluation.yaml``) and the command line all build and validate."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

import dango_nb.eval.runners  # noqa: F401  (registers the built-in models)
from dango_nb.argtypes import MAX_GPUS, MAX_PARALLEL, check_ray_address
from dango_nb.errors import ParamsError, shown
from dango_nb.eval.registry import DEFAULT_MODELS, check_model_names
from dango_nb.eval.splits import SPLITS
from dango_nb.train.config import MAX_EPOCHS

__all__ = ["CI_METRICS", "EvaluationOptions"]

CI_METRICS = ("pearson", "spearman", "mse", "auroc")
#: Upper bounds of the counts: beyond them an evaluation would only run out of time or memory.
MAX_FOLDS, MAX_REPEATS, MAX_BOOT = 1000, 1000, 1_000_000


@dataclass
class EvaluationOptions:
    """What :func:`~dango_nb.eval.runner.run_evaluation` runs.

    Args:
        splits: some of ``random``, ``gene1``, ``gene2`` (:mod:`dango_nb.eval.splits`).
        models: registered model names (:mod:`dango_nb.eval.registry`).
        n_folds: folds per split (k of the random k-fold; independent gene draws for gene1/gene2).
        folds: which of the ``n_folds`` folds run (``None``: all; fewer folds, faster report).
        val_fraction: part of each training part held out for validation.
        n_test_genes: gene-split size overrides, e.g. ``{gene1: 40, gene2: 400}`` on real data
            (default: scaled, see :func:`dango_nb.eval.splits.default_n_test_genes`).
        ensemble_seeds / ensemble_top_k: DANGO seeds (``dango`` is scored on each, reported as
            their mean and sd; ``dango_ensemble`` averages them) and checkpoints per seed in the
            ensemble (``None``: all the run kept, ``TrainConfig.keep_top_k``).

    Invalid values raise :class:`~dango_nb.errors.ParamsError` (a ``ValueError``) naming the field.
        pretrain_epochs: epochs of the label-free pre-training behind ``mlp_embeddings``
            (``None``: ``TrainConfig.transition_epoch``, else 10).
        mlp_embeddings: ``EmbeddingMLP`` keyword arguments over its defaults.
        mlp_embeddings_source: ``pretrain`` (label free) or ``dango`` (the fold's trained DANGO).
        baseline_options: per baseline name, keyword arguments of its class.
        n_boot: bootstrap resamples for the ``<metric>_ci_low/_ci_high`` columns (0 = none).
        ci_metrics: metrics that get bootstrap intervals.
        n_balanced_repeats: class-balanced subsamples averaged for ``auroc_balanced`` /
            ``auprc_balanced``.
        keep_checkpoints: keep the checkpoints of the DANGO fits made in this process (without
            ``data``, or ``dango_single_<channel>``) under ``out_dir/checkpoints`` (default: a
            temporary folder, removed at the end); a rerun with identical settings reuses them.
        workers: DANGO fits at the same time. All fits of every split x fold x ensemble seed are
            submitted together to :func:`dango_nb.runs.run_many`; ``1`` without ``address`` runs
            them one after another in this process (no Ray), more start a local Ray (or use the
            cluster at ``address``). The numbers do not depend on it.
        address: Ray cluster address (``auto``, ``ray://HOST:10001``); ``None``: this machine.
        gpus_per_run / cpus_per_run: resources of one fit on Ray (0.25 GPUs: four fits share one);
            ``cpus_per_run`` is also the fit's torch threads there.
        backend: ``ray``, or ``inline`` (one fit after another in this process, whatever ``workers``).
        keep_runs: keep every fitted DANGO model as a run folder ``out_dir/runs/<run_id>/``
            (``<split>_fold<k>_seed<s>``, ablations ``<split>_fold<k>_<model>_seed<s>``; usable by
            ``dango-nb predict --run``, a rerun skips complete ones); ``False``: a temporary folder.
    """

    splits: list[str] = field(default_factory=lambda: list(SPLITS))
    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    n_folds: int = 5
    folds: list[int] | None = None
    val_fraction: float = 0.1
    n_test_genes: dict[str, int] | None = None
    ensemble_seeds: int = 3
    ensemble_top_k: int | None = None
    pretrain_epochs: int | None = None
    mlp_embeddings: dict[str, Any] | None = None
    mlp_embeddings_source: Literal["pretrain", "dango"] = "pretrain"
    baseline_options: dict[str, dict[str, Any]] | None = None
    n_boot: int = 200
    ci_metrics: list[str] = field(default_factory=lambda: list(CI_METRICS))
    n_balanced_repeats: int = 10
    keep_checkpoints: bool = False
    workers: int = 1
    address: str | None = None
    gpus_per_run: float = 0.0
    cpus_per_run: int = 1
    backend: Literal["ray", "inline"] = "ray"
    keep_runs: bool = True

    def __post_init__(self):
        def integer(name: str, minimum: int, maximum: int | None, allow_none: bool = False) -> None:
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if isinstance(v, bool) or not isinstance(v, int) or not minimum <= v <= (v if maximum is None else maximum):
                within = f"an integer >= {minimum}" if maximum is None else f"an integer from {minimum} to {maximum}"
                raise ParamsError(f"{name}: expected {within}{' or null' if allow_none else ''}, got {shown(v)}")

        self.splits, self.models = list(self.splits), list(self.models)
        bad = [s for s in self.splits if s not in SPLITS]
        if bad:
            raise ParamsError(f"splits: unknown split(s) {shown(bad)}; known: {', '.join(SPLITS)}")
        try:
            check_model_names(self.models)
        except ParamsError as err:
            raise ParamsError(f"models: {err}") from None
        integer("n_folds", 2, MAX_FOLDS)
        if any(isinstance(f, bool) or not isinstance(f, int) or not 0 <= f < self.n_folds for f in self.folds or []):
            raise ParamsError(f"folds: expected folds from 0 to {self.n_folds - 1} (n_folds {self.n_folds}), "
                              f"got {shown(self.folds)}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ParamsError(f"val_fraction: must be in (0, 1), got {shown(self.val_fraction)}")
        integer("ensemble_seeds", 1, MAX_REPEATS)
        # a negative count would slice off the last checkpoints instead of keeping the first
        integer("ensemble_top_k", 1, None, allow_none=True)
        integer("pretrain_epochs", 0, MAX_EPOCHS, allow_none=True)
        if self.mlp_embeddings_source not in ("pretrain", "dango"):
            raise ParamsError(f"mlp_embeddings_source: must be 'pretrain' or 'dango', got {shown(self.mlp_embeddings_source)}")
        integer("n_boot", 0, MAX_BOOT)
        integer("n_balanced_repeats", 1, MAX_REPEATS)
        integer("workers", 1, MAX_PARALLEL)
        integer("cpus_per_run", 1, MAX_PARALLEL)
        if isinstance(self.gpus_per_run, bool) or not isinstance(self.gpus_per_run, (int, float)) \
                or not 0 <= self.gpus_per_run <= MAX_GPUS:
            raise ParamsError(f"gpus_per_run: expected a number from 0 to {MAX_GPUS} (fractions share a GPU), "
                              f"got {shown(self.gpus_per_run)}")
        if self.backend not in ("ray", "inline"):
            raise ParamsError(f"backend: must be 'ray' or 'inline', got {shown(self.backend)}")
        if self.address is not None:
            try:
                check_ray_address(self.address)
            except ValueError as err:
                raise ParamsError(f"address: {err}") from None
        if self.address is not None and self.backend == "inline":
            raise ParamsError("address needs backend 'ray' (backend 'inline' fits in this process)")

    def check_config(self, config) -> None:
        """Refuse (``ValueError`` naming ``transition_epoch``) a :class:`~dango_nb.train.TrainConfig`
        under which one of the DANGO models of :attr:`models` (with its variant's schedule) would
        never train the interaction loss; called where the options meet the config, before any fit."""
        from dango_nb.eval.registry import MODELS
        from dango_nb.schedules import get_schedule

        for name in self.models:
            spec = MODELS[name]
            if spec.trains_dango:
                variant = spec.variant.schedule if spec.variant is not None else None
                config.check_trains_interaction(get_schedule(variant or config.schedule, config.transition_epoch))

    @property
    def uses_ray(self) -> bool:
        """Whether the DANGO fits go to Ray (several workers or a cluster), else in this process."""
        return self.backend == "ray" and (self.workers > 1 or self.address is not None)

    def replace(self, **changes) -> "EvaluationOptions":
        return dataclasses.replace(self, **changes)
