"""The evaluation runner: models x splits x folds -> one long metrics table.

For every split (``random``, ``gene1``, ``gene2``; see :mod:`dango_nb.splits`) and fold, every model
is fitted on the fold's training part, selects what it selects (epochs, checkpoints, ridge
strength) on the validation part, and predicts the test triplets from their gene indices only:
a model never receives test targets (:class:`FoldData` does not carry them). Metrics
(:mod:`dango_nb.metrics`) are then computed on the test part, with bootstrap intervals and, on
the embedded benchmark, the noise ceiling (Pearson of the planted signal with measured tau on the
same test triplets) beside every row.

Model names:

- baselines: ``mean``, ``additive``, ``pairwise_additive``, ``mlp_embeddings`` (MLP on the
  integrated embeddings of a DANGO pre-trained on the graph only, label free);
- ``dango`` (one seed) and ``dango_ensemble`` (top-k validation checkpoints of ``ensemble_seeds``
  seeds; the ``dango`` run is its first seed);
- ablations through :func:`dango_nb.training.fit`: ``dango_no_pretrain`` (schedule
  ``InteractionOnly``), ``dango_mean_meta`` (``meta_embedding="mean"``),
  ``dango_single_<channel>`` (the cell graph restricted to one STRING channel) and
  ``dango_<Schedule>`` for every registered schedule (e.g. ``dango_LinearUntilUniform``);
- ``oracle_signal`` (only with ground truth): the planted signal itself as the prediction, i.e. the
  best any model can do on each metric;
- any other name given with a callable in ``models`` (``{"name": fn}``), see :data:`ModelFn`.

Outputs (``out_dir``, default ``reports/evaluation``, written atomically): ``metrics.csv`` (one row
per model x split x fold), ``summary.csv`` (mean and sd across folds, Pearson as a fraction of the
ceiling), ``ceiling.json`` (with ground truth), ``predictions.parquet`` (per test triplet),
``ensemble_gain.csv`` and ``splits.csv``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from dango_nb import baselines as B
from dango_nb import metrics as M
from dango_nb.ensemble import combine, ensemble_gain
from dango_nb.fileio import atomic_write_json, atomic_write_table
from dango_nb.splits import SPLITS, Fold, make_splits, split_table

DEFAULT_MODELS = ("mean", "additive", "pairwise_additive", "mlp_embeddings", "dango", "dango_ensemble")
BASELINE_MODELS = ("mean", "additive", "pairwise_additive")
CI_METRICS = ("pearson", "spearman", "mse", "auroc")
# EmbeddingMLP settings used unless ``mlp_embeddings`` overrides them.
MLP_DEFAULTS = {"hidden_layer_sizes": (128, 64), "max_epochs": 100, "patience": 10}


@dataclass
class FoldData:
    """What a model sees for one fold: training and validation triplets with targets, the test
    triplets' gene indices only (``test_indices`` (M, 3) int64), and shared context."""

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


#: A custom model: ``fn(data: FoldData) -> predictions (M,)`` or ``(predictions, spread)``.
ModelFn = Callable[[FoldData], Any]


@dataclass
class EvaluationResult:
    metrics: pd.DataFrame
    summary: pd.DataFrame
    ceiling: dict | None
    predictions: pd.DataFrame
    ensemble: pd.DataFrame
    splits: pd.DataFrame
    paths: dict[str, Path]
    synthetic: bool = False


# ---------------------------------------------------------------------------------------------
# Helpers

def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def _subset(triplets, rows: np.ndarray):
    import torch

    return triplets.subset(torch.as_tensor(rows, dtype=torch.long))


