"""Ensembles of DANGO models: top-k validation checkpoints of a run and several seeds.

The ensemble prediction is the mean of the members' predictions (tau scale, each member with its
own target scaler); the *spread* is their standard deviation (ddof=0), a per-prediction
uncertainty. :func:`ensemble_gain` reports what averaging buys over a single model and
:func:`spread_calibration_table` / :func:`spread_error_table` give the data for the absolute
error vs spread plot (:func:`dango_nb.plots.spread_calibration` draws it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from dango_nb import metrics as M


@dataclass
class Member:
    """One ensemble member: a model, its target scaler and a label (e.g. ``"seed1/epoch23"``)."""

    model: Any
    scaler: Any
    name: str = "member"
    info: dict = field(default_factory=dict)


def combine(member_predictions) -> tuple[np.ndarray, np.ndarray]:
    """(K, M) member predictions -> mean (M,) and spread = std across members (M,), ddof=0."""
    p = np.asarray(member_predictions, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] < 1:
        raise ValueError(f"expected (K members, M triplets) predictions, got shape {p.shape}")
    return p.mean(axis=0), p.std(axis=0)


def member_predictions(members: Sequence[Member], cell_graph, indices, batch_size: int = 4096) -> np.ndarray:
    """(K, M) tau-scale predictions of each member for ``indices`` (M, 3)."""
    import torch

    from dango_nb.eval.prediction import predict

    idx = indices if isinstance(indices, torch.Tensor) else torch.as_tensor(np.asarray(indices))
    idx = idx.long()
    return np.stack([np.asarray(predict(m.model, cell_graph, idx, m.scaler, batch_size=batch_size),
                                dtype=np.float64).reshape(-1) for m in members])


class EnsembleScorer:
    """A :class:`dango_nb.eval.prediction.TripletScorer` over DANGO members (one member: spread 0)."""

    def __init__(self, members: Sequence[Member], cell_graph, genes: Sequence[str] | None = None,
                 batch_size: int = 4096):
        if not members:
            raise ValueError("an ensemble needs at least one member")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.members = list(members)
        self.cell_graph = cell_graph
        self.genes = list(genes if genes is not None else cell_graph["gene"].node_ids)
        self.batch_size = batch_size

    def _embeddings(self) -> list:
        """Integrated embeddings (N, H) of every member, computed once: scoring many chunks then
        only runs the Hyper-SAGNN head (the GNN stage does not depend on the triplets)."""
        if getattr(self, "_integrated", None) is None:
            self._integrated = [m.model.embeddings(self.cell_graph) for m in self.members]
        return self._integrated

    def member_predictions(self, indices) -> np.ndarray:
        """(K, M) tau-scale predictions; equal to :func:`member_predictions` (tested)."""
        import torch

        idx = indices if isinstance(indices, torch.Tensor) else torch.as_tensor(np.asarray(indices))
        idx = idx.long()
        rows = []
        for m, emb in zip(self.members, self._embeddings()):
            z = m.model.predict(self.cell_graph, idx, self.batch_size, embeddings=emb)
            rows.append(np.asarray(m.scaler.inverse_transform(z.double().cpu().numpy()), dtype=np.float64))
        return np.stack(rows)

    def score(self, indices) -> tuple[np.ndarray, np.ndarray]:
        return combine(self.member_predictions(indices))

    @classmethod
    def from_checkpoints(cls, paths: Sequence[str | os.PathLike], cell_graph, device: str = "cpu",
                         top_k: int | None = None, batch_size: int = 4096) -> "EnsembleScorer":
        """Members from checkpoints written by :func:`dango_nb.train.fit`.

        A file is one member; a run directory stands for its kept top-k checkpoints (best first,
        at most ``top_k`` of them). ``cell_graph`` must be the graph the runs were trained on
        (checkpoints hold weights, not graphs); its gene count is checked against each model.
        """
        from dango_nb.errors import SourceMismatchError
        from dango_nb.train import load_checkpoint

        members = []
        for path in checkpoint_files(paths, top_k):
            model, scaler = load_checkpoint(path, device=device)
            n = int(cell_graph["gene"].num_nodes)
            if model.gene_num != n:
                raise SourceMismatchError(f"{path}: model was trained on {model.gene_num} genes but the cell graph "
                                 f"has {n}; give the data source the run was trained on")
            members.append(Member(model, scaler, name=os.fspath(path)))
        return cls(members, cell_graph, batch_size=batch_size)


def checkpoint_files(paths: Sequence[str | os.PathLike], top_k: int | None = None) -> list[Path]:
    """Expand run directories into their top-k checkpoint files (best first; ``best.pt``, else
    ``last.pt``, when none was kept); files stay as they are.

    ``top_k``: at most this many per directory (``None``: all it kept); must be >= 1.
    """
    from dango_nb.train import list_checkpoints

    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        # found[:-1] would silently drop the last member instead of keeping the first ones
        raise ValueError(f"top_k must be an integer >= 1 or None (all kept), got {top_k!r}")

    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found = [Path(f) for f in list_checkpoints(p)["path"]]
            if not found:  # none kept (keep_top_k 0): the best epoch's model, else the last one
                found = [f for f in (p / "best.pt", p / "last.pt") if f.is_file()][:1]
            if not found:
                raise FileNotFoundError(f"{p}: no checkpoints in this directory (expected top_k.json, best.pt or "
                                        "last.pt)")
            files.extend(found[:top_k] if top_k is not None else found)
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: checkpoint file or directory not found")
    if not files:
        raise ValueError("no checkpoints given")
    return files


# ---------------------------------------------------------------------------------------------
# Analysis tables

def ensemble_gain(y_true, member_preds, names: Sequence[str] | None = None, seed: int = 0,
                  n_balanced_repeats: int = 10, groups: Sequence[str] | None = None) -> pd.DataFrame:
    """Metrics of every member, of the average single member and of the ensemble, and with
    ``groups`` what each axis of a top-k x seeds ensemble adds.

    Rows: one per member (``kind="member"``), ``"single_mean"`` (mean over members: the expected
    single model), ``"ensemble"`` and ``"gain"`` (ensemble minus single_mean; negative mse = better).

    ``groups`` names each member's run (e.g. its seed; members of a run best first, as
    :func:`checkpoint_files` lists them). Then also (``kind="decomposition"``):
    ``"best_single"`` (mean over runs of the run's best-validation checkpoint alone: what one fit
    reports), ``"top_k"`` (mean over runs of the run's own top-k ensemble), ``"seeds"`` (the
    ensemble of every run's best checkpoint), and the gains over ``best_single`` of those two and
    of the whole ensemble: ``"gain_top_k"``, ``"gain_seeds"``, ``"gain_ensemble"``.
    """
    p = np.asarray(member_preds, dtype=np.float64)
    names = list(names) if names is not None else [f"member{k}" for k in range(len(p))]
    if len(names) != len(p):
        raise ValueError(f"{len(names)} names for {len(p)} members")
    if groups is not None and len(groups) != len(p):
        raise ValueError(f"{len(groups)} groups for {len(p)} members")

    def ev(pred):
        return M.evaluate(y_true, pred, seed=seed, n_balanced_repeats=n_balanced_repeats)

    rows = [{"name": n, "kind": "member", **ev(pk)} for n, pk in zip(names, p)]
    single = pd.DataFrame(rows)[list(M.METRICS)].mean(numeric_only=True)
    mean, _ = combine(p)
    ens = ev(mean)
    rows.append({"name": "single_mean", "kind": "summary", **single.to_dict()})
    rows.append({"name": "ensemble", "kind": "summary", **ens})
    rows.append({"name": "gain", "kind": "summary", **{m: ens[m] - single[m] for m in M.METRICS}})
    if groups is not None:
        order = list(dict.fromkeys(groups))
        members = {g: [k for k, gk in enumerate(groups) if gk == g] for g in order}
        by_run = pd.DataFrame([ev(p[ks[0]]) for ks in members.values()])[list(M.METRICS)]
        best = by_run.mean(numeric_only=True)
        top_k = pd.DataFrame([ev(combine(p[ks])[0]) for ks in members.values()])[list(M.METRICS)].mean(
            numeric_only=True)
        seeds = ev(combine(p[[ks[0] for ks in members.values()]])[0])
        for name, values in (("best_single", best.to_dict()), ("top_k", top_k.to_dict()), ("seeds", seeds)):
            rows.append({"name": name, "kind": "decomposition", **values})
        for name, values in (("gain_top_k", top_k), ("gain_seeds", seeds), ("gain_ensemble", ens)):
            rows.append({"name": name, "kind": "decomposition", **{m: values[m] - best[m] for m in M.METRICS}})
    return pd.DataFrame(rows)


def ensemble_contributions(gains: pd.DataFrame, metric: str = "pearson") -> pd.DataFrame:
    """What each axis of a top-k x seeds ensemble adds, per split (mean over folds): from the
    evaluation's ``ensemble_gain`` table (its ``decomposition`` rows) to one row per split with
    ``best_single`` (one fit's best checkpoint), ``top_k`` (its top-k checkpoints), ``seeds`` (the
    seeds' best checkpoints), ``top_k_x_seeds`` (all members) and the last three minus the first."""
    cols = ["split", "best_single", "top_k", "seeds", "top_k_x_seeds", "gain_top_k", "gain_seeds", "gain_ensemble"]
    if gains is None or gains.empty or "kind" not in gains or not (gains["kind"] == "decomposition").any():
        return pd.DataFrame(columns=cols)
    names = ["best_single", "top_k", "seeds", "ensemble", "gain_top_k", "gain_seeds", "gain_ensemble"]
    d = gains[gains["name"].isin(names)]
    wide = d.pivot_table(index=["split", "fold"], columns="name", values=metric, aggfunc="first", dropna=False)
    wide = wide.rename(columns={"ensemble": "top_k_x_seeds"})
    out = wide.groupby(level="split", sort=False).mean().reset_index()
    return out.reindex(columns=cols)


def spread_error_table(y_true, prediction, spread) -> pd.DataFrame:
    """Per triplet: ``target, prediction, spread, abs_error`` (NaN targets dropped)."""
    y = np.asarray(y_true, dtype=np.float64).reshape(-1)
    p = np.asarray(prediction, dtype=np.float64).reshape(-1)
    s = np.asarray(spread, dtype=np.float64).reshape(-1)
    if not (len(y) == len(p) == len(s)):
        raise ValueError(f"lengths differ: {len(y)} targets, {len(p)} predictions, {len(s)} spreads")
    keep = ~np.isnan(y)
    return pd.DataFrame({"target": y[keep], "prediction": p[keep], "spread": s[keep],
                         "abs_error": np.abs(y[keep] - p[keep])})


def spread_calibration_table(y_true, prediction, spread, n_bins: int = 10) -> pd.DataFrame:
    """Triplets binned by spread quantile: per bin ``n, spread_mean, abs_error_mean, abs_error_sem``
    (standard error of that mean, NaN for a one-triplet bin), ``rmse`` and
    ``expected_abs_error`` = sqrt(2/pi) * rms spread (the mean |error| if errors were Gaussian
    with the spread as their sd). ``attrs["spearman"]`` holds Spearman(spread, |error|)."""
    t = spread_error_table(y_true, prediction, spread)
    if t.empty:
        out = pd.DataFrame(columns=["bin", "n", "spread_mean", "abs_error_mean", "abs_error_sem", "rmse",
                                    "expected_abs_error"])
        out.attrs["spearman"] = float("nan")
        return out
    edges = np.unique(np.quantile(t["spread"], np.linspace(0, 1, n_bins + 1)))
    if len(edges) > 1:
        b = np.clip(np.searchsorted(edges, t["spread"], side="right") - 1, 0, len(edges) - 2)
    else:
        b = np.zeros(len(t), dtype=int)
    t["bin"] = b
    g = t.groupby("bin")
    out = pd.DataFrame({
        "n": g.size(),
        "spread_mean": g["spread"].mean(),
        "abs_error_mean": g["abs_error"].mean(),
        "abs_error_sem": g["abs_error"].sem(ddof=1),
        "rmse": g["abs_error"].apply(lambda e: float(np.sqrt(np.mean(e ** 2)))),
        "expected_abs_error": g["spread"].apply(lambda s: float(np.sqrt(2 / np.pi) * np.sqrt(np.mean(s ** 2)))),
    }).reset_index()
    out.attrs["spearman"] = M.spearman(t["spread"], t["abs_error"])  # NaN when either side is constant
    return out
