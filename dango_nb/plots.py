"""Figures for the notebooks and reports.

scanpy-like: every panel function takes ``ax=`` (a matplotlib Axes; ``None`` makes its own figure)
and returns the :class:`matplotlib.figure.Figure` it drew on; figure builders (:func:`final_results`,
:func:`schedule_comparison`, :func:`predicted_vs_measured`, :func:`pvalue_vs_prediction`) compose
panels. Nothing uses pyplot's global state (figures work headless and inside widgets); seaborn's
axes-level functions draw the statistical panels (error-bar bars, violins, binned calibration,
embedding scatter). :func:`save_figure` writes atomically.

Inputs are the tables the library produces (training history frames with the columns in
docs/architecture.md, the lambda table, evaluation frames) or plain arrays. ``synthetic=True`` marks
the figure as coming from the embedded synthetic benchmark, so no one mistakes it for a result on
real data. An undefined number (NaN: Pearson of a constant prediction, an empty group) is written
``undefined`` or ``n/a``, never ``nan``.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from . import metrics
from .data.string_db import CHANNELS
from .fileio import atomic_path

__all__ = [
    "SYNTHETIC_LABEL", "save_figure", "figure_png", "channel_colours", "schedule_alpha", "alpha_title", "plot_alpha",
    "lambda_bars", "reconstruction_curves", "edge_recovery_auroc", "meta_weight_distribution",
    "embedding_projection", "loss_curves", "epoch_lines", "true_vs_predicted", "error_histogram",
    "final_results", "schedule_comparison", "pearson", "predicted_vs_measured", "pvalue_panel",
    "pvalue_vs_prediction", "spread_calibration", "metrics_bars", "P_FLOOR",
]

SYNTHETIC_LABEL = "synthetic benchmark"


# ------------------------------------------------------------------------------------- helpers
def _figure_of(ax: Axes) -> Figure:
    fig = ax.figure
    while not isinstance(fig, Figure):  # an Axes in a SubFigure: the root figure is what is drawn
        fig = fig.figure
    return fig


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes, bool]:
    """``(figure, axes, owns_figure)``: a new one-panel figure when ``ax`` is None."""
    if ax is None:
        fig = Figure(figsize=figsize, layout="constrained")
        return fig, fig.add_subplot(), True
    return _figure_of(ax), ax, False


def _title(fig: Figure, text: str, synthetic: bool) -> None:
    fig.suptitle(f"{text}\n[{SYNTHETIC_LABEL}]" if synthetic else text)


def _panel_title(fig: Figure, ax: Axes, own: bool, text: str, synthetic: bool) -> None:
    """A panel drawn on its own figure titles the figure; one drawn on a given ``ax`` titles only
    that axes (the figure belongs to the caller)."""
    if own:
        _title(fig, text, synthetic)
    else:
        ax.set_title(f"{text} [{SYNTHETIC_LABEL}]" if synthetic else text, fontsize=10)


def _fmt(value, spec: str = ".3f", undefined: str = "undefined") -> str:
    """``value`` formatted, or ``undefined`` for None/NaN/inf (never the token ``nan``)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return undefined
    return format(v, spec) if np.isfinite(v) else undefined


def channel_colours(channels: Sequence[str]) -> list:
    """One colour per channel, the same channel always the same colour (seaborn's ``deep``
    palette in the order of :data:`dango_nb.data.string_db.CHANNELS`; other channels after them)."""
    pal = sns.color_palette("deep", 10)
    out, k = [], len(CHANNELS)
    for c in channels:
        if c in CHANNELS:
            out.append(pal[CHANNELS.index(c) % 10])
        else:
            out.append(pal[k % 10])
            k += 1
    return out


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


def _finite_pairs(*arrays) -> tuple[np.ndarray, ...]:
    arrs = [np.asarray(a, dtype=float).reshape(-1) for a in arrays]
    ok = np.logical_and.reduce([np.isfinite(a) for a in arrs])
    return tuple(a[ok] for a in arrs)


def pearson(y_true, y_pred) -> float:
    """Pearson r over finite pairs (NaN when fewer than two or a constant side)."""
    return metrics.pearson(*_finite_pairs(y_true, y_pred))