def planted_signal(study) -> np.ndarray | None:
    """(N,) planted signal aligned with ``study.triplets``, or None without ground truth.

    Uses ``Study.planted_signal()``; a study-like object may instead carry the truth table as
    ``ground_truth["triplets"]`` (``gene1, gene2, gene3, signal``), matched by sorted gene names.
    """
    gt = getattr(study, "ground_truth", None)
    if not gt:
        return None
    table = gt.get("triplets") if isinstance(gt, Mapping) else None
    if table is None:
        if not hasattr(study, "planted_signal"):
            return None
        signal = np.asarray(study.planted_signal(), dtype=np.float64)
        if len(signal) != len(study.triplets):
            raise ValueError(f"planted signal has {len(signal)} values for {len(study.triplets)} triplets")
        return signal
    genes = np.asarray(study.triplets.genes, dtype=object)
    names = np.sort(genes[_np(study.triplets.indices)].astype(str), axis=1)
    key = pd.MultiIndex.from_arrays([names[:, 0], names[:, 1], names[:, 2]])
    gt_names = np.sort(table[["gene1", "gene2", "gene3"]].to_numpy().astype(str), axis=1)
    gt_key = pd.MultiIndex.from_arrays([gt_names[:, 0], gt_names[:, 1], gt_names[:, 2]])
    signal = pd.Series(table["signal"].to_numpy(np.float64), index=gt_key)
    signal = signal[~signal.index.duplicated()]
    return signal.reindex(key).to_numpy(np.float64)


def restrict_channels(cell_graph, channels: Sequence[str]):
    """A copy of the cell graph with only the edge types of the given channels (by channel name)."""
    from dango_nb.data.graph import channel_of

    keep = [et for et in cell_graph.edge_types if channel_of(et) in set(channels)]
    if not keep:
        known = sorted({channel_of(et) for et in cell_graph.edge_types})
        raise ValueError(f"no edge type of channel(s) {list(channels)}; the graph has {known}")
    return cell_graph.edge_type_subgraph(keep)


def graph_channels(cell_graph) -> list[str]:
    from dango_nb.data.graph import channel_of

    return [channel_of(et) for et in cell_graph.edge_types]


def dango_variant(name: str, schedules: Sequence[str] | None = None) -> dict | None:
    """Training overrides for a DANGO model name, or None when the name is not a DANGO variant."""
    if schedules is None:
        from dango_nb.schedules import SCHEDULES

        schedules = list(SCHEDULES)
    if name in ("dango", "dango_ensemble"):
        return {}
    if name == "dango_no_pretrain":
        return {"schedule": "InteractionOnly"}
    if name == "dango_mean_meta":
        return {"model": {"meta_embedding": "mean"}}
    if name.startswith("dango_single_"):
        return {"channel": name[len("dango_single_"):]}
    if name.startswith("dango_") and name[len("dango_"):] in schedules:
        return {"schedule": name[len("dango_"):]}
    return None


def _config_for(config, overrides: dict, seed: int, checkpoint_dir: Path | None):
    changes: dict[str, Any] = {"seed": seed, "checkpoint_dir": None if checkpoint_dir is None else str(checkpoint_dir),
                               "progress": False}
    if "schedule" in overrides:
        changes["schedule"] = overrides["schedule"]
    if "model" in overrides:
        changes["model"] = {**(config.model or {}), **overrides["model"]}
    return dataclasses.replace(config, **changes)


# ---------------------------------------------------------------------------------------------
# Built-in model runners

def _run_baseline(name: str, data: FoldData, options: dict) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    cls = B.BASELINES[name]
    kwargs = dict(options.get(name, {}))
    if name in ("additive", "pairwise_additive"):
        kwargs.setdefault("n_genes", data.n_genes)
    model = cls(**kwargs)
    model.fit(_np(data.train.indices), _np(data.train.targets),
              _np(data.val.indices) if len(data.val) else None, _np(data.val.targets) if len(data.val) else None)
    return {name: (model.predict(data.test_indices), None)}


