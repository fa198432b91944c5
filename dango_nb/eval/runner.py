"""The evaluation runner: models x splits x folds -> one long metrics table.

For every split (``random``, ``gene1``, ``gene2``; see :mod:`dango_nb.eval.splits`) and fold, every
model (a registered name, :mod:`dango_nb.eval.registry`) is fitted on the fold's training part,
selects what it selects (epochs, checkpoints, ridge strength) on the validation part, and predicts
the test triplets from their gene indices only: a model never receives test targets
(:class:`~dango_nb.eval.registry.FoldData` does not carry them). Metrics (:mod:`dango_nb.metrics`)
are then computed on the test part, with bootstrap intervals and, on the embedded benchmark, the
noise ceiling (Pearson of the planted signal with measured tau on the same test triplets) beside
every row.

Outputs (``out_dir``, default ``reports/evaluation``, written atomically): ``metrics.csv`` (one row
per model x split x fold x seed: ``dango`` is scored on each of its ``ensemble_seeds`` fits, ``seed``
0, 1, ...; other models have ``seed`` 0), ``summary.csv`` (mean over seeds and folds, sd across
folds, sd across seeds and ``n_seeds``, Pearson as a fraction of the ceiling), ``ceiling.json``
(with ground truth), ``predictions.parquet`` (per test triplet and seed), ``ensemble_gain.csv`` and
``splits.csv``.

DANGO fits: with the study's data parameters (``data``), every fit the models need for every split
x fold x ensemble seed is submitted at once to :func:`dango_nb.runs.run_many` (one run folder each,
``out_dir/runs/<run_id>/``; on Ray with ``workers`` > 1 or an ``address``, else one after another
in this process); the models then receive these fits precomputed (``FoldData.cache``). A run
folder trains exactly what an in-process fit trains (same split rows, seed, configuration and
lambdas), so the numbers do not depend on where the fits ran. ``dango_single_<channel>`` fits
(a restricted cell graph) and fits without ``data`` stay in this process.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from dango_nb import metrics as M
from dango_nb.errors import ParamsError
from dango_nb.eval.ensemble import ensemble_gain
from dango_nb.eval.options import EvaluationOptions
from dango_nb.eval.registry import FoldData, ModelOutput, get_model
from dango_nb.eval.runners import DangoRun, dango_fits_needed, graph_channels
from dango_nb.eval.splits import Fold, make_splits, split_table
from dango_nb.fileio import atomic_write_json, atomic_write_table

__all__ = ["EvaluationResult", "run_evaluation", "planted_signal", "seed_values", "summary_table", "write_outputs"]


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


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


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


def _train_config(config):
    from dango_nb.train import TrainConfig

    if config is None:
        return TrainConfig()
    return TrainConfig(**config) if isinstance(config, Mapping) else config


def _check_models(options: EvaluationOptions, study, config, lambdas, signal):
    """The model specs to run, after every check that can fail before any work."""
    specs = [get_model(m) for m in options.models]
    if signal is None and any(s.needs_ground_truth for s in specs):
        raise ParamsError("oracle_signal needs a study with ground truth (the embedded benchmark)")
    if signal is not None and "oracle_signal" not in options.models:
        specs.append(get_model("oracle_signal"))
    if any(s.trains_dango for s in specs):
        config = _train_config(config)
        if lambdas is None:
            raise ParamsError("lambdas are needed to train DANGO models (channel -> lambda); run the lambda "
                             "notebook or dango_nb.lambdas.determine_lambdas first")
        channels = graph_channels(study.cell_graph)
        for s in specs:
            if s.variant is not None and s.variant.channel is not None and s.variant.channel not in channels:
                raise ParamsError(f"model {s.name!r}: channel {s.variant.channel!r} not in the cell graph ({channels})")
    return specs, config


def _folds(options: EvaluationOptions, all_idx: np.ndarray, seed: int) -> list[Fold]:
    jobs = []
    for split in options.splits:
        k = (options.n_test_genes or {}).get(split) if split != "random" else None
        split_folds = make_splits(split, all_idx, n_folds=options.n_folds, seed=seed,
                                  val_fraction=options.val_fraction, n_test_genes=k)
        for f in range(options.n_folds) if options.folds is None else options.folds:
            if not 0 <= f < len(split_folds):
                raise ParamsError(f"fold {f} out of range for n_folds={options.n_folds}")
            jobs.append(split_folds[f])
    return jobs


def _run_model(spec, data: FoldData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predictions ``(S, M)``, spread (NaN without) and fit seconds ``(S,)`` of one model on one
    fold; ``S`` is the number of seeds the model was fitted with (1 for most)."""
    t0 = time.perf_counter()
    out = spec.fn(data)
    if not isinstance(out, ModelOutput):
        out = ModelOutput(*out) if isinstance(out, tuple) else ModelOutput(out)
    wall = time.perf_counter() - t0
    pred = np.asarray(out.prediction, dtype=np.float64)
    pred = pred.reshape(1, -1) if pred.ndim < 2 else pred
    n = len(data.test_indices)
    if pred.ndim != 2 or pred.shape[1] != n:
        raise ValueError(f"model {spec.name!r} returned predictions of shape {pred.shape} for {n} test triplets")
    spread = np.full(pred.shape, np.nan) if out.spread is None else \
        np.asarray(out.spread, np.float64).reshape(pred.shape)
    fit_s = np.broadcast_to(np.asarray(wall if out.fit_s is None else out.fit_s, dtype=np.float64),
                            (len(pred),))
    return pred, spread, fit_s


