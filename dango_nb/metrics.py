"""Metrics on the tau scale, bootstrap confidence intervals, noise ceiling, fold summaries.

A triplet is a *strong negative interaction* when its measured tau <= -0.05 (Kuzmin et al. 2018);
the classification metrics score it with ``-prediction`` (more negative prediction = more likely
strong). NaN targets are masked everywhere; a NaN or infinite prediction is an error (a model bug,
not missing data). A metric that is undefined on its input (Pearson of a constant predictor, AUROC
with one class) is NaN, never an exception, so a fold table is always complete.
"""

from __future__ import annotations

import warnings
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import average_precision_score, roc_auc_score

STRONG_THRESHOLD = -0.05
METRICS = ("pearson", "spearman", "mse", "auroc", "auprc", "pearson_strong", "spearman_strong",
           "auroc_balanced", "auprc_balanced")
# Metrics where larger is better (the others, mse, are errors).
HIGHER_IS_BETTER = {m: m != "mse" for m in METRICS}


def _clean(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true, dtype=np.float64).reshape(-1)
    y_pred = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.shape[0]} values, y_pred {y_pred.shape[0]}")
    keep = ~np.isnan(y_true)
    if not np.all(np.isfinite(y_pred[keep])):
        raise ValueError("predictions contain NaN or infinite values")
    return y_true[keep], y_pred[keep]


def pearson(y_true, y_pred) -> float:
    y, p = _clean(y_true, y_pred)
    if len(y) < 2 or np.ptp(y) == 0 or np.ptp(p) == 0:
        return float("nan")
    return float(stats.pearsonr(y, p)[0])


def spearman(y_true, y_pred) -> float:
    y, p = _clean(y_true, y_pred)
    if len(y) < 2 or np.ptp(y) == 0 or np.ptp(p) == 0:
        return float("nan")
    return float(stats.spearmanr(y, p)[0])


def mse(y_true, y_pred) -> float:
    y, p = _clean(y_true, y_pred)
    return float(np.mean((y - p) ** 2)) if len(y) else float("nan")


def strong_labels(y_true, threshold: float = STRONG_THRESHOLD) -> np.ndarray:
    """1 where tau <= threshold (strong negative interaction), else 0 (NaN targets not removed)."""
    return (np.asarray(y_true, dtype=np.float64) <= threshold).astype(np.int64)


def auroc(y_true, y_pred, threshold: float = STRONG_THRESHOLD) -> float:
    y, p = _clean(y_true, y_pred)
    labels = strong_labels(y, threshold)
    if len(labels) == 0 or labels.min() == labels.max():
        return float("nan")
    return float(roc_auc_score(labels, -p))


def auprc(y_true, y_pred, threshold: float = STRONG_THRESHOLD) -> float:
    """Average precision (sklearn's step-wise AUPRC) for strong negative interactions."""
    y, p = _clean(y_true, y_pred)
    labels = strong_labels(y, threshold)
    if labels.sum() == 0 or len(labels) == 0:
        return float("nan")
    return float(average_precision_score(labels, -p))


def balanced_subsample(y_true, threshold: float = STRONG_THRESHOLD,
                       seed: int | Sequence[int] = 0) -> np.ndarray:
    """Indices (into ``y_true``, NaN targets excluded) of all minority-class triplets plus an equal
    number drawn without replacement from the majority class; sorted."""
    y = np.asarray(y_true, dtype=np.float64)
    valid = np.flatnonzero(~np.isnan(y))
    pos = valid[y[valid] <= threshold]
    neg = valid[y[valid] > threshold]
    rng = np.random.default_rng(seed)
    if len(pos) <= len(neg):
        neg = rng.choice(neg, size=len(pos), replace=False)
    else:
        pos = rng.choice(pos, size=len(neg), replace=False)
    return np.sort(np.concatenate([pos, neg]))


def balanced_auc(y_true, y_pred, threshold: float = STRONG_THRESHOLD, seed: int = 0,
                 n_repeats: int = 10) -> tuple[float, float]:
    """Mean AUROC and AUPRC over ``n_repeats`` seeded class-balanced subsamples.

    With balanced classes a random predictor scores 0.5 on both, as in the paper's tables.
    """
    y, p = _clean(y_true, y_pred)
    rocs, prcs = [], []
    for r in range(n_repeats):
        sub = balanced_subsample(y, threshold, seed=[seed, r])
        rocs.append(auroc(y[sub], p[sub], threshold))
        prcs.append(auprc(y[sub], p[sub], threshold))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmean(rocs)) if rocs else float("nan"), float(np.nanmean(prcs)) if prcs else float("nan")