def _pretrained_embeddings(data: FoldData, options: dict) -> np.ndarray:
    """Integrated embeddings of a DANGO pre-trained on the graph alone (reconstruction only: no
    triplets, no labels), so one pre-training serves every split and fold. Its meta-embedding
    attention is untrained (only the interaction loss trains it), i.e. a fixed random mix of the
    channel embeddings."""
    if "pretrain_embeddings" not in data.cache:
        from dango_nb import training

        epochs = options.get("pretrain_epochs") or data.config.transition_epoch or 10
        cfg = dataclasses.replace(data.config, epochs=epochs, seed=data.seed, checkpoint_dir=None, progress=False,
                                  early_stopping_patience=None)
        result = training.pretrain(data.cell_graph, cfg, data.lambdas)
        data.cache["pretrain_embeddings"] = B.integrated_embeddings(result.model, data.cell_graph)
    return data.cache["pretrain_embeddings"]


def _run_mlp(data: FoldData, options: dict):
    source = options.get("mlp_embeddings_source", "pretrain")
    if source == "pretrain":
        emb = _pretrained_embeddings(data, options)
    elif source == "dango":  # the fold's trained DANGO (trained on this fold's training part only)
        fit = _dango_fits(data, "dango", {}, n_seeds=1, options=options)[0]
        emb = B.integrated_embeddings(fit.best, fit.graph_used)
    else:
        raise ValueError(f"mlp_embeddings_source must be 'pretrain' or 'dango', got {source!r}")
    kwargs = {"seed": data.seed, **options.get("mlp_embeddings", {})}
    model = B.EmbeddingMLP(emb, **kwargs)
    model.fit(_np(data.train.indices), _np(data.train.targets),
              _np(data.val.indices) if len(data.val) else None, _np(data.val.targets) if len(data.val) else None)
    return {"mlp_embeddings": (model.predict(data.test_indices), None)}


def _dango_fits(data: FoldData, name: str, overrides: dict, n_seeds: int, options: dict) -> list:
    """FitResults of a DANGO variant for seeds ``data.seed + s`` (cached per fold and variant).

    Each result gains ``best`` (the model at the best validation epoch), ``graph_used`` and
    ``fit_s``. Checkpoints are written only when the ensemble needs the top-k of the run.
    """
    from dango_nb import training

    graph = data.cell_graph
    if "channel" in overrides:
        graph = restrict_channels(graph, [overrides["channel"]])
    key = ("fits", repr(sorted(overrides.items())))
    fits = data.cache.setdefault(key, [])
    for s in range(len(fits), n_seeds):
        ckpt = None
        if not overrides and options.get("ensemble_checkpoints") and data.workdir is not None:
            ckpt = data.workdir / "dango" / f"seed{s}"
        cfg = _config_for(data.config, overrides, data.seed + s, ckpt)
        t0 = time.perf_counter()
        result = training.fit(graph, data.train, data.val if len(data.val) else None, cfg, data.lambdas)
        result.fit_s = time.perf_counter() - t0
        result.best = result.best_model()
        result.graph_used = graph
        fits.append(result)
    return fits[:n_seeds]


def _ensemble_members(fits: list, top_k: int | None) -> list:
    """Members: the kept top-k validation checkpoints of each run (best first, at most ``top_k``),
    or the run's best-epoch model when it kept none."""
    from dango_nb import training
    from dango_nb.ensemble import Member

    members = []
    for s, fit in enumerate(fits):
        listed = training.list_checkpoints(fit.checkpoint_dir) if fit.checkpoint_dir is not None else None
        if listed is not None and len(listed):
            if top_k is not None:
                listed = listed.head(top_k)
            for row in listed.itertuples():
                model, scaler = training.load_checkpoint(row.path, device="cpu")
                members.append(Member(model, scaler, f"seed{s}/epoch{row.epoch}",
                                      {"epoch": row.epoch, row.metric: row.value}))
        else:
            members.append(Member(fit.best, fit.scaler, f"seed{s}/best_epoch{fit.best_epoch}"))
    return members


