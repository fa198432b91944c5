"""Figures for the notebooks and reports.

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot (no global figure
state, works headless and inside widgets); :func:`save_figure` writes it atomically. Inputs are the
tables the library produces (training history frames with the columns in docs/architecture.md, the
lambda table, evaluation frames) or plain arrays. ``synthetic=True`` marks the figure as coming from
the embedded synthetic benchmark, so no one mistakes it for a result on real data.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from . import metrics
from .fileio import atomic_path

__all__ = [
    "SYNTHETIC_LABEL", "save_figure", "figure_png", "schedule_alpha", "plot_alpha", "lambda_bars",
    "reconstruction_curves", "edge_recovery_auroc", "meta_weight_distribution", "embedding_projection",
    "final_results", "schedule_comparison", "pearson", "predicted_vs_measured", "pvalue_vs_prediction",
    "spread_calibration", "metrics_bars",
]

SYNTHETIC_LABEL = "synthetic benchmark"
_CHANNEL_COLOURS = {
    "neighborhood": "#4c72b0", "fusion": "#dd8452", "cooccurence": "#55a868",
    "coexpression": "#c44e52", "experimental": "#8172b3", "database": "#937860",
}


def _title(fig: Figure, text: str, synthetic: bool) -> None:
    fig.suptitle(f"{text}\n[{SYNTHETIC_LABEL}]" if synthetic else text)


def _colour(channel: str, i: int) -> str:
    return _CHANNEL_COLOURS.get(channel, f"C{i % 10}")


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix) atomically; returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    return path


def figure_png(fig: Figure, dpi: int = 90) -> bytes:
    """PNG bytes of ``fig`` (for ``ipywidgets.Image``)."""
    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, bbox_inches="tight", format="png")
    return buf.getvalue()


def pearson(y_true, y_pred) -> float:
    """Pearson r over finite pairs (NaN when fewer than two or a constant side)."""
    a, b = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    ok = np.isfinite(a) & np.isfinite(b)
    return metrics.pearson(a[ok], b[ok])


# ------------------------------------------------------------------------------------ schedules
def schedule_alpha(schedule, epochs: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(epoch, alpha, w_int)`` arrays for epochs ``0 .. epochs-1`` of a schedule object."""
    ep = np.arange(int(epochs))
    alpha = np.array([schedule.alpha(int(e)) for e in ep], dtype=float)
    w_int = np.array([schedule.weights(int(e))[1] for e in ep], dtype=float)
    return ep, alpha, w_int


def plot_alpha(ax, epoch, alpha, w_int=None, transition_epoch: int | None = None, label: str | None = None):
    """alpha(epoch) on ``ax``; ``w_int`` is drawn too where it is not ``1 - alpha`` (PaperTwoStage)."""
    ax.plot(epoch, alpha, drawstyle="steps-post" if len(epoch) < 400 else "default", lw=2,
            label=label or "alpha (weight on reconstruction)")
    if w_int is not None and not np.allclose(np.asarray(w_int), 1.0 - np.asarray(alpha)):
        ax.plot(epoch, w_int, ls="--", lw=1.5, color="0.35", label="w_int (weight on interaction)",
                drawstyle="steps-post" if len(epoch) < 400 else "default")
    if transition_epoch is not None:
        ax.axvline(transition_epoch, color="0.6", ls=":", lw=1)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("epoch")
    ax.set_ylabel("alpha")
    ax.legend(loc="best", fontsize=8)


