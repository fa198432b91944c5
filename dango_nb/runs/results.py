"""A sweep's merged results table and its figures.

``results_table`` has one row per run: ``run_id``, ``status``, the axis values (one column per
swept key, e.g. ``train.transition_epoch``), ``best_epoch``, ``epochs_run``, ``val_*`` / ``test_*``
metrics of the best-epoch model, ``fit_s``, ``wall_s``, ``device``, ``error`` and ``path``.
Figures are plain matplotlib ``Figure`` objects (no pyplot state); each panel function takes
``ax=``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

__all__ = ["METRIC_COLUMNS", "results_table", "metric_vs_axis", "sweep_figures", "write_results"]

METRIC_COLUMNS = tuple(f"{part}_{m}" for part in ("val", "test")
                       for m in ("pearson", "spearman", "mse", "auroc", "auprc"))


def results_table(outcomes: Iterable, axes: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per :class:`~dango_nb.runs.executor.RunOutcome` (failed runs keep NaN metrics)."""
    rows = []
    outcomes = list(outcomes)
    keys = list(axes) if axes is not None else list(dict.fromkeys(k for o in outcomes for k in o.axes))
    for o in outcomes:
        rec = o.record or {}
        row = {"run_id": o.run_id, "status": o.status}
        row.update({k: o.axes.get(k) for k in keys})
        row["best_epoch"] = rec.get("best_epoch")
        row["epochs_run"] = rec.get("epochs_run")
        mets = rec.get("metrics") or {}
        for col in METRIC_COLUMNS:
            part, name = col.split("_", 1)
            v = (mets.get(part) or {}).get(name)
            row[col] = np.nan if v is None else float(v)
        row["fit_s"] = rec.get("fit_s")
        row["wall_s"] = o.wall_s
        row["device"] = rec.get("device")
        row["error"] = o.error
        row["path"] = str(o.path)
        rows.append(row)
    df = pd.DataFrame(rows)
    for c in ("best_epoch", "epochs_run"):
        if c in df:
            df[c] = df[c].astype("Int64")
    return df


def _metric(df: pd.DataFrame, metric: str | None) -> str:
    """The metric a sweep is read by: validation Pearson (what a recipe may be chosen on), test
    Pearson only when no run recorded a validation score."""
    if metric is not None:
        return metric
    return "val_pearson" if "val_pearson" in df and df["val_pearson"].notna().any() else "test_pearson"


def _label(metric: str) -> str:
    part, _, name = metric.partition("_")
    return {"val": f"validation {name}", "test": f"test {name}"}.get(part, metric.replace("_", " "))


def _categorical(df: pd.DataFrame, x: str) -> bool:
    """Categories get points, not lines: text values, and seeds (numbers that name a replicate,
    not an ordered quantity a line could interpolate)."""
    return not pd.api.types.is_numeric_dtype(df[x]) or x.split(".")[-1] == "seed"