# ------------------------------------------------------------------------------------ schedules
def schedule_alpha(schedule, epochs: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(epoch, alpha, w_int)`` arrays for epochs ``0 .. epochs-1`` of a schedule object."""
    ep = np.arange(int(epochs))
    alpha = np.array([schedule.alpha(int(e)) for e in ep], dtype=float)
    w_int = np.array([schedule.weights(int(e))[1] for e in ep], dtype=float)
    return ep, alpha, w_int


def _weights_sum_to_one(alpha, w_int) -> bool:
    """Whether the interaction weight is ``1 - alpha`` (the standard schedules), so that alpha alone
    describes the split between the two losses; PaperTwoStage's ``(0.001, 1)`` does not."""
    return w_int is None or bool(np.allclose(np.asarray(w_int, dtype=float), 1.0 - np.asarray(alpha, dtype=float)))


def alpha_title(alpha, w_int=None) -> str:
    """What the alpha panel shows, true for the schedule drawn (see :func:`_weights_sum_to_one`)."""
    if _weights_sum_to_one(alpha, w_int):
        return "alpha vs epoch: the weight on reconstruction\n(interaction gets 1 - alpha)"
    return "loss weights vs epoch: w_rec (reconstruction), w_int (interaction);\nthey do not sum to 1"


def plot_alpha(epoch, alpha, w_int=None, transition_epoch: int | None = None, label: str | None = None,
               ax: Axes | None = None) -> Figure:
    """alpha(epoch), which is the reconstruction weight ``w_rec``; ``w_int`` is drawn too where it
    is not ``1 - alpha`` (PaperTwoStage), and then the axis is the loss weight, not a share, and the
    last ``w_rec`` is written on the panel (0.001 is not visible on a 0-1 axis)."""
    fig, ax, _ = _axes(ax, (6, 3.5))
    step = "steps-post" if len(epoch) < 400 else "default"
    shares = _weights_sum_to_one(alpha, w_int)
    default = "alpha (weight on reconstruction; interaction 1 - alpha)" if shares else "w_rec (weight on reconstruction)"
    ax.plot(epoch, alpha, drawstyle=step, lw=2, label=label or default)
    if not shares:
        ax.plot(epoch, w_int, ls="--", lw=1.5, color="0.35", label="w_int (weight on interaction)", drawstyle=step)
        last = float(np.asarray(alpha, dtype=float)[-1]) if len(alpha) else float("nan")
        ax.text(0.98, 0.1, f"w_rec = {_fmt(last, 'g', 'n/a')} at the last epoch", transform=ax.transAxes,
                ha="right", va="bottom", fontsize=8)
    if transition_epoch is not None:
        ax.axvline(transition_epoch, color="0.6", ls=":", lw=1)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("epoch")
    ax.set_ylabel("alpha" if shares else "loss weight")
    ax.legend(loc="best" if shares else "center left", fontsize=8)
    return fig


# -------------------------------------------------------------------------------------- lambdas
def lambda_bars(table: pd.DataFrame, reference_pct: Mapping[str, float] | None = None,
                threshold_pct: float = 1.0, synthetic: bool = False, title: str | None = None,
                pct_column: str = "pct_decreased_zeros", lambda_column: str = "lambda",
                channel_column: str = "channel", ax: Axes | None = None) -> Figure:
    """Percentage of decreased zeros per channel, the threshold line, lambda over each bar and the
    paper's reference percentages (STRING v9.1 -> v10) marked where given."""
    tab = table.reset_index() if channel_column not in table.columns else table
    channels = [str(c) for c in tab[channel_column]]
    pct = tab[pct_column].to_numpy(dtype=float)
    lam = tab[lambda_column].to_numpy(dtype=float)
    fig, ax, own = _axes(ax, (8, 4.5))
    x = np.arange(len(channels))
    ax.bar(x, pct, color=channel_colours(channels), alpha=0.85)
    ax.axhline(threshold_pct, color="k", ls="--", lw=1, label=f"{threshold_pct:g}% threshold")
    ref = {c: float(v) for c, v in (reference_pct or {}).items() if c in channels}
    finite = pct[np.isfinite(pct)]
    top = max(float(finite.max()) if finite.size else 0.0, threshold_pct, max(ref.values(), default=0.0))
    for xi, c, p, lm in zip(x, channels, pct, lam):
        y = max(p if np.isfinite(p) else 0.0, ref.get(c, 0.0))
        pct_text = f"{p:.2f}%" if np.isfinite(p) else "n/a"
        ax.text(xi, y + 0.02 * top, f"λ = {_fmt(lm, 'g', 'n/a')}\n{pct_text}", ha="center", va="bottom", fontsize=8)
    for k, (c, v) in enumerate(ref.items()):
        xi = channels.index(c)
        ax.plot([xi - 0.4, xi + 0.4], [v, v], color="crimson", lw=2.5,
                label="paper's value (STRING v9.1 -> v10)" if k == 0 else None)
    labels = [f"{c}\n(paper {ref[c]:g}%)" if c in ref else c for c in channels]
    ax.set_xticks(x, labels, rotation=0, fontsize=8)
    ax.set_xlim(-0.6, len(channels) - 0.4)  # autoscaling skips a NaN bar's slot
    ax.set_ylim(0, top * 1.3)
    ax.set_ylabel("decreased zeros (% of earlier non-edges)")
    ax.legend(loc="upper left", fontsize=8)
    _panel_title(fig, ax, own, title or "Percentage of decreased zeros per STRING channel", synthetic)
    return fig


# ---------------------------------------------------------------------------------- pre-training
def reconstruction_curves(history: pd.DataFrame, synthetic: bool = False, ax: Axes | None = None) -> Figure:
    """Per-channel reconstruction loss (``loss_rec_<channel>`` columns) against epoch, log scale."""
    cols = [c for c in history.columns if c.startswith("loss_rec_") and c != "loss_rec_weighted"]
    if not cols:
        raise ValueError("history has no loss_rec_<channel> columns")
    fig, ax, own = _axes(ax, (7, 4.2))
    chans = [c[len("loss_rec_"):] for c in cols]
    for c, ch, colour in zip(cols, chans, channel_colours(chans)):
        ax.plot(history["epoch"], history[c], label=ch, color=colour, lw=1.6)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("weighted MSE (reconstruction)")
    ax.legend(fontsize=8, ncols=2)
    _panel_title(fig, ax, own, "Pre-training: reconstruction loss per channel", synthetic)
    return fig


def edge_recovery_auroc(auroc: Mapping[str, float], synthetic: bool = False,
                        title: str = "Held-out edge recovery per channel", ax: Axes | None = None) -> Figure:
    """AUROC of held-out edges against sampled non-edges, one bar per channel, chance at 0.5."""
    ch = list(auroc)
    vals = np.array([auroc[c] for c in ch], dtype=float)
    fig, ax, own = _axes(ax, (7, 4))
    x = np.arange(len(ch))
    ax.bar(x, vals, color=channel_colours(ch), alpha=0.85)
    for xi, v in zip(x, vals):
        ax.text(xi, (v if np.isfinite(v) else 0) + 0.01, _fmt(v, ".3f", "n/a"), ha="center", va="bottom", fontsize=8)
    ax.axhline(0.5, color="k", ls="--", lw=1, label="chance")
    ax.set_xticks(x, ch, rotation=20)
    ax.set_xlim(-0.6, len(ch) - 0.4)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("AUROC")
    ax.legend(fontsize=8, loc="lower right")
    _panel_title(fig, ax, own, title, synthetic)
    return fig


def meta_weight_distribution(weights, channels: Sequence[str], synthetic: bool = False,
                             ax: Axes | None = None) -> Figure:
    """Violins (seaborn, quartiles inside, cut at the data range) of each channel's meta-embedding
    weight over genes; ``weights`` is (N, C)."""
    w = np.asarray(weights, dtype=float)
    if w.ndim != 2 or w.shape[1] != len(channels):
        raise ValueError(f"weights must be (genes, {len(channels)}), got {w.shape}")
    channels = [str(c) for c in channels]
    long = pd.DataFrame({"channel": np.repeat(channels, w.shape[0]), "weight": w.T.reshape(-1)})
    fig, ax, own = _axes(ax, (7, 4))
    sns.violinplot(long, x="channel", y="weight", hue="channel", order=channels, hue_order=channels,
                   palette=channel_colours(channels), legend=False, cut=0, inner="quart",
                   density_norm="width", linewidth=0.8, saturation=1, ax=ax)
    ax.axhline(1.0 / len(channels), color="k", ls="--", lw=1, label=f"uniform (1/{len(channels)})")
    ax.tick_params(axis="x", rotation=20)
    ax.set_xlabel("")
    ax.set_ylabel("meta-embedding weight")
    ax.legend(fontsize=8)
    _panel_title(fig, ax, own, f"Meta-embedding weight per channel over {w.shape[0]} genes", synthetic)
    return fig


def _natural(v) -> tuple:
    """Sort key: numbers numerically (2 before 11), then everything else by text."""
    try:
        return (0, float(v), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(v))


def embedding_projection(embeddings, labels=None, synthetic: bool = False, seed: int = 0,
                         title: str = "Integrated gene embeddings (PCA)", max_groups: int = 10,
                         ax: Axes | None = None) -> Figure:
    """2-D PCA of (N, H) embeddings (seaborn scatter), coloured by ``labels`` (e.g. planted modules;
    NaN = none).

    Only the ``max_groups`` largest groups get their own colour (more would repeat colours); the
    other labelled genes are drawn in mid grey as "other modules", unlabelled ones in light grey.
    """
    from sklearn.decomposition import PCA

    x = np.asarray(embeddings, dtype=float)
    pca = PCA(n_components=2, random_state=seed)
    xy = pca.fit_transform(x)
    fig, ax, own = _axes(ax, (6.5, 5.5))
    if labels is None:
        sns.scatterplot(x=xy[:, 0], y=xy[:, 1], s=8, alpha=0.6, color="C0", edgecolor="none", ax=ax)
    else:
        lab = pd.Series(np.asarray(labels, dtype=object))
        none = (lab.isna() | lab.astype(str).isin(["", "-1", "none", "None"])).to_numpy()
        sizes = lab[~none].value_counts(sort=False)
        order = sorted(sizes.index, key=lambda m: (-sizes[m], str(m)))
        shown, rest = sorted(order[:max_groups], key=_natural), order[max_groups:]
        background = [(none, "0.8", "no module"),
                      (lab.isin(rest).to_numpy(), "0.6", f"{len(rest)} other modules")]
        for sel, colour, name in background:
            if sel.any():
                sns.scatterplot(x=xy[sel, 0], y=xy[sel, 1], s=7, alpha=0.4, color=colour, edgecolor="none",
                                label=name, ax=ax)
        sel = lab.isin(shown).to_numpy()
        hue = np.array([f"module {m}" for m in lab[sel]], dtype=object)
        names = [f"module {m}" for m in shown]
        if sel.any():
            sns.scatterplot(x=xy[sel, 0], y=xy[sel, 1], hue=hue, hue_order=names,
                            palette=sns.color_palette(n_colors=len(names)), s=13, alpha=0.85,
                            edgecolor="none", ax=ax)
        ax.legend(fontsize=7, ncols=2, markerscale=1.3, loc="best")
    ev = pca.explained_variance_ratio_
    ax.set_xlabel(f"PC1 ({100 * ev[0]:.1f}% var)")
    ax.set_ylabel(f"PC2 ({100 * ev[1]:.1f}% var)")
    _panel_title(fig, ax, own, title, synthetic)
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


def _positive(values) -> np.ndarray:
    """Zero losses (a weight of 0) are off a log axis: NaN so the line breaks there."""
    y = np.asarray(values, dtype=float)
    return np.where(y > 0, y, np.nan)


def loss_curves(history: pd.DataFrame, columns: Sequence[str], labels: Sequence[str] | None = None,
                transition_epoch: int | None = None, title: str | None = None, ax: Axes | None = None) -> Figure:
    """History ``columns`` against epoch on a log axis (missing columns skipped)."""
    fig, ax, _ = _axes(ax, (6, 4))
    for c, lab in zip(columns, labels or columns):
        if c in history.columns:
            ax.plot(history["epoch"], _positive(history[c]), label=lab, lw=1.6)
    ax.set_yscale("log")
    _plain_log_ticks(ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    if transition_epoch is not None:
        ax.axvline(transition_epoch, color="0.6", ls=":", lw=1)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return fig


def true_vs_predicted(y_true, y_pred, name: str | None = None, ax: Axes | None = None,
                      s: float = 10, alpha: float = 0.6) -> Figure:
    """Measured (x) against predicted (y) tau with y = x and Pearson r over the finite pairs."""
    fig, ax, _ = _axes(ax, (5, 4.5))
    yt, yp = _finite_pairs(y_true, y_pred)
    sns.scatterplot(x=yt, y=yp, s=s, alpha=alpha, edgecolor="none", ax=ax)
    if yt.size:
        lo, hi = float(min(yt.min(), yp.min())), float(max(yt.max(), yp.max()))
        ax.plot([lo, hi], [lo, hi], color="k", ls="--", lw=1, label="y = x")
        ax.legend(fontsize=8, loc="upper left")
    ax.set_xlabel("measured tau")
    ax.set_ylabel("predicted tau")
    r = metrics.pearson(yt, yp)
    ax.set_title(f"{name + ': ' if name else ''}Pearson r = {_fmt(r)} (n = {yt.size})", fontsize=10)
    return fig


def error_histogram(y_true, y_pred, ax: Axes | None = None) -> Figure:
    """Histogram (seaborn) of predicted - measured tau over the finite pairs, with the MSE."""
    fig, ax, _ = _axes(ax, (5, 4))
    yt, yp = _finite_pairs(y_true, y_pred)
    err = yp - yt
    if err.size:
        lo, hi = float(err.min()), float(err.max())
        if hi - lo <= 1e-9 * max(1.0, abs(lo), abs(hi)):  # one error value: numpy cannot split its range
            bins, binrange = 1, (lo - 0.5 * max(abs(lo), 1e-3), hi + 0.5 * max(abs(hi), 1e-3))
        else:
            bins, binrange = min(40, max(5, err.size // 4)), None
        sns.histplot(x=err, bins=bins, binrange=binrange, color="C2", alpha=0.8, ax=ax)
    ax.axvline(0, color="k", lw=1)
    ax.set_xlabel("predicted - measured tau")
    ax.set_ylabel("triplets")
    ax.set_title(f"Prediction errors (MSE = {_fmt(metrics.mse(yt, yp), '.3g')})")
    return fig


def final_results(history: pd.DataFrame, y_true, y_pred, schedule: str, transition_epoch: int,
                  synthetic: bool = False) -> Figure:
    """The 3x2 overfitting summary of one schedule.

    (1) total loss; (2) true vs predicted with y = x and Pearson r; (3) unweighted reconstruction and
    interaction loss; (4) histogram of prediction errors with the MSE; (5) weighted losses; (6) alpha.
    ``y_true``/``y_pred`` are the batch's measured and final predicted tau.
    """
    fig = Figure(figsize=(11, 12), layout="constrained")
    axs = fig.subplots(3, 2)
    T = transition_epoch
    loss_curves(history, ["loss_total"], ["total loss"], T, "Total loss", ax=axs[0, 0])
    true_vs_predicted(y_true, y_pred, ax=axs[0, 1])
    axs[0, 1].set_title("True vs predicted\n" + axs[0, 1].get_title())
    loss_curves(history, ["loss_rec", "loss_int"], ["reconstruction", "interaction"], T, "Unweighted losses",
                ax=axs[1, 0])
    error_histogram(y_true, y_pred, ax=axs[1, 1])
    loss_curves(history, ["loss_rec_weighted", "loss_int_weighted"],
                ["w_rec * reconstruction", "w_int * interaction"], T, "Weighted losses", ax=axs[2, 0])
    w_int = history["w_int"].to_numpy(dtype=float) if "w_int" in history.columns else None
    alpha = history["alpha"].to_numpy(dtype=float)
    plot_alpha(history["epoch"].to_numpy(), alpha, w_int, T, ax=axs[2, 1])
    axs[2, 1].set_title(alpha_title(alpha, w_int), fontsize=10)
    n = _finite_pairs(y_true, y_pred)[0].size
    _title(fig, f"{schedule} (transition_epoch = {T}): overfitting one batch of {n} triplets", synthetic)
    return fig


_STYLES = ("-", "--", "-.", ":")


def epoch_lines(histories: Mapping[str, pd.DataFrame], column: str, log: bool = False,
                labels: Mapping[str, str] | None = None, drawstyle: str = "default",
                transition_epoch: int | None = None, title: str | None = None, ax: Axes | None = None) -> Figure:
    """One history column against epoch, one line per run (colour and dash style per run, so
    overlapping runs stay distinguishable)."""
    fig, ax, _ = _axes(ax, (6, 4))
    for i, (name, hist) in enumerate(histories.items()):
        if column not in hist.columns:
            continue
        y = _positive(hist[column]) if log else hist[column].to_numpy(dtype=float)
        ax.plot(hist["epoch"], y, label=(labels or {}).get(name, name), color=f"C{i}",
                ls=_STYLES[i % len(_STYLES)], lw=2 if i % len(_STYLES) == 0 else 1.8, drawstyle=drawstyle)
    if log:
        ax.set_yscale("log")
        _plain_log_ticks(ax)
    if transition_epoch is not None:
        ax.axvline(transition_epoch, color="0.6", ls=":", lw=1)
    ax.set_xlabel("epoch")
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title)
    return fig


def schedule_comparison(results: Mapping[str, tuple[pd.DataFrame, np.ndarray, np.ndarray]],
                        transition_epoch: int | None = None, synthetic: bool = False) -> Figure:
    """Schedules side by side: alpha, interaction loss, reconstruction loss and batch Pearson per
    epoch (overlaid), and the final Pearson of each. ``results`` maps schedule name to
    ``(history, y_true, y_pred)``."""
    fig = Figure(figsize=(12, 8), layout="constrained")
    axs = fig.subplots(2, 2)
    hists = {name: h for name, (h, _, _) in results.items()}
    finals = {name: f"{name} (final r = {_fmt(pearson(yt, yp))})" for name, (_, yt, yp) in results.items()}
    T = transition_epoch
    epoch_lines(hists, "alpha", drawstyle="steps-post", transition_epoch=T,
                title="alpha (weight on reconstruction)", ax=axs[0, 0])
    epoch_lines(hists, "loss_int", log=True, transition_epoch=T, title="Interaction loss (unweighted)", ax=axs[0, 1])
    epoch_lines(hists, "loss_rec", log=True, transition_epoch=T, title="Reconstruction loss (unweighted)",
                ax=axs[1, 0])
    epoch_lines(hists, "train_pearson", labels=finals, transition_epoch=T, title="Pearson r on the batch",
                ax=axs[1, 1])
    axs[1, 1].set_ylim(-1.05, 1.05)
    _title(fig, "Loss schedules compared on one fixed batch", synthetic)
    return fig


# ---------------------------------------------------------------------------------- evaluation
def predicted_vs_measured(panels: Mapping[str, tuple[np.ndarray, np.ndarray]], synthetic: bool = False,
                          title: str = "Predicted vs measured tau on test triplets") -> Figure:
    """One :func:`true_vs_predicted` panel per split (``name -> (measured, predicted)``)."""
    n = max(1, len(panels))
    fig = Figure(figsize=(4.6 * n, 4.4), layout="constrained")
    axs = np.atleast_1d(fig.subplots(1, n))
    for ax, (name, (yt, yp)) in zip(axs, panels.items()):
        true_vs_predicted(yt, yp, name=name, ax=ax, s=5, alpha=0.35)
    _title(fig, title, synthetic)
    return fig


def _share(mask: np.ndarray) -> str:
    return f"{100 * mask.mean():.0f}%"


#: -log10 p is capped here: the synthetic screen clips its p-values at 1e-16 (``erfc`` of a large
#: score underflows) and a screen may report p = 0; both are drawn at the cap, not dropped.
P_FLOOR = 1e-16


def pvalue_panel(prediction, pvalue, measured, name: str | None = None, strong: float = -0.05,
                 alpha: float = 0.05, colorbar: bool | None = None, p_floor: float = P_FLOOR,
                 ax: Axes | None = None) -> Figure:
    """Predicted tau (x) against the measured triplet's screen p-value as -log10 p (y), coloured
    by measured tau. The title gives the share of significant measurements (p < ``alpha``) among
    triplets predicted strong (tau <= ``strong``) and among the rest; a group with no triplet is
    named as empty, not given a percentage. p-values below ``p_floor`` (and p = 0) are drawn at
    -log10 ``p_floor``; the axis label says so and the panel counts them. ``colorbar`` defaults to
    True on a new figure."""
    fig, ax, own = _axes(ax, (5.2, 4.4))
    pred, pv, tau = (np.asarray(a, dtype=float).reshape(-1) for a in (prediction, pvalue, measured))
    ok = np.isfinite(pred) & np.isfinite(pv) & (pv >= 0)
    pred, pv, tau = pred[ok], pv[ok], tau[ok]
    cap = -np.log10(p_floor)
    at_cap = pv <= p_floor
    sc = ax.scatter(pred, np.minimum(-np.log10(np.maximum(pv, p_floor)), cap), c=tau, s=5, alpha=0.5,
                    cmap="coolwarm_r", vmin=-0.2, vmax=0.2)
    if at_cap.any():
        ax.text(0.98, 0.98, f"{int(at_cap.sum())} at the cap", transform=ax.transAxes, ha="right", va="top",
                fontsize=7, color="0.3")
    ax.axhline(-np.log10(alpha), color="k", ls="--", lw=1)
    ax.axvline(strong, color="0.4", ls=":", lw=1)
    is_strong, sig = pred <= strong, pv < alpha
    n_strong, n_rest = int(is_strong.sum()), int((~is_strong).sum())
    head = f"{name}: " if name else ""
    if n_strong == 0:
        line1 = f"{head}no predicted strong interactions (tau <= {strong:g})"
        line2 = f"p < {alpha:g} in {_share(sig)} of all {n_rest}" if n_rest else "no triplets"
    else:
        line1 = f"{head}p < {alpha:g} in {_share(sig[is_strong])} of {n_strong} predicted strong"
        line2 = f"vs {_share(sig[~is_strong])} of the other {n_rest}" if n_rest else "(no other triplets)"
    ax.set_title(f"{line1}\n{line2}", fontsize=9)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=5))  # narrow prediction ranges get long tick labels
    ax.set_xlabel("predicted tau")
    ax.set_ylabel(f"-log10 screen p-value, capped at {cap:g}\n(p < {p_floor:g} and p = 0 drawn at {cap:g})")
    if colorbar if colorbar is not None else own:
        fig.colorbar(sc, ax=ax, label="measured tau", shrink=0.8)
    return fig


def pvalue_vs_prediction(panels: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
                         strong: float = -0.05, alpha: float = 0.05, synthetic: bool = False,
                         title: str = "Screen p-value of each measured triplet against its prediction") -> Figure:
    """One :func:`pvalue_panel` per split (``name -> (prediction, pvalue, measured)``), one shared
    colour bar: a useful predictor puts more significant measurements left of the strong line."""
    n = max(1, len(panels))
    fig = Figure(figsize=(4.8 * n + 0.8, 4.4), layout="constrained")
    axs = np.atleast_1d(fig.subplots(1, n))
    for ax, (name, (pred, pv, tau)) in zip(axs, panels.items()):
        pvalue_panel(pred, pv, tau, name=name, strong=strong, alpha=alpha, colorbar=False, ax=ax)
    if panels:
        fig.colorbar(axs[0].collections[0], ax=list(axs), label="measured tau", shrink=0.8)
    _title(fig, title, synthetic)
    return fig


def spread_calibration(y_true, prediction, spread, n_bins: int = 10, synthetic: bool = False,
                       title: str = "Ensemble spread vs absolute error", split=None, ax: Axes | None = None) -> Figure:
    """Absolute error against the ensemble's per-prediction spread: the triplets (seaborn scatter),
    their mean |error| per spread-quantile bin with its standard error, and the mean |error| expected
    if errors were Gaussian with the spread as sd. The bins are
    :func:`dango_nb.eval.ensemble.spread_calibration_table`'s (one definition for table and figure).
    ``split``: each triplet's split (and fold) label; the title then names the splits pooled into
    the one calibration, with their triplet counts."""
    from .eval.ensemble import spread_calibration_table, spread_error_table

    t = spread_error_table(y_true, prediction, spread)
    if split is not None:
        labels = np.asarray(split, dtype=object).reshape(-1)
        if len(labels) != len(np.asarray(y_true).reshape(-1)):
            raise ValueError(f"{len(labels)} split labels for {len(np.asarray(y_true).reshape(-1))} triplets")
        t["split"] = labels[~np.isnan(np.asarray(y_true, dtype=float).reshape(-1))]
    t = t[np.isfinite(t["spread"]) & np.isfinite(t["abs_error"])]
    cal = spread_calibration_table(t["target"], t["prediction"], t["spread"], n_bins=n_bins)
    fig, ax, own = _axes(ax, (6.5, 4.8))
    sns.scatterplot(t, x="spread", y="abs_error", s=6, alpha=0.25, color="0.5", edgecolor="none",
                    label="test triplets", ax=ax)
    if len(cal):
        col = {c: cal[c].to_numpy(dtype=float) for c in ("spread_mean", "abs_error_mean", "abs_error_sem",
                                                          "expected_abs_error")}
        ax.errorbar(col["spread_mean"], col["abs_error_mean"], yerr=col["abs_error_sem"], fmt="o-", color="C3",
                    lw=2, capsize=3, label="binned mean |error| (± s.e.)")
        ax.plot(col["spread_mean"], col["expected_abs_error"], "s--", color="k", lw=1, ms=4,
                label="expected for Gaussian errors\n(sqrt(2/pi) x rms spread)")
    ax.set_xlabel("ensemble spread (std of member predictions)")
    ax.set_ylabel("|predicted - measured|")
    ax.legend(fontsize=8, loc="upper left")
    rho = cal.attrs.get("spearman", float("nan"))
    pooled = ""
    if "split" in t.columns:
        counts = t["split"].astype(str).value_counts(sort=False)
        what = "pooled over" if len(counts) > 1 else "of"
        pooled = f"\ntest triplets {what} " + ", ".join(f"{k} ({v})" for k, v in counts.items())
    _panel_title(fig, ax, own, f"{title}{pooled}\nSpearman(spread, |error|) = {_fmt(rho)}", synthetic)
    return fig


def metrics_bars(metrics: pd.DataFrame, metric: str = "pearson",
                 ceiling: float | Mapping[str, float] | None = None, synthetic: bool = False,
                 level: float = 0.95, ax: Axes | None = None) -> Figure:
    """Mean of ``metric`` per model and split (seaborn bars) with error bars: sd over folds when
    there are several, else the bootstrap interval in ``<metric>_ci_low/_ci_high`` (when present).
    A model scored on several seeded fits (a ``seed`` column, e.g. ``dango``) has its bar at the
    mean over seeds and each seed's value (mean over folds) drawn as a point on it: a bootstrap
    interval over triplets shows nothing of the spread between seeds, so such a bar gets no
    interval. The noise ceiling (one value, or one per split) is drawn as lines; an undefined mean
    is marked ``n/a`` at zero. ``metrics`` has one row per model x split x fold (x seed) (``model,
    split, fold, <metric>``); ``level`` only labels the interval (the evaluation's bootstrap level)."""
    models = list(dict.fromkeys(metrics["model"]))
    splits = list(dict.fromkeys(metrics["split"]))
    keys = ["model", "split", *(["fold"] if "fold" in metrics.columns else [])]
    seeded = "seed" in metrics.columns and "fold" in metrics.columns
    n_seeds = metrics.groupby(keys, sort=False).size().groupby(level=[0, 1], sort=False).max() if len(metrics) \
        else pd.Series(dtype=int)
    # one value per fold (seeds averaged), so the error bar is the spread over folds
    per_fold = metrics.groupby(keys, sort=False).mean(numeric_only=True).reset_index() if seeded else metrics
    n_folds = int(per_fold.groupby(["model", "split"]).size().max()) if len(per_fold) else 0
    lo_col, hi_col = f"{metric}_ci_low", f"{metric}_ci_high"
    use_ci = n_folds == 1 and lo_col in metrics.columns and hi_col in metrics.columns
    multi_seed = bool(seeded and len(n_seeds) and n_seeds.max() > 1)
    colours = dict(zip(splits, sns.color_palette(n_colors=max(1, len(splits)))))
    fig, ax, own = _axes(ax, (max(7, 1.2 * len(models) * max(1, len(splits)) / 2), 4.5))
    sns.barplot(per_fold, x="model", y=metric, hue="split", order=models, hue_order=splits, palette=colours,
                errorbar="sd" if n_folds > 1 else None, capsize=0.15, err_kws={"linewidth": 1.2}, alpha=0.85, ax=ax)
    by = per_fold.set_index(["model", "split"])
    seed_values = {k: g.groupby("seed", sort=True)[metric].mean().to_numpy(dtype=float)
                   for k, g in metrics.groupby(["model", "split"], sort=False)} if seeded else {}
    first_point = True
    for split, bars in zip(splits, list(ax.containers)):
        for bar in bars:
            x, h = bar.get_x() + bar.get_width() / 2, bar.get_height()
            model = models[int(round(x))]
            if (model, split) not in by.index:
                continue
            if multi_seed and n_seeds.get((model, split), 1) > 1:
                v = seed_values[(model, split)]
                ax.scatter(np.full(len(v), x), v, s=18, color="k", zorder=3,
                           label="each seed (mean over folds)" if first_point else None)
                first_point = False
            elif use_ci:
                row = by.loc[(model, split)]
                lo, hi = float(row[lo_col]), float(row[hi_col])
                if np.isfinite(h) and np.isfinite(lo) and np.isfinite(hi):
                    ax.errorbar(x, h, yerr=[[h - lo], [hi - h]], color="0.2", capsize=3, lw=1.2)
    # seaborn draws no bar for an undefined mean: say so where the bar would be
    means = per_fold.groupby(["model", "split"], sort=False)[metric].mean()
    width = 0.8 / max(1, len(splits))
    for (model, split), v in means.items():
        if not np.isfinite(v):
            x = models.index(model) + (splits.index(split) - (len(splits) - 1) / 2) * width
            ax.text(x, 0, "n/a", ha="center", va="bottom", fontsize=7, rotation=90, color=colours[split])
    ax.set_xticks(np.arange(len(models)), models)
    ax.set_xlim(-0.5, len(models) - 0.5)
    if isinstance(ceiling, Mapping):
        for sp in splits:
            c = ceiling.get(sp)
            if c is not None and np.isfinite(c):
                ax.axhline(c, color=colours[sp], ls="--", lw=1.3, label=f"noise ceiling {sp} ({c:.3f})")
    elif ceiling is not None and np.isfinite(ceiling):
        ax.axhline(ceiling, color="crimson", ls="--", lw=1.5, label=f"noise ceiling ({ceiling:.3f})")
    ax.tick_params(axis="x", rotation=30)
    for t in ax.get_xticklabels():
        t.set_ha("right")
    ax.set_xlabel("")
    ax.set_ylabel(f"{metric} (mean over seeds)" if multi_seed else metric)
    ax.legend(fontsize=7, title="split", loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
    if n_folds > 1:
        what = f"mean ± sd over {n_folds} folds"
    elif use_ci:
        what = f"one fold, {100 * level:g}% bootstrap CI"
    else:
        what = "one fold"
    if multi_seed:
        k = int(n_seeds.max())
        what += f";\nmulti-seed models: bar = mean of {k} seeds, points = each seed" + (", no CI" if use_ci else "")
    _panel_title(fig, ax, own, f"{metric} on held-out triplets ({what})", synthetic)
    return fig