# -------------------------------------------------------------------------------------- lambdas
def lambda_bars(table: pd.DataFrame, reference_pct: Mapping[str, float] | None = None,
                threshold_pct: float = 1.0, synthetic: bool = False, title: str | None = None,
                pct_column: str = "pct_decreased_zeros", lambda_column: str = "lambda",
                channel_column: str = "channel") -> Figure:
    """Percentage of decreased zeros per channel, the threshold line, lambda over each bar and the
    paper's reference percentages (STRING v9.1 -> v10) marked where given."""
    tab = table.reset_index() if channel_column not in table.columns else table
    channels = [str(c) for c in tab[channel_column]]
    pct = tab[pct_column].to_numpy(dtype=float)
    lam = tab[lambda_column].to_numpy(dtype=float)
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(channels))
    ax.bar(x, pct, color=[_colour(c, i) for i, c in enumerate(channels)], alpha=0.85)
    ax.axhline(threshold_pct, color="k", ls="--", lw=1, label=f"{threshold_pct:g}% threshold")
    ref = {c: float(v) for c, v in (reference_pct or {}).items() if c in channels}
    top = max(float(np.nanmax(pct)) if len(pct) else 0.0, threshold_pct, max(ref.values(), default=0.0))
    for xi, c, p, l in zip(x, channels, pct, lam):
        y = max(p if np.isfinite(p) else 0.0, ref.get(c, 0.0))
        ax.text(xi, y + 0.02 * top, f"λ = {l:g}\n{p:.2f}%", ha="center", va="bottom", fontsize=8)
    for k, (c, v) in enumerate(ref.items()):
        xi = channels.index(c)
        ax.plot([xi - 0.4, xi + 0.4], [v, v], color="crimson", lw=2.5,
                label="paper's value (STRING v9.1 -> v10)" if k == 0 else None)
    labels = [f"{c}\n(paper {ref[c]:g}%)" if c in ref else c for c in channels]
    ax.set_xticks(x, labels, rotation=0, fontsize=8)
    ax.set_ylim(0, top * 1.3)
    ax.set_ylabel("decreased zeros (% of earlier non-edges)")
    ax.legend(loc="upper left", fontsize=8)
    _title(fig, title or "Percentage of decreased zeros per STRING channel", synthetic)
    return fig


# ---------------------------------------------------------------------------------- pre-training
def reconstruction_curves(history: pd.DataFrame, synthetic: bool = False) -> Figure:
    """Per-channel reconstruction loss (``loss_rec_<channel>`` columns) against epoch, log scale."""
    cols = [c for c in history.columns if c.startswith("loss_rec_") and c != "loss_rec_weighted"]
    if not cols:
        raise ValueError("history has no loss_rec_<channel> columns")
    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.add_subplot()
    for i, c in enumerate(cols):
        ch = c[len("loss_rec_"):]
        ax.plot(history["epoch"], history[c], label=ch, color=_colour(ch, i), lw=1.6)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("weighted MSE (reconstruction)")
    ax.legend(fontsize=8, ncols=2)
    _title(fig, "Pre-training: reconstruction loss per channel", synthetic)
    return fig


def edge_recovery_auroc(auroc: Mapping[str, float], synthetic: bool = False,
                        title: str = "Held-out edge recovery per channel") -> Figure:
    """AUROC of held-out edges against sampled non-edges, one bar per channel, chance at 0.5."""
    ch = list(auroc)
    vals = np.array([auroc[c] for c in ch], dtype=float)
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(ch))
    ax.bar(x, vals, color=[_colour(c, i) for i, c in enumerate(ch)], alpha=0.85)
    for xi, v in zip(x, vals):
        ax.text(xi, (v if np.isfinite(v) else 0) + 0.01, "n/a" if not np.isfinite(v) else f"{v:.3f}",
                ha="center", va="bottom", fontsize=8)
    ax.axhline(0.5, color="k", ls="--", lw=1, label="chance")
    ax.set_xticks(x, ch, rotation=20)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("AUROC")
    ax.legend(fontsize=8, loc="lower right")
    _title(fig, title, synthetic)
    return fig


def meta_weight_distribution(weights, channels: Sequence[str], synthetic: bool = False) -> Figure:
    """Distribution over genes of each channel's meta-embedding weight; ``weights`` is (N, C)."""
    w = np.asarray(weights, dtype=float)
    if w.ndim != 2 or w.shape[1] != len(channels):
        raise ValueError(f"weights must be (genes, {len(channels)}), got {w.shape}")
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    parts = ax.violinplot([w[:, j] for j in range(w.shape[1])], showmedians=True)
    for j, body in enumerate(parts["bodies"]):
        body.set_facecolor(_colour(channels[j], j))
        body.set_alpha(0.7)
    ax.axhline(1.0 / len(channels), color="k", ls="--", lw=1, label=f"uniform (1/{len(channels)})")
    ax.set_xticks(np.arange(1, len(channels) + 1), list(channels), rotation=20)
    ax.set_ylabel("meta-embedding weight")
    ax.legend(fontsize=8)
    _title(fig, f"Meta-embedding weight per channel over {w.shape[0]} genes", synthetic)
    return fig