@dataclass
class _Tables:
    rows: list
    predictions: list
    gains: list


def run_evaluation(study, options: EvaluationOptions | None = None, *, config=None,
                   lambdas: Mapping[str, float] | None = None, seed: int = 0,
                   out_dir: str | os.PathLike | None = "reports/evaluation", progress: bool = True,
                   data=None, **changes: Any) -> EvaluationResult:
    """Fit and score ``options.models`` on ``options.splits`` x folds of ``study``; one row per
    model x split x fold.

    Args:
        study: a :class:`~dango_nb.data.study.Study` (``cell_graph``, ``triplets``, optional
            ``ground_truth``).
        options: :class:`~dango_nb.eval.options.EvaluationOptions` (default: its defaults);
            keyword ``changes`` (its field names) are applied over it and validated the same way.
        config: :class:`~dango_nb.train.TrainConfig` (or a dict of its fields) for every DANGO
            fit; its ``seed`` is replaced by ``seed + s`` per ensemble seed. Needed for DANGO
            models and ``mlp_embeddings``.
        lambdas: channel -> lambda for the reconstruction loss (from the lambda notebook or
            :func:`dango_nb.lambdas.determine_lambdas`). Needed for DANGO models.
        seed: seeds the splits, the baselines and (``seed + s``) the DANGO runs.
        out_dir: where the tables go (None: nothing written).
        data: the :class:`~dango_nb.params.DataParams` that load ``study`` (as in the notebook's
            params). With it the DANGO fits are run folders trained through
            :func:`dango_nb.runs.run_many` (``workers``, ``address``, ``keep_runs``); without it
            they are fitted in this process (``workers`` > 1 or ``address`` then is an error).

    Returns an :class:`EvaluationResult`; ``metrics`` has one row per model x split x fold x
    seed (``seed``: which of a multi-seed model's fits, 0 for models fitted once) with the columns
    of :func:`dango_nb.metrics.evaluate` plus ``ceiling`` (NaN without ground truth),
    ``n_train``, ``n_val``, ``fit_s`` and ``<metric>_ci_low/_ci_high``.
    """
    t_start = time.perf_counter()
    options = (options or EvaluationOptions()).replace(**changes) if changes else (options or EvaluationOptions())
    triplets = study.triplets
    all_idx = _np(triplets.indices).astype(np.int64)
    targets = _np(triplets.targets).astype(np.float64)
    pvalues = _np(triplets.pvalues).astype(np.float64) if getattr(triplets, "pvalues", None) is not None else None
    signal = planted_signal(study)
    specs, config = _check_models(options, study, config, lambdas, signal)

    if data is None and options.uses_ray:
        raise ParamsError("workers > 1 or address need the study's data parameters (run_evaluation(..., data=...)): "
                          "Ray workers load the study themselves")
    if data is not None and not hasattr(data, "load_study"):
        from dango_nb.params import DataParams, params_from_mapping

        data = params_from_mapping(data, DataParams, "data")

    tables = _Tables([], [], [])
    shared_cache: dict = {}
    fold_list = _folds(options, all_idx, seed)
    for fold in fold_list:
        fold.check(len(all_idx))
    keep = options.keep_checkpoints and out_dir is not None
    keep_runs = options.keep_runs and out_dir is not None
    with contextlib.ExitStack() as stack:
        tmp = None if keep else stack.enter_context(tempfile.TemporaryDirectory(prefix="dango_eval_"))
        ckpt_root = Path(out_dir) / "checkpoints" if tmp is None else Path(tmp)
        fits: dict = {}
        device = "cpu"
        if data is not None and any(s.trains_dango for s in specs):
            runs_root = Path(out_dir) / "runs" if keep_runs else \
                Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dango_eval_runs_")))
            fits = _fit_runs(study, data, options, specs, fold_list, config, lambdas, seed, targets, runs_root,
                             progress)
            from dango_nb.train import resolve_device

            device = str(resolve_device(config.device))
        bar = _bar(progress, total=len(fold_list) * len(specs))
        for fold in fold_list:
            fd = FoldData(split=fold.split, fold=fold.fold, cell_graph=study.cell_graph,
                          train=triplets.subset(_long(fold.train)), val=triplets.subset(_long(fold.val)),
                          test_indices=all_idx[fold.test].copy(), n_genes=int(study.cell_graph["gene"].num_nodes),
                          seed=seed, config=config, lambdas=lambdas,
                          workdir=ckpt_root / fold.split / f"fold{fold.fold}", options=options,
                          test_signal=None if signal is None else signal[fold.test])
            fd.cache.update({k: v for k, v in shared_cache.items() if k == "pretrain_embeddings"})
            for variant, folders in fits.get((fold.split, fold.fold), {}).items():
                fd.cache[("fits", variant)] = [DangoRun.from_folder(f, study.cell_graph, device) for f in folders]
            _run_fold(fold, fd, specs, options, targets, pvalues, signal, seed, tables, bar)
            if "pretrain_embeddings" in fd.cache:
                shared_cache["pretrain_embeddings"] = fd.cache["pretrain_embeddings"]
        if bar is not None:
            bar.close()
    return _result(study, tables, fold_list, signal, out_dir, t_start)