def _run_dango(name: str, data: FoldData, options: dict):
    from dango_nb.ensemble import member_predictions
    from dango_nb.training import predict

    overrides = dango_variant(name)
    test = data.test_indices
    if name != "dango_ensemble":
        fit = _dango_fits(data, name, overrides, 1, options)[0]
        pred = np.asarray(predict(fit.best, fit.graph_used, _torch_long(test), fit.scaler), dtype=np.float64)
        return {name: (pred, None)}, fit.fit_s
    n_seeds = int(options.get("ensemble_seeds", 3))
    cached = len(data.cache.get(("fits", repr([])), []))
    fits = _dango_fits(data, "dango", {}, n_seeds, options)
    members = _ensemble_members(fits, options.get("ensemble_top_k"))
    preds = member_predictions(members, fits[0].graph_used, test)
    mean, spread = combine(preds)
    data.cache["ensemble_members"] = (preds, [m.name for m in members])
    # time of the extra seeds only when "dango" (seed 0) was already fitted for this fold
    return {name: (mean, spread)}, sum(f.fit_s for f in fits[min(cached, 1):])


def _torch_long(a: np.ndarray):
    import torch

    return torch.as_tensor(np.asarray(a), dtype=torch.long)


# ---------------------------------------------------------------------------------------------
# The runner