def _natural(v) -> tuple:
    """Sort key: numbers numerically (2 before 11), then everything else by text."""
    try:
        return (0, float(v), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(v))


def embedding_projection(embeddings, labels=None, synthetic: bool = False, seed: int = 0,
                         title: str = "Integrated gene embeddings (PCA)", max_groups: int = 10) -> Figure:
    """2-D PCA of (N, H) embeddings, coloured by ``labels`` (e.g. planted modules; NaN = none).

    Only the ``max_groups`` largest groups get their own colour (more would repeat colours); the
    other labelled genes are drawn in light grey as "other modules".
    """
    from sklearn.decomposition import PCA

    x = np.asarray(embeddings, dtype=float)
    pca = PCA(n_components=2, random_state=seed)
    xy = pca.fit_transform(x)
    fig = Figure(figsize=(6.5, 5.5), layout="constrained")
    ax = fig.add_subplot()
    if labels is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=6, alpha=0.6, color="C0")
    else:
        lab = pd.Series(np.asarray(labels, dtype=object))
        none = (lab.isna() | lab.astype(str).isin(["", "-1", "none", "None"])).to_numpy()
        sizes = lab[~none].value_counts(sort=False)
        order = sorted(sizes.index, key=lambda m: (-sizes[m], str(m)))
        shown, rest = order[:max_groups], order[max_groups:]
        if none.any():
            ax.scatter(xy[none, 0], xy[none, 1], s=5, alpha=0.3, color="0.8", label="no module")
        if rest:
            sel = lab.isin(rest).to_numpy()
            ax.scatter(xy[sel, 0], xy[sel, 1], s=5, alpha=0.35, color="0.6",
                       label=f"{len(rest)} other modules")
        for i, m in enumerate(sorted(shown, key=_natural)):
            sel = (lab == m).to_numpy()
            ax.scatter(xy[sel, 0], xy[sel, 1], s=11, alpha=0.85, color=f"C{i % 10}", label=f"module {m}")
        ax.legend(fontsize=7, ncols=2, markerscale=1.5, loc="best")
    ev = pca.explained_variance_ratio_
    ax.set_xlabel(f"PC1 ({100 * ev[0]:.1f}% var)")
    ax.set_ylabel(f"PC2 ({100 * ev[1]:.1f}% var)")
    _title(fig, title, synthetic)
    return fig


# ------------------------------------------------------------------------------ loss schedules
def _plain_log_ticks(ax) -> None:
    """Log axis with plain numbers (``0.35``, not ``3.5 x 10^-1``) when its range is narrow (the
    default labels would show one or no major tick there)."""
    from matplotlib.ticker import FuncFormatter

    lo, hi = ax.get_ylim()
    if not lo > 0 or hi / lo >= 20:
        return
    fmt = FuncFormatter(lambda v, _pos: f"{v:.3g}")
    ax.yaxis.set_major_formatter(fmt)
    ax.yaxis.set_minor_formatter(fmt)
    ax.tick_params(axis="y", which="minor", labelsize=7)


def _log_lines(ax, history: pd.DataFrame, cols: Sequence[str], labels: Sequence[str],
               transition_epoch: int | None):
    for c, lab in zip(cols, labels):
        if c in history.columns:
            y = history[c].to_numpy(dtype=float)
            y = np.where(y > 0, y, np.nan)  # zero weighted losses (alpha = 0 or 1) are off the log axis
            ax.plot(history["epoch"], y, label=lab, lw=1.6)
    ax.set_yscale("log")
    _plain_log_ticks(ax)
    ax.set_xlabel("epoch")
    if transition_epoch is not None:
        ax.axvline(transition_epoch, color="0.6", ls=":", lw=1)
    ax.legend(fontsize=8)