def _run_id(fold: Fold, name: str, s: int) -> str:
    return f"{fold.split}_fold{fold.fold}_seed{s}" if name == "dango" else f"{fold.split}_fold{fold.fold}_{name}_seed{s}"


def _fit_runs(study, data, options: EvaluationOptions, specs, fold_list, config, lambdas, seed: int, targets,
              root: Path, progress: bool) -> dict:
    """Train every DANGO fit of every fold as a run folder under ``root`` with one
    :func:`~dango_nb.runs.run_many` call; ``{(split, fold): {variant: [folder per seed]}}``."""
    import torch

    from dango_nb.runs import RunParams, RunSpec, SplitParams, run_many
    from dango_nb.runs.folder import RunFolder, remember_study
    from dango_nb.eval.runners import _config_for

    needed = {v: spec for v, spec in dango_fits_needed(specs, options).items() if v.channel is None}
    run_specs, where = [], {}
    for fold in fold_list:
        k = (options.n_test_genes or {}).get(fold.split) if fold.split != "random" else None
        split = SplitParams(name=fold.split, fold=fold.fold, n_folds=options.n_folds,
                            val_fraction=options.val_fraction, seed=seed, n_test_genes=k)
        for variant, (name, n_seeds) in needed.items():
            for s in range(n_seeds):
                cfg = _config_for(config, variant, seed + s, None)
                rid = _run_id(fold, name, s)
                params = RunParams(data=data, train=cfg, split=split, lambdas={k_: float(v) for k_, v in lambdas.items()})
                run_specs.append(RunSpec(rid, {"split": fold.split, "fold": fold.fold, "model": name, "seed": s},
                                         params, root / rid))
                where.setdefault((fold.split, fold.fold), {}).setdefault(variant, []).append(root / rid)
    if not run_specs:
        return {}
    root.mkdir(parents=True, exist_ok=True)
    stale = _set_aside_stale(run_specs)
    try:
        if options.uses_ray:
            outcomes = run_many(run_specs, workers=options.workers, address=options.address,
                                gpus_per_run=options.gpus_per_run, cpus_per_run=options.cpus_per_run,
                                backend="ray", progress=progress)
        else:
            remember_study(data, study)  # the fits in this process use the study already loaded
            outcomes = run_many(run_specs, backend="inline", cpus_per_run=torch.get_num_threads(), progress=progress)
    finally:  # also on Ctrl-C: a replaced folder goes only once its new fit is complete
        _settle_stale(stale)
    failed = [o for o in outcomes if not o.ok]
    if failed:
        kept = f" (the finished run folders in {root} are reused by a rerun)" if options.keep_runs else ""
        raise RuntimeError(f"{len(failed)} of {len(outcomes)} DANGO fits failed{kept}: "
                           + "; ".join(f"{o.run_id}: {o.error}" for o in failed[:5]))
    by_id = {sp.run_id: sp for sp in run_specs}
    for fold in fold_list:  # the run folders hold the fold's rows and targets: a wrong `data` fails here
        for folders in where.get((fold.split, fold.fold), {}).values():
            test = RunFolder.open(folders[0]).predictions("test")
            if not (np.array_equal(np.sort(test["row"].to_numpy()), np.sort(fold.test))
                    and np.allclose(test["tau"].to_numpy(), targets[test["row"].to_numpy()], equal_nan=True)):
                raise ParamsError(f"{folders[0]}: its test triplets are not those of {fold.split} fold {fold.fold}; "
                                  f"data ({by_id[folders[0].name].params.data}) does not describe the study evaluated")
    return where