def run_evaluation(study, splits: Sequence[str] = SPLITS, models: Sequence[str] | Mapping[str, ModelFn | None] = DEFAULT_MODELS,
                   n_folds: int = 5, folds: Sequence[int] | None = None, config=None,
                   lambdas: Mapping[str, float] | None = None, seed: int = 0, val_fraction: float = 0.1,
                   n_test_genes: Mapping[str, int] | None = None, ensemble_seeds: int = 3,
                   ensemble_top_k: int | None = None, pretrain_epochs: int | None = None,
                   mlp_embeddings: Mapping[str, Any] | None = None, mlp_embeddings_source: str = "pretrain",
                   baseline_options: Mapping[str, Mapping[str, Any]] | None = None,
                   n_boot: int = 200, ci_metrics: Sequence[str] = CI_METRICS, n_balanced_repeats: int = 10,
                   out_dir: str | os.PathLike | None = "reports/evaluation", keep_checkpoints: bool = False,
                   progress: bool = True) -> EvaluationResult:
    """Fit and score ``models`` on ``splits`` x folds of ``study``; one row per model x split x fold.

    Args:
        study: a :class:`~dango_nb.data.study.Study` (``cell_graph``, ``triplets``, optional
            ``ground_truth``).
        models: model names (module docstring) or a mapping name -> callable (``None`` = built-in).
        n_folds: folds per split (k of the random k-fold; independent gene draws for gene1/gene2).
        folds: which of the ``n_folds`` folds to run (default all); fewer folds = faster.
        config: :class:`~dango_nb.training.TrainConfig` (or a dict of its fields) for every DANGO
            fit; its ``seed`` is replaced by ``seed + s`` per ensemble seed. Needed for DANGO
            models and ``mlp_embeddings``.
        lambdas: channel -> lambda for the reconstruction loss (from the lambda notebook or
            :func:`dango_nb.lambdas.determine_lambdas`). Needed for DANGO models.
        seed: seeds the splits, the baselines and (``seed + s``) the DANGO runs.
        n_test_genes: ``{"gene1": 40, "gene2": 400}`` style overrides (default: scaled, see
            :func:`dango_nb.splits.default_n_test_genes`).
        ensemble_seeds / ensemble_top_k: seeds averaged by ``dango_ensemble`` and checkpoints per
            seed (default: all the run kept, ``config.keep_top_k``).
        n_boot: bootstrap resamples for the ``<metric>_ci_low/_ci_high`` columns (0 = none).
        n_balanced_repeats: class-balanced subsamples averaged for ``auroc_balanced`` /
            ``auprc_balanced``.
        out_dir: where the tables go (None: nothing written).
        keep_checkpoints: keep the checkpoints of the runs the ensemble uses under
            ``out_dir/checkpoints`` (default: a temporary folder, removed at the end). Training
            resumes from kept checkpoints, so a rerun with identical settings reuses them.

    Returns an :class:`EvaluationResult`; ``metrics`` has one row per model x split x fold with
    the columns of :func:`dango_nb.metrics.evaluate` plus ``ceiling`` (NaN without ground truth),
    ``n_train``, ``n_val``, ``fit_s`` and ``<metric>_ci_low/_ci_high``.
    """
    t_start = time.perf_counter()
    model_fns = dict(models) if isinstance(models, Mapping) else {m: None for m in models}
    unknown = [m for m, fn in model_fns.items() if fn is None and m not in (*BASELINE_MODELS, "mlp_embeddings", "oracle_signal")
               and dango_variant(m) is None]
    if unknown:
        raise ValueError(f"unknown model name(s) {unknown}; built-in: {', '.join(DEFAULT_MODELS)}, "
                         "dango_no_pretrain, dango_mean_meta, dango_single_<channel>, dango_<Schedule>, oracle_signal")
    bad_splits = [s for s in splits if s not in SPLITS]
    if bad_splits:
        raise ValueError(f"unknown split(s) {bad_splits}; expected some of {SPLITS}")
    needs_training = any(fn is None and (m == "mlp_embeddings" or dango_variant(m) is not None) for m, fn in model_fns.items())
    if needs_training:
        from dango_nb.training import TrainConfig

        if config is None:
            config = TrainConfig()
        elif isinstance(config, Mapping):
            config = TrainConfig(**config)
        if lambdas is None:
            raise ValueError("lambdas are needed to train DANGO models (channel -> lambda); run the lambda "
                             "notebook or dango_nb.lambdas.determine_lambdas first")
        channels = graph_channels(study.cell_graph)
        for m in model_fns:
            v = dango_variant(m)
            if v and "channel" in v and v["channel"] not in channels:
                raise ValueError(f"model {m!r}: channel {v['channel']!r} not in the cell graph ({channels})")
    options = {"ensemble_seeds": ensemble_seeds, "ensemble_top_k": ensemble_top_k, "pretrain_epochs": pretrain_epochs,
               "ensemble_checkpoints": "dango_ensemble" in model_fns,
               "mlp_embeddings": {**MLP_DEFAULTS, **(mlp_embeddings or {})}, "mlp_embeddings_source": mlp_embeddings_source,
               **{k: dict(v) for k, v in (baseline_options or {}).items()}}

    triplets = study.triplets
    all_idx = _np(triplets.indices).astype(np.int64)
    targets = _np(triplets.targets).astype(np.float64)
    pvalues = _np(triplets.pvalues).astype(np.float64) if getattr(triplets, "pvalues", None) is not None else None
    n_genes = int(study.cell_graph["gene"].num_nodes)
    signal = planted_signal(study)
    if signal is None and "oracle_signal" in model_fns:
        raise ValueError("oracle_signal needs a study with ground truth (the embedded benchmark)")
    if signal is not None and "oracle_signal" not in model_fns:
        model_fns["oracle_signal"] = None

    shared_cache: dict = {}
    rows, pred_frames, gain_frames, fold_list = [], [], [], []
    tmp_ctx = contextlib.nullcontext(None) if keep_checkpoints and out_dir is not None else \
        tempfile.TemporaryDirectory(prefix="dango_eval_")
    with tmp_ctx as tmp:
        ckpt_root = Path(out_dir) / "checkpoints" if tmp is None else Path(tmp)
        jobs = []
        for split in splits:
            k = (n_test_genes or {}).get(split) if split != "random" else None
            split_folds = make_splits(split, all_idx, n_folds=n_folds, seed=seed, val_fraction=val_fraction,
                                      n_test_genes=k)
            chosen = range(n_folds) if folds is None else folds
            for f in chosen:
                if not 0 <= f < len(split_folds):
                    raise ValueError(f"fold {f} out of range for n_folds={n_folds}")
                jobs.append(split_folds[f])
        bar = _bar(progress, total=len(jobs) * len(model_fns))
        for fold in jobs:
            fold.check(len(all_idx))
            fold_list.append(fold)
            test_rows = fold.test
            y_test = targets[test_rows]
            data = FoldData(split=fold.split, fold=fold.fold, cell_graph=study.cell_graph,
                            train=_subset(triplets, fold.train), val=_subset(triplets, fold.val),
                            test_indices=all_idx[test_rows].copy(), n_genes=n_genes, seed=seed,
                            config=config, lambdas=lambdas,
                            workdir=ckpt_root / fold.split / f"fold{fold.fold}", cache={})
            data.cache.update({k: v for k, v in shared_cache.items() if k == "pretrain_embeddings"})
            ceiling = M.noise_ceiling(signal[test_rows], y_test) if signal is not None else float("nan")
            for name, fn in model_fns.items():
                if bar is not None:
                    bar.set_description(f"{fold.split} fold {fold.fold}: {name}")
                t0 = time.perf_counter()
                if len(test_rows) == 0:
                    out, fit_s = {}, 0.0
                elif fn is not None:
                    res = fn(data)
                    pred, spread = (res if isinstance(res, tuple) else (res, None))
                    out, fit_s = {name: (pred, spread)}, time.perf_counter() - t0
                elif name == "oracle_signal":
                    out, fit_s = {name: (signal[test_rows], None)}, 0.0
                elif name in BASELINE_MODELS:
                    out, fit_s = _run_baseline(name, data, options), time.perf_counter() - t0
                elif name == "mlp_embeddings":
                    out, fit_s = _run_mlp(data, options), time.perf_counter() - t0
                else:
                    out, fit_s = _run_dango(name, data, options)
                if "pretrain_embeddings" in data.cache:
                    shared_cache["pretrain_embeddings"] = data.cache["pretrain_embeddings"]
                for mname, (pred, spread) in out.items():
                    pred = np.asarray(pred, dtype=np.float64).reshape(-1)
                    if len(pred) != len(test_rows):
                        raise ValueError(f"model {mname!r} returned {len(pred)} predictions for {len(test_rows)} test triplets")
                    spread_arr = np.full(len(pred), np.nan) if spread is None else np.asarray(spread, np.float64)
                    rows.append(_metric_row(mname, fold, y_test, pred, ceiling, fit_s, n_boot, ci_metrics,
                                            seed, n_balanced_repeats))
                    pred_frames.append(pd.DataFrame({
                        "model": mname, "split": fold.split, "fold": fold.fold, "row": test_rows,
                        "gene1": all_idx[test_rows, 0], "gene2": all_idx[test_rows, 1], "gene3": all_idx[test_rows, 2],
                        "target": y_test, "prediction": pred, "spread": spread_arr,
                        **({"pvalue": pvalues[test_rows]} if pvalues is not None else {}),
                        **({"signal": signal[test_rows]} if signal is not None else {})}))
                if name == "dango_ensemble" and "ensemble_members" in data.cache:
                    preds, names = data.cache["ensemble_members"]
                    g = ensemble_gain(y_test, preds, names, seed=seed, n_balanced_repeats=n_balanced_repeats)
                    g.insert(0, "fold", fold.fold)
                    g.insert(0, "split", fold.split)
                    gain_frames.append(g)
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()

    metrics = pd.DataFrame(rows)
    summary = M.summarize(metrics)
    predictions = pd.concat(pred_frames, ignore_index=True) if pred_frames else pd.DataFrame()
    ensemble = pd.concat(gain_frames, ignore_index=True) if gain_frames else pd.DataFrame()
    splits_df = split_table(fold_list) if fold_list else pd.DataFrame()
    ceiling = _ceiling_summary(study, metrics) if signal is not None else None
    synthetic = bool(getattr(study, "synthetic", False))
    metrics.attrs["elapsed_s"] = time.perf_counter() - t_start
    paths = write_outputs(out_dir, metrics, summary, ceiling, predictions, ensemble, splits_df, synthetic) \
        if out_dir is not None else {}
    return EvaluationResult(metrics, summary, ceiling, predictions, ensemble, splits_df, paths, synthetic)