def final_results(history: pd.DataFrame, y_true, y_pred, schedule: str, transition_epoch: int,
                  synthetic: bool = False, schedule_obj=None) -> Figure:
    """The 3x2 overfitting summary of one schedule.

    (1) total loss; (2) true vs predicted with y = x and Pearson r; (3) unweighted reconstruction and
    interaction loss; (4) histogram of prediction errors with the MSE; (5) weighted losses; (6) alpha.
    ``y_true``/``y_pred`` are the batch's measured and final predicted tau.
    """
    yt, yp = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    ok = np.isfinite(yt) & np.isfinite(yp)
    r = pearson(yt, yp)
    err = yp[ok] - yt[ok]
    mse = float(np.mean(err ** 2)) if err.size else float("nan")
    fig = Figure(figsize=(11, 12), layout="constrained")
    axs = fig.subplots(3, 2)
    T = transition_epoch

    _log_lines(axs[0, 0], history, ["loss_total"], ["total loss"], T)
    axs[0, 0].set_title("Total loss")
    axs[0, 0].set_ylabel("loss")

    ax = axs[0, 1]
    ax.scatter(yt[ok], yp[ok], s=10, alpha=0.6)
    lo = float(min(yt[ok].min(), yp[ok].min())) if ok.any() else 0.0
    hi = float(max(yt[ok].max(), yp[ok].max())) if ok.any() else 1.0
    ax.plot([lo, hi], [lo, hi], color="k", ls="--", lw=1, label="y = x")
    ax.set_xlabel("measured tau")
    ax.set_ylabel("predicted tau")
    ax.set_title(f"True vs predicted (Pearson r = {r:.3f}, n = {int(ok.sum())})")
    ax.legend(fontsize=8)

    _log_lines(axs[1, 0], history, ["loss_rec", "loss_int"], ["reconstruction", "interaction"], T)
    axs[1, 0].set_title("Unweighted losses")
    axs[1, 0].set_ylabel("loss")

    ax = axs[1, 1]
    ax.hist(err, bins=min(40, max(5, err.size // 4)), color="C2", alpha=0.8)
    ax.axvline(0, color="k", lw=1)
    ax.set_xlabel("predicted - measured tau")
    ax.set_ylabel("triplets")
    ax.set_title(f"Prediction errors (MSE = {mse:.3g})")

    _log_lines(axs[2, 0], history, ["loss_rec_weighted", "loss_int_weighted"],
               ["w_rec * reconstruction", "w_int * interaction"], T)
    axs[2, 0].set_title("Weighted losses")
    axs[2, 0].set_ylabel("loss")

    ax = axs[2, 1]
    w_int = history["w_int"].to_numpy(dtype=float) if "w_int" in history.columns else None
    plot_alpha(ax, history["epoch"].to_numpy(), history["alpha"].to_numpy(dtype=float), w_int, T)
    ax.set_title("alpha (weight on reconstruction) vs epoch")

    _title(fig, f"{schedule} (transition_epoch = {T}): overfitting one batch of {int(ok.sum())} triplets",
           synthetic)
    return fig


def schedule_comparison(results: Mapping[str, tuple[pd.DataFrame, np.ndarray, np.ndarray]],
                        transition_epoch: int | None = None, synthetic: bool = False) -> Figure:
    """Schedules side by side: alpha, interaction loss, reconstruction loss and batch Pearson per
    epoch (overlaid), and the final Pearson of each. ``results`` maps schedule name to
    ``(history, y_true, y_pred)``."""
    fig = Figure(figsize=(12, 8), layout="constrained")
    axs = fig.subplots(2, 2)
    finals = {}
    styles = ["-", "--", "-.", ":"]
    for i, (name, (hist, yt, yp)) in enumerate(results.items()):
        finals[name] = pearson(yt, yp)
        kw = dict(color=f"C{i}", ls=styles[i % len(styles)], lw=2 if i % len(styles) == 0 else 1.8)
        axs[0, 0].plot(hist["epoch"], hist["alpha"], label=name, drawstyle="steps-post", **kw)
        axs[0, 1].plot(hist["epoch"], np.where(hist["loss_int"] > 0, hist["loss_int"], np.nan), label=name, **kw)
        axs[1, 0].plot(hist["epoch"], np.where(hist["loss_rec"] > 0, hist["loss_rec"], np.nan), label=name, **kw)
        if "train_pearson" in hist.columns:
            axs[1, 1].plot(hist["epoch"], hist["train_pearson"], label=f"{name} (final r = {finals[name]:.3f})", **kw)
    axs[0, 0].set_title("alpha (weight on reconstruction)")
    axs[0, 1].set_title("Interaction loss (unweighted)")
    axs[1, 0].set_title("Reconstruction loss (unweighted)")
    axs[1, 1].set_title("Pearson r on the batch")
    for ax in (axs[0, 1], axs[1, 0]):
        ax.set_yscale("log")
        _plain_log_ticks(ax)
    axs[1, 1].set_ylim(-1.05, 1.05)
    for ax in axs.flat:
        ax.set_xlabel("epoch")
        if transition_epoch is not None:
            ax.axvline(transition_epoch, color="0.6", ls=":", lw=1)
        ax.legend(fontsize=7)
    _title(fig, "Loss schedules compared on one fixed batch", synthetic)
    return fig


# ---------------------------------------------------------------------------------- evaluation
def predicted_vs_measured(panels: Mapping[str, tuple[np.ndarray, np.ndarray]], synthetic: bool = False,
                          title: str = "Predicted vs measured tau on test triplets") -> Figure:
    """One scatter per split (``name -> (measured, predicted)``) with y = x and Pearson r."""
    n = max(1, len(panels))
    fig = Figure(figsize=(4.6 * n, 4.4), layout="constrained")
    axs = np.atleast_1d(fig.subplots(1, n))
    for ax, (name, (yt, yp)) in zip(axs, panels.items()):
        yt, yp = np.asarray(yt, dtype=float), np.asarray(yp, dtype=float)
        ok = np.isfinite(yt) & np.isfinite(yp)
        ax.scatter(yt[ok], yp[ok], s=4, alpha=0.35)
        if ok.any():
            lo, hi = float(min(yt[ok].min(), yp[ok].min())), float(max(yt[ok].max(), yp[ok].max()))
            ax.plot([lo, hi], [lo, hi], color="k", ls="--", lw=1)
        ax.set_title(f"{name}: r = {pearson(yt, yp):.3f} (n = {int(ok.sum())})")
        ax.set_xlabel("measured tau")
        ax.set_ylabel("predicted tau")
    _title(fig, title, synthetic)
    return fig


def pvalue_vs_prediction(panels: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
                         strong: float = -0.05, alpha: float = 0.05, synthetic: bool = False,
                         title: str = "Screen p-value of each measured triplet against its prediction") -> Figure:
    """One panel per split (``name -> (prediction, pvalue, measured)``): predicted tau (x) against the
    measured triplet's screen p-value as -log10 p (y), coloured by measured tau. The title gives the
    share of significant measurements (p < ``alpha``) among triplets predicted strong
    (tau <= ``strong``) and among the rest: a useful predictor puts more significant ones on the left."""
    n = max(1, len(panels))
    fig = Figure(figsize=(4.8 * n, 4.4), layout="constrained")
    axs = np.atleast_1d(fig.subplots(1, n))
    sc = None
    for ax, (name, (pred, pv, tau)) in zip(axs, panels.items()):
        pred, pv, tau = (np.asarray(a, dtype=float) for a in (pred, pv, tau))
        ok = np.isfinite(pred) & np.isfinite(pv) & (pv > 0)
        pred, pv, tau = pred[ok], pv[ok], tau[ok]
        sc = ax.scatter(pred, -np.log10(pv), c=tau, s=5, alpha=0.5, cmap="coolwarm_r", vmin=-0.2, vmax=0.2)
        ax.axhline(-np.log10(alpha), color="k", ls="--", lw=1)
        ax.axvline(strong, color="0.4", ls=":", lw=1)
        is_strong, sig = pred <= strong, pv < alpha
        a = 100 * sig[is_strong].mean() if is_strong.any() else float("nan")
        b = 100 * sig[~is_strong].mean() if (~is_strong).any() else float("nan")
        ax.set_title(f"{name}: p < {alpha:g} in {a:.0f}% of {int(is_strong.sum())} predicted strong\n"
                     f"vs {b:.0f}% of the other {int((~is_strong).sum())}", fontsize=9)
        ax.set_xlabel("predicted tau")
        ax.set_ylabel("-log10 screen p-value")
    if sc is not None:
        fig.colorbar(sc, ax=list(axs), label="measured tau", shrink=0.8)
    _title(fig, title, synthetic)
    return fig


def spread_calibration(spread, abs_error, n_bins: int = 10, synthetic: bool = False,
                       title: str = "Ensemble spread vs absolute error") -> Figure:
    """Absolute error against the ensemble's per-prediction spread: points, and binned means with the
    y = x line (a calibrated spread tracks the mean error up to a constant)."""
    s, e = np.asarray(spread, dtype=float), np.asarray(abs_error, dtype=float)
    ok = np.isfinite(s) & np.isfinite(e)
    s, e = s[ok], e[ok]
    fig = Figure(figsize=(6.5, 4.8), layout="constrained")
    ax = fig.add_subplot()
    ax.scatter(s, e, s=4, alpha=0.25, color="0.5", label="test triplets")
    if s.size:
        edges = np.unique(np.quantile(s, np.linspace(0, 1, n_bins + 1)))
        idx = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, len(edges) - 2) if len(edges) > 1 else np.zeros(s.size, int)
        xs = [s[idx == b].mean() for b in np.unique(idx)]
        ys = [e[idx == b].mean() for b in np.unique(idx)]
        ax.plot(xs, ys, "o-", color="C3", lw=2, label="binned mean |error|")
        hi = float(max(s.max(), 1e-12))
        ax.plot([0, hi], [0, hi * np.sqrt(2 / np.pi)], color="k", ls="--", lw=1,
                label="expected for Gaussian errors (0.80 x spread)")
        ax.set_title(f"{title}\nSpearman(spread, |error|) = {pd.Series(s).corr(pd.Series(e), method='spearman'):.3f}")
    ax.set_xlabel("ensemble spread (std of member predictions)")
    ax.set_ylabel("|predicted - measured|")
    ax.legend(fontsize=8)
    if synthetic:
        fig.suptitle(f"[{SYNTHETIC_LABEL}]")
    return fig


def metrics_bars(metrics: pd.DataFrame, metric: str = "pearson",
                 ceiling: float | Mapping[str, float] | None = None, synthetic: bool = False) -> Figure:
    """Mean (and std over folds) of ``metric`` per model and split, with the noise ceiling (one
    value, or one per split) drawn as lines. ``metrics`` has one row per model x split x fold
    (columns ``model, split, fold, <metric>``)."""
    agg = metrics.groupby(["model", "split"])[metric].agg(["mean", "std"]).reset_index()
    models = list(dict.fromkeys(metrics["model"]))
    splits = list(dict.fromkeys(metrics["split"]))
    fig = Figure(figsize=(max(7, 1.2 * len(models) * max(1, len(splits)) / 2), 4.5), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(splits))
    x = np.arange(len(models))
    for k, sp in enumerate(splits):
        sub = agg[agg["split"] == sp].set_index("model").reindex(models)
        ax.bar(x + (k - (len(splits) - 1) / 2) * width, sub["mean"], width, yerr=sub["std"].fillna(0),
               label=sp, capsize=2, alpha=0.85, color=f"C{k}")
    if isinstance(ceiling, Mapping):
        for k, sp in enumerate(splits):
            c = ceiling.get(sp)
            if c is not None and np.isfinite(c):
                ax.axhline(c, color=f"C{k}", ls="--", lw=1.3, label=f"noise ceiling {sp} ({c:.3f})")
    elif ceiling is not None and np.isfinite(ceiling):
        ax.axhline(ceiling, color="crimson", ls="--", lw=1.5, label=f"noise ceiling ({ceiling:.3f})")
    ax.set_xticks(x, models, rotation=30, ha="right")
    ax.set_ylabel(metric)
    ax.legend(fontsize=7, title="split", ncols=2)
    n_folds = int(metrics.groupby(["model", "split"]).size().max()) if len(metrics) else 0
    what = "mean ± std over folds" if n_folds > 1 else "one fold"
    _title(fig, f"{metric} on held-out triplets ({what})", synthetic)
    return fig