def metric_vs_axis(df: pd.DataFrame, x: str, hue: str | None = None, metric: str | None = None, ax=None,
                   synthetic: bool = False, title: str | None = None) -> Figure:
    """``metric`` (default validation Pearson, see :func:`_metric`) against axis ``x``, per ``hue``
    value, over the runs sharing (x, hue) (other axes, e.g. seeds).

    A numeric axis (``transition_epoch``, a learning rate) gets a line through the means with the
    runs as points and their min-max range as a band. A categorical one (schedule, variant, seed)
    gets the mean as a point with an sd error bar (seaborn ``pointplot``, no line: there is
    nothing between two categories) and every run as a small point beside it."""
    import seaborn as sns

    metric = _metric(df, metric)
    if ax is None:
        fig = Figure(figsize=(5.5, 3.8), layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    ok = df[df["status"].isin(["done", "skipped"])] if "status" in df else df
    ok = ok.dropna(subset=[metric])
    if _categorical(ok if len(ok) else df, x):
        cats = [str(c) for c in dict.fromkeys(df[x].dropna())]
        data = ok.assign(**{x: ok[x].astype(str)})
        hue_order = None if hue is None else [str(h) for h in dict.fromkeys(df[hue])]
        if hue is not None:
            data = data.assign(**{hue: data[hue].astype(str)})
        if len(data):
            sns.stripplot(data, x=x, y=metric, hue=hue, order=cats, hue_order=hue_order, dodge=hue is not None,
                          size=3.5, alpha=0.45, jitter=0.08, legend=False, ax=ax)
            sns.pointplot(data, x=x, y=metric, hue=hue, order=cats, hue_order=hue_order,
                          dodge=0.4 if hue is not None else False, linestyle="none", errorbar="sd", capsize=0.12,
                          marker="D", markersize=6, err_kws={"linewidth": 1.3}, ax=ax)
        labels = cats
        # long category names (recipe variants) would run into each other on a horizontal axis
        rotate = sum(map(len, labels)) > 40
        ax.set_xticks(range(len(cats)), labels, rotation=30 if rotate else 0, ha="right" if rotate else "center")
        ax.set_xlim(-0.5, len(cats) - 0.5)
        what = "diamond: mean ± sd of runs; dots: runs"
    else:
        groups = [(None, ok)] if hue is None else list(ok.groupby(hue, sort=False))
        for name, g in groups:
            if g.empty:
                continue
            pos = g[x].astype(float)
            stats = g.assign(_x=pos).groupby("_x")[metric].agg(["mean", "min", "max"]).sort_index()
            label = None if name is None else str(name)
            line, = ax.plot(stats.index, stats["mean"], marker="o", label=label)
            ax.fill_between(stats.index, stats["min"], stats["max"], color=line.get_color(), alpha=0.15, lw=0)
            ax.scatter(pos, g[metric], s=12, color=line.get_color(), alpha=0.6)
        if ok[x].nunique() <= 12:
            ax.set_xticks(sorted(ok[x].dropna().unique().astype(float)))
        what = "line: mean of runs; dots: runs; band: min-max"
    ax.set_xlabel(x)
    ax.set_ylabel(_label(metric))
    handles, _ = ax.get_legend_handles_labels()
    if hue is not None and handles:
        ax.legend(title=hue.split(".")[-1], fontsize="small")
    elif ax.get_legend() is not None:
        ax.get_legend().remove()
    head = title or f"{_label(metric)} vs {x.split('.')[-1]}"
    ax.set_title(f"{head}\n{what}" + (" [synthetic benchmark]" if synthetic else ""), fontsize="medium")
    return fig


def _beside(metric: str) -> str | None:
    """The test column shown beside a validation metric (``val_pearson`` -> ``test_pearson``)."""
    return "test_" + metric[len("val_"):] if metric.startswith("val_") else None


def sweep_figures(df: pd.DataFrame, axes: Sequence[str], metric: str | None = None,
                  synthetic: bool = False) -> dict[str, Figure]:
    """Figures for a sweep: ``metric`` vs ``train.transition_epoch`` per ``train.schedule`` (when
    both are swept), and ``metric`` vs every other swept axis with more than one value.

    ``metric`` defaults to validation Pearson, the score recipes are chosen on; each figure has
    the matching test metric in a second panel beside it (same y axis), for the record only: a
    recipe picked by its test score has an optimistic test score."""
    metric = _metric(df, metric)
    test = _beside(metric)
    test = test if test in df and df[test].notna().any() else None
    figs: dict[str, Figure] = {}

    def figure(x: str, hue: str | None) -> Figure:
        if test is None:
            return metric_vs_axis(df, x, hue, metric, synthetic=synthetic)
        fig = Figure(figsize=(10.5, 4.2), layout="constrained")
        left, right = fig.subplots(1, 2, sharey=True)
        metric_vs_axis(df, x, hue, metric, ax=left, title=f"{_label(metric)} (choose recipes on this)")
        metric_vs_axis(df, x, hue, test, ax=right, title=f"{_label(test)} (beside it, not for choosing)")
        fig.suptitle(f"{_label(metric).split()[-1]} vs {x.split('.')[-1]}"
                     + (" [synthetic benchmark]" if synthetic else ""))
        right.yaxis.set_tick_params(labelleft=True)
        return fig

    swept = [a for a in axes if a in df and df[a].nunique(dropna=False) > 1]
    if "train.transition_epoch" in swept:
        hue = "train.schedule" if "train.schedule" in swept else None
        figs[f"{metric}_vs_transition_epoch"] = figure("train.transition_epoch", hue)
    for a in swept:
        if a == "train.transition_epoch":
            continue
        figs[f"{metric}_vs_{a.split('.')[-1] if a.count('.') < 2 else a.replace('.', '_')}"] = figure(a, None)
    return figs


def write_results(df: pd.DataFrame, folder: str | os.PathLike, axes: Sequence[str],
                  synthetic: bool = False) -> Mapping[str, Path]:
    """``results.csv`` + ``results.parquet`` and ``figures/*.png`` in the sweep folder (atomic)."""
    from ..fileio import atomic_write_table
    from ..plots import save_figure

    folder = Path(folder)
    paths = {"results_csv": folder / "results.csv", "results_parquet": folder / "results.parquet"}
    atomic_write_table(df, paths["results_csv"])
    atomic_write_table(df, paths["results_parquet"])
    if (df["status"].isin(["done", "skipped"])).any():
        for name, fig in sweep_figures(df, axes, synthetic=synthetic).items():
            p = folder / "figures" / f"{name}.png"
            save_figure(fig, p)
            paths[name] = p
    return paths