def _metric_row(model: str, fold: Fold, y: np.ndarray, pred: np.ndarray, ceiling: float, fit_s: float,
                n_boot: int, ci_metrics: Sequence[str], seed: int, n_balanced_repeats: int) -> dict:
    row = {"model": model, "split": fold.split, "fold": fold.fold,
           **M.evaluate(y, pred, seed=seed, n_balanced_repeats=n_balanced_repeats),
           "ceiling": ceiling, "n_train": len(fold.train), "n_val": len(fold.val), "fit_s": fit_s}
    if n_boot:
        ci = M.bootstrap_ci(y, pred, metrics=ci_metrics, n_boot=n_boot, seed=seed)
        for m, (lo, hi) in ci.items():
            row[f"{m}_ci_low"], row[f"{m}_ci_high"] = lo, hi
    return row


def _ceiling_summary(study, metrics: pd.DataFrame) -> dict:
    gt = study.ground_truth if isinstance(study.ground_truth, Mapping) else {}
    per_split = {}
    oracle = metrics[metrics["model"] == "oracle_signal"]
    for split, sub in metrics.drop_duplicates(["split", "fold"]).groupby("split", sort=False):
        per_split[split] = {
            "pearson_mean": float(sub["ceiling"].mean()),
            "pearson_sd": float(sub["ceiling"].std(ddof=1)) if len(sub) > 1 else float("nan"),
            "folds": [float(v) for v in sub["ceiling"]],
        }
        o = oracle[oracle["split"] == split]
        if len(o):
            per_split[split]["oracle_metrics_mean"] = {m: float(o[m].mean()) for m in M.METRICS}
    return {"synthetic": bool(getattr(study, "synthetic", False)),
            "noise_ceiling": gt.get("noise_ceiling"), "replicate_r": gt.get("replicate_r"),
            "definition": "Pearson of the planted signal with measured tau on each fold's test triplets",
            "per_split": per_split}