def _set_aside_stale(run_specs) -> dict:
    """Complete run folders made with other parameters (an earlier report with other settings)
    are moved aside; :func:`_settle_stale` removes them once their replacement is complete."""
    from dango_nb.fileio import differences, read_json
    from dango_nb.runs.folder import is_complete, request_of

    def recorded_request(out: Path):
        # An unreadable or damaged record (not JSON, a folder, a FIFO) makes the run stale: it is
        # retrained rather than trusted or shown as a traceback.
        try:
            info = read_json(out / "run.json")
        except (OSError, ValueError):
            return None
        return info.get("request") if isinstance(info, dict) else None

    stale = {}
    for sp in run_specs:
        out = Path(sp.out)
        if not is_complete(out):
            continue
        request = recorded_request(out)
        if request is None or differences(request, request_of(sp.params)):
            aside = out.with_name(f".{out.name}.replaced")
            if aside.exists():
                import shutil

                shutil.rmtree(aside)
            os.replace(out, aside)
            stale[sp.run_id] = (out, aside)
    return stale


def _settle_stale(stale: dict) -> None:
    import shutil

    from dango_nb.runs.folder import is_complete

    for out, aside in stale.values():
        if is_complete(out):
            shutil.rmtree(aside)
        elif not out.exists():
            os.replace(aside, out)


def _long(rows: np.ndarray):
    import torch

    return torch.as_tensor(rows, dtype=torch.long)


def _run_fold(fold: Fold, data: FoldData, specs, options: EvaluationOptions, targets, pvalues, signal,
              seed: int, tables: _Tables, bar) -> None:
    test_rows, all_idx = fold.test, data.test_indices
    y_test = targets[test_rows]
    ceiling = M.noise_ceiling(signal[test_rows], y_test) if signal is not None else float("nan")
    for spec in specs:
        if bar is not None:
            bar.set_description(f"{fold.split} fold {fold.fold}: {spec.name}")
        if len(test_rows):
            preds, spreads, fit_s = _run_model(spec, data)
            for s, (pred, spread) in enumerate(zip(preds, spreads)):
                tables.rows.append(_metric_row(spec.name, fold, s, y_test, pred, ceiling, fit_s[s], options, seed))
                tables.predictions.append(pd.DataFrame({
                    "model": spec.name, "split": fold.split, "fold": fold.fold, "seed": s, "row": test_rows,
                    "gene1": all_idx[:, 0], "gene2": all_idx[:, 1], "gene3": all_idx[:, 2],
                    "target": y_test, "prediction": pred, "spread": spread,
                    **({"pvalue": pvalues[test_rows]} if pvalues is not None else {}),
                    **({"signal": signal[test_rows]} if signal is not None else {})}))
        if spec.name == "dango_ensemble" and "ensemble_members" in data.cache:
            preds, names, groups = data.cache["ensemble_members"]
            g = ensemble_gain(y_test, preds, names, seed=seed, n_balanced_repeats=options.n_balanced_repeats,
                              groups=groups)
            g.insert(0, "fold", fold.fold)
            g.insert(0, "split", fold.split)
            tables.gains.append(g)
        if bar is not None:
            bar.update(1)


