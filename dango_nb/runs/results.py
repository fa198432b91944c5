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
    if metric is not None:
        return metric
    return "test_pearson" if "test_pearson" in df and df["test_pearson"].notna().any() else "val_pearson"


def metric_vs_axis(df: pd.DataFrame, x: str, hue: str | None = None, metric: str | None = None, ax=None,
                   synthetic: bool = False) -> Figure:
    """``metric`` (default test Pearson, else val) against axis ``x``, one line per ``hue`` value:
    mean over the runs sharing (x, hue) (other axes, e.g. seeds) with their individual values as
    points and the min-max range as a band."""
    metric = _metric(df, metric)
    if ax is None:
        fig = Figure(figsize=(5.5, 3.8), layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    ok = df[df["status"].isin(["done", "skipped"])] if "status" in df else df
    groups = [(None, ok)] if hue is None else list(ok.groupby(hue, sort=False))
    numeric = pd.api.types.is_numeric_dtype(ok[x])
    cats = list(dict.fromkeys(ok[x])) if not numeric else None
    for name, g in groups:
        g = g.dropna(subset=[metric])
        if g.empty:
            continue
        pos = g[x].astype(float) if numeric else g[x].map({c: i for i, c in enumerate(cats)}).astype(float)
        stats = g.assign(_x=pos).groupby("_x")[metric].agg(["mean", "min", "max"]).sort_index()
        label = None if name is None else str(name)
        line, = ax.plot(stats.index, stats["mean"], marker="o", label=label)
        ax.fill_between(stats.index, stats["min"], stats["max"], color=line.get_color(), alpha=0.15, lw=0)
        ax.scatter(pos, g[metric], s=12, color=line.get_color(), alpha=0.6)
    if cats is not None:
        labels = [str(c) for c in cats]
        # long category names (recipe variants) would run into each other on a horizontal axis
        rotate = sum(map(len, labels)) > 40
        ax.set_xticks(range(len(cats)), labels, rotation=30 if rotate else 0, ha="right" if rotate else "center")
    elif ok[x].nunique() <= 12:
        ax.set_xticks(sorted(ok[x].dropna().unique().astype(float)))
    ax.set_xlabel(x)
    ax.set_ylabel(metric.replace("_", " "))
    if hue is not None and ax.get_legend_handles_labels()[0]:
        ax.legend(title=hue.split(".")[-1], fontsize="small")
    ax.set_title(f"{metric.replace('_', ' ')} vs {x.split('.')[-1]}" + (" [synthetic benchmark]" if synthetic else ""),
                 fontsize="medium")
    return fig


def sweep_figures(df: pd.DataFrame, axes: Sequence[str], metric: str | None = None,
                  synthetic: bool = False) -> dict[str, Figure]:
    """Figures for a sweep: ``metric`` vs ``train.transition_epoch`` per ``train.schedule`` (when
    both are swept), and ``metric`` vs every other swept axis with more than one value."""
    metric = _metric(df, metric)
    figs: dict[str, Figure] = {}
    swept = [a for a in axes if a in df and df[a].nunique(dropna=False) > 1]
    if "train.transition_epoch" in swept:
        hue = "train.schedule" if "train.schedule" in swept else None
        figs[f"{metric}_vs_transition_epoch"] = metric_vs_axis(df, "train.transition_epoch", hue, metric,
                                                                synthetic=synthetic)
    for a in swept:
        if a == "train.transition_epoch":
            continue
        figs[f"{metric}_vs_{a.split('.')[-1] if a.count('.') < 2 else a.replace('.', '_')}"] = \
            metric_vs_axis(df, a, None, metric, synthetic=synthetic)
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