def write_outputs(out_dir, metrics, summary, ceiling, predictions, ensemble, splits_df, synthetic: bool) -> dict[str, Path]:
    out = Path(out_dir)
    tables = {"metrics": metrics, "summary": summary, "splits": splits_df}
    paths = {key: out / f"{key}.csv" for key in tables}
    for key, df in tables.items():
        atomic_write_table(df.assign(synthetic=synthetic), paths[key])
    if len(ensemble):
        paths["ensemble_gain"] = out / "ensemble_gain.csv"
        atomic_write_table(ensemble, paths["ensemble_gain"])
    if len(predictions):
        paths["predictions"] = out / "predictions.parquet"
        atomic_write_table(predictions, paths["predictions"])
    if ceiling is not None:
        paths["ceiling"] = out / "ceiling.json"
        atomic_write_json(ceiling, paths["ceiling"])
    return paths


def summary_table(result: EvaluationResult, metrics: Sequence[str] = ("pearson", "spearman", "auroc", "auprc", "mse")) -> pd.DataFrame:
    """Wide ``model x (metric, split)`` table of ``mean ± sd`` strings, plus the Pearson ceiling."""
    wide = M.format_summary(result.summary, metrics)
    if "ceiling_mean" in result.summary.columns:
        ceil = result.summary.drop_duplicates("split").set_index("split")["ceiling_mean"]
        frac = result.summary.pivot(index="model", columns="split", values="pearson_frac_ceiling")
        for split in ceil.index:
            wide[("pearson / ceiling", split)] = frac[split].reindex(wide.index).map(lambda v: f"{v:.2f}")
            wide.loc["noise ceiling (pearson)", ("pearson", split)] = f"{ceil[split]:.3f}"
        wide = wide.fillna("")
        wide.loc["noise ceiling (pearson)", [c for c in wide.columns if c[0] != "pearson"]] = ""
        wide.attrs["ceiling"] = ceil.to_dict()
    return wide


def _bar(enabled: bool, total: int):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="evaluation", unit="model-fold")