def _result(study, tables: _Tables, fold_list, signal, out_dir, t_start: float) -> EvaluationResult:
    metrics = pd.DataFrame(tables.rows)
    summary = M.summarize(metrics)
    predictions = pd.concat(tables.predictions, ignore_index=True) if tables.predictions else pd.DataFrame()
    ensemble = pd.concat(tables.gains, ignore_index=True) if tables.gains else pd.DataFrame()
    splits_df = split_table(fold_list) if fold_list else pd.DataFrame()
    ceiling = _ceiling_summary(study, metrics) if signal is not None else None
    synthetic = bool(getattr(study, "synthetic", False))
    metrics.attrs["elapsed_s"] = time.perf_counter() - t_start
    paths = write_outputs(out_dir, metrics, summary, ceiling, predictions, ensemble, splits_df, synthetic) \
        if out_dir is not None else {}
    return EvaluationResult(metrics, summary, ceiling, predictions, ensemble, splits_df, paths, synthetic)


def _metric_row(model: str, fold: Fold, model_seed: int, y: np.ndarray, pred: np.ndarray, ceiling: float,
                fit_s: float, options: EvaluationOptions, seed: int) -> dict:
    n_boot, ci_metrics, n_balanced_repeats = options.n_boot, options.ci_metrics, options.n_balanced_repeats
    row = {"model": model, "split": fold.split, "fold": fold.fold, "seed": model_seed,
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
    """Wide ``model x (metric, split)`` table of ``mean ± sd`` strings (mean over folds and seeds,
    sd over folds), the Pearson sd over seeds of models fitted with several seeds
    (``"0.243 (2 seeds)"``; each seed's value is in ``result.metrics``), plus the Pearson ceiling."""
    wide = M.format_summary(result.summary, metrics)
    summ = result.summary
    if "pearson_seed_sd" in summ.columns and (summ["n_seeds"] > 1).any():
        seeded = summ[summ["n_seeds"] > 1]
        for split in dict.fromkeys(summ["split"]):
            cell = {r.model: f"{_fmt_num(r.pearson_seed_sd)} ({r.n_seeds} seeds)"
                    for r in seeded[seeded["split"] == split].itertuples()}
            wide[("pearson: sd over seeds", split)] = [cell.get(m, "") for m in wide.index]
    if "ceiling_mean" in result.summary.columns:
        ceil = result.summary.drop_duplicates("split").set_index("split")["ceiling_mean"]
        frac = result.summary.pivot(index="model", columns="split", values="pearson_frac_ceiling")
        for split in ceil.index:
            wide[("pearson / ceiling", split)] = frac[split].reindex(wide.index).map(
                lambda v: f"{v:.2f}" if np.isfinite(v) else "n/a")
            wide.loc["noise ceiling (pearson)", ("pearson", split)] = f"{ceil[split]:.3f}"
        wide = wide.fillna("")
        wide.loc["noise ceiling (pearson)", [c for c in wide.columns if c[0] != "pearson"]] = ""
        wide.attrs["ceiling"] = ceil.to_dict()
    return wide


def seed_values(metrics: pd.DataFrame, model: str = "dango", metric: str = "pearson") -> dict[str, list[float]]:
    """``split -> [metric of seed 0, seed 1, ...]`` (each the mean over folds) of one model, from
    the evaluation's metrics table: what the mean over seeds in the summary is made of."""
    sub = metrics[metrics["model"] == model]
    if "seed" not in sub.columns:
        sub = sub.assign(seed=0)
    return {split: [float(v) for v in g.groupby("seed", sort=True)[metric].mean()]
            for split, g in sub.groupby("split", sort=False)}


def _fmt_num(v: float) -> str:
    return f"{v:.3f}" if np.isfinite(v) else "n/a"


def _bar(enabled: bool, total: int):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="evaluation", unit="model-fold")