def evaluate(y_true, y_pred, threshold: float = STRONG_THRESHOLD, seed: int = 0,
             n_balanced_repeats: int = 10) -> dict[str, float]:
    """All metrics of :data:`METRICS` plus counts ``n_test`` and ``n_strong``."""
    y, p = _clean(y_true, y_pred)
    strong = y <= threshold
    bal_roc, bal_prc = balanced_auc(y, p, threshold, seed, n_balanced_repeats)
    return {
        "pearson": pearson(y, p), "spearman": spearman(y, p), "mse": mse(y, p),
        "auroc": auroc(y, p, threshold), "auprc": auprc(y, p, threshold),
        "pearson_strong": pearson(y[strong], p[strong]),
        "spearman_strong": spearman(y[strong], p[strong]),
        "auroc_balanced": bal_roc, "auprc_balanced": bal_prc,
        "n_test": int(len(y)), "n_strong": int(strong.sum()),
    }


def noise_ceiling(signal, tau) -> float:
    """Pearson of the planted (noise-free) signal with measured tau: the best achievable Pearson."""
    return pearson(tau, signal)


# ---------------------------------------------------------------------------------------------
# Bootstrap

def _constant_rows(x: np.ndarray) -> np.ndarray:
    """Rows whose values are all equal (exact comparison)."""
    return (x == x[:, :1]).all(axis=1)


def _rowwise_pearson(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Pearson r per row; NaN where a row of ``y`` or ``p`` is constant.

    The constant test is exact: a centred constant row is rounding noise (its mean is not exactly
    representable), which would give a tiny ``den`` and an |r| of ~1e-16 instead of NaN.
    """
    yc = y - y.mean(axis=1, keepdims=True)
    pc = p - p.mean(axis=1, keepdims=True)
    den = np.sqrt((yc ** 2).sum(axis=1) * (pc ** 2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (yc * pc).sum(axis=1) / den
    undefined = _constant_rows(y) | _constant_rows(p) | ~(den > 0)
    return np.where(undefined, np.nan, r)


def _rowwise_auroc(labels: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUROC per row with average ranks for ties (equals roc_auc_score)."""
    ranks = stats.rankdata(score, axis=1)
    n_pos = labels.sum(axis=1)
    n_neg = labels.shape[1] - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        a = ((ranks * labels).sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), a, np.nan)


def bootstrap_ci(y_true, y_pred, metrics: Iterable[str] = ("pearson", "spearman", "mse", "auroc", "auprc"),
                 n_boot: int = 1000, level: float = 0.95, seed: int = 0,
                 threshold: float = STRONG_THRESHOLD, max_block: int = 2_000_000) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals over test triplets (resampled with replacement, seeded).

    Pearson, Spearman, MSE and AUROC are vectorised over resamples (in blocks of at most
    ``max_block`` values); AUPRC loops over resamples with scikit-learn. A metric undefined on a
    resample (constant prediction or target, one class) is left out of that metric's percentiles;
    a metric undefined on the whole test set (or on every resample) gets ``(nan, nan)``.
    """
    y, p = _clean(y_true, y_pred)
    metrics = tuple(metrics)
    unknown = set(metrics) - {"pearson", "spearman", "mse", "auroc", "auprc"}
    if unknown:
        raise ValueError(f"bootstrap_ci: unsupported metrics {sorted(unknown)}")
    if len(y) < 2 or n_boot < 1:
        return {m: (float("nan"), float("nan")) for m in metrics}
    rng = np.random.default_rng(seed)
    values: dict[str, list[np.ndarray]] = {m: [] for m in metrics}
    block = max(1, max_block // len(y))
    done = 0
    while done < n_boot:
        b = min(block, n_boot - done)
        draw = rng.integers(0, len(y), size=(b, len(y)))
        yb, pb = y[draw], p[draw]
        if "pearson" in metrics:
            values["pearson"].append(_rowwise_pearson(yb, pb))
        if "spearman" in metrics:
            values["spearman"].append(_rowwise_pearson(stats.rankdata(yb, axis=1), stats.rankdata(pb, axis=1)))
        if "mse" in metrics:
            values["mse"].append(((yb - pb) ** 2).mean(axis=1))
        if "auroc" in metrics or "auprc" in metrics:
            lab = (yb <= threshold).astype(np.int64)
            if "auroc" in metrics:
                values["auroc"].append(_rowwise_auroc(lab, -pb))
            if "auprc" in metrics:
                values["auprc"].append(np.array([
                    average_precision_score(lb, -s) if lb.any() else np.nan for lb, s in zip(lab, pb)]))
        done += b
    lo_q, hi_q = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    point = {"pearson": pearson, "spearman": spearman, "mse": mse,
             "auroc": lambda a, b: auroc(a, b, threshold), "auprc": lambda a, b: auprc(a, b, threshold)}
    out = {}
    for m in metrics:
        v = np.concatenate(values[m])
        v = v[~np.isnan(v)]
        defined = len(v) > 0 and not np.isnan(point[m](y, p))
        out[m] = (float(np.percentile(v, lo_q)), float(np.percentile(v, hi_q))) if defined else (float("nan"),) * 2
    return out


# ---------------------------------------------------------------------------------------------
# Fold summaries

def summarize(table: pd.DataFrame, metrics: Iterable[str] = METRICS, by: tuple[str, ...] = ("model", "split"),
              ceiling_column: str | None = "ceiling") -> pd.DataFrame:
    """Mean, standard deviation (ddof=1) and count across folds per ``by`` group.

    Columns ``<metric>_mean``, ``<metric>_sd``, ``n_folds``; when ``ceiling_column`` is present,
    also ``ceiling_mean`` and ``pearson_frac_ceiling`` (mean over folds of pearson / ceiling, so
    1.0 means as good as the planted signal itself). With ``fold`` and ``seed`` columns (a model
    scored on several seeded fits per fold) each fold's seeds are averaged first, so ``_sd`` stays
    the spread over folds, and ``n_seeds`` and ``<metric>_seed_sd`` (sd over seeds within a fold,
    averaged over folds; NaN with one seed) give the spread over seeds, which a bootstrap over
    triplets does not show.
    """
    metrics = [m for m in metrics if m in table.columns]
    if table.empty:
        return pd.DataFrame(columns=[*by, "n_folds"])
    seeded = "seed" in table.columns and "fold" in table.columns
    table = table.assign(_frac=table["pearson"] / table[ceiling_column]) \
        if ceiling_column and ceiling_column in table.columns and "pearson" in table.columns else table
    values = [*metrics, *(c for c in ("_frac", ceiling_column) if c in table.columns)]
    per_fold = table.groupby([*by, "fold"], sort=False)[values].mean().reset_index() if seeded else table
    g = per_fold.groupby(list(by), sort=False)
    parts = {"n_folds": g.size()}
    if seeded:
        seeds = table.groupby([*by, "fold"], sort=False)
        parts["n_seeds"] = seeds.size().groupby(level=list(range(len(by))), sort=False).max()
        seed_sd = seeds[metrics].std(ddof=1).groupby(level=list(range(len(by))), sort=False).mean()
    for m in metrics:
        parts[f"{m}_mean"] = g[m].mean()
        parts[f"{m}_sd"] = g[m].std(ddof=1)
        if seeded:
            parts[f"{m}_seed_sd"] = seed_sd[m]
    if "_frac" in per_fold.columns:
        parts["ceiling_mean"] = g[ceiling_column].mean()
        parts["pearson_frac_ceiling"] = g["_frac"].mean()
    return pd.DataFrame(parts).reset_index()


def format_summary(summary: pd.DataFrame, metrics: Iterable[str] = ("pearson", "spearman", "auroc", "auprc", "mse"),
                   digits: int = 3) -> pd.DataFrame:
    """Wide ``model x split`` table of ``"mean ± sd"`` strings for the first metric given, one
    column block per metric (MultiIndex columns: metric, split)."""
    blocks = {}
    for m in metrics:
        if f"{m}_mean" not in summary.columns:
            continue
        s = summary.apply(lambda r, m=m: _pm(r[f"{m}_mean"], r[f"{m}_sd"], digits), axis=1)
        blocks[m] = pd.DataFrame({"model": summary["model"], "split": summary["split"], "v": s}) \
            .pivot(index="model", columns="split", values="v")
    if not blocks:
        return pd.DataFrame()
    out = pd.concat(blocks, axis=1)
    splits = list(dict.fromkeys(summary["split"]))
    cols = [(m, sp) for m in blocks for sp in splits if (m, sp) in out.columns]
    return out.loc[list(dict.fromkeys(summary["model"])), cols]


def _pm(mean: float, sd: float, digits: int) -> str:
    if np.isnan(mean):
        return "n/a"
    if np.isnan(sd):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"

