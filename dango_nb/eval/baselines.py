"""Baselines DANGO has to beat, fitted on the same splits and scored with the same metrics.

All share one small interface over gene-index triplets (the (N, 3) arrays of
:class:`~dango_nb.data.triplets.TripletTensors`)::

    model.fit(train_indices, train_targets, val_indices=None, val_targets=None) -> model
    model.predict(indices) -> (M,) float64 predictions on the tau scale

Validation data is only used to pick a hyper-parameter (ridge strength, MLP epoch); test data is
never seen. NaN targets are dropped before fitting.

- :class:`MeanPredictor`: the training mean (Pearson undefined: NaN in the tables).
- :class:`AdditiveGeneModel`: tau ~ c + b_i + b_j + b_k, ridge on a sparse one-hot design. A gene
  without training triplets (gene splits) gets b = 0, i.e. the mean.
- :class:`PairwiseAdditiveModel`: adds one term per gene pair seen in training,
  tau ~ c + sum_genes b + sum_pairs b_pair.
- :class:`EmbeddingMLP`: an MLP (torch) over the integrated gene embeddings of a pre-trained DANGO,
  the original paper's ablation; gene-order invariant by training on random gene orders of the
  concatenated embeddings and averaging the six orders' predictions.
"""

from __future__ import annotations

import copy
import itertools

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import Ridge

from dango_nb.data.triplets import as_index_array
from dango_nb.metrics import mse

DEFAULT_ALPHAS = (0.01, 0.1, 1.0, 10.0, 100.0)


def _targets(y) -> np.ndarray:
    if hasattr(y, "detach"):
        y = y.detach().cpu().numpy()
    return np.asarray(y, dtype=np.float64).reshape(-1)


def _drop_nan(idx: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(idx) != len(y):
        raise ValueError(f"{len(idx)} triplets but {len(y)} targets")
    keep = ~np.isnan(y)
    return idx[keep], y[keep]


class MeanPredictor:
    """Predicts the mean training tau for every triplet."""

    def fit(self, indices, targets, val_indices=None, val_targets=None) -> "MeanPredictor":
        idx, y = _drop_nan(as_index_array(indices), _targets(targets))
        if len(y) == 0:
            raise ValueError("MeanPredictor: no finite training targets")
        self.mean_ = float(y.mean())
        return self

    def predict(self, indices) -> np.ndarray:
        return np.full(len(as_index_array(indices)), self.mean_, dtype=np.float64)


class _RidgeOnDesign:
    """Ridge on a sparse design built by ``_design``; alpha picked on validation MSE when given."""

    def __init__(self, alphas=DEFAULT_ALPHAS, alpha: float | None = None):
        self.alphas = tuple(alphas) if alpha is None else (float(alpha),)

    def _design(self, idx: np.ndarray, fit: bool) -> sp.csr_matrix:  # pragma: no cover - abstract
        raise NotImplementedError

    def fit(self, indices, targets, val_indices=None, val_targets=None):
        idx, y = _drop_nan(as_index_array(indices), _targets(targets))
        if len(y) == 0:
            raise ValueError(f"{type(self).__name__}: no finite training targets")
        X = self._design(idx, fit=True)
        Xv = yv = None
        if val_indices is not None and len(self.alphas) > 1:
            vi, yv = _drop_nan(as_index_array(val_indices), _targets(val_targets))
            Xv = self._design(vi, fit=False) if len(yv) else None
        self.val_mse_ = {}
        if Xv is None:
            # Nothing to select on: the single alpha given, or the middle of the grid.
            self.alpha_ = self.alphas[len(self.alphas) // 2]
            self.model_ = self._ridge(self.alpha_).fit(X, y)
            return self
        best = None
        for a in self.alphas:
            model = self._ridge(a).fit(X, y)
            err = mse(yv, model.predict(Xv))
            self.val_mse_[a] = err
            if best is None or err < best[0]:
                best = (err, a, model)
        _, self.alpha_, self.model_ = best
        return self

    @staticmethod
    def _ridge(alpha: float) -> Ridge:
        # sparse_cg handles the intercept on sparse input without densifying.
        return Ridge(alpha=alpha, fit_intercept=True, solver="sparse_cg", tol=1e-6, max_iter=10000)

    def predict(self, indices) -> np.ndarray:
        return self.model_.predict(self._design(as_index_array(indices), fit=False)).astype(np.float64)


class AdditiveGeneModel(_RidgeOnDesign):
    """tau ~ c + b_i + b_j + b_k (ridge). ``coef_`` (n_genes,) and ``intercept_`` after fit."""

    def __init__(self, n_genes: int | None = None, alphas=DEFAULT_ALPHAS, alpha: float | None = None):
        super().__init__(alphas, alpha)
        self.n_genes = n_genes

    def _design(self, idx: np.ndarray, fit: bool) -> sp.csr_matrix:
        if fit and self.n_genes is None:
            self.n_genes_ = int(idx.max()) + 1
        elif fit:
            self.n_genes_ = int(self.n_genes)
        n = len(idx)
        # Gene ids never seen at fit time (beyond n_genes_) simply get no column: b = 0.
        cols = idx.reshape(-1)
        rows = np.repeat(np.arange(n), 3)
        keep = cols < self.n_genes_
        return sp.csr_matrix((np.ones(keep.sum()), (rows[keep], cols[keep])), shape=(n, self.n_genes_))

    @property
    def coef_(self) -> np.ndarray:
        return self.model_.coef_

    @property
    def intercept_(self) -> float:
        return float(self.model_.intercept_)


class PairwiseAdditiveModel(_RidgeOnDesign):
    """tau ~ c + sum of three gene terms + sum of three pair terms (pairs seen in training)."""

    def __init__(self, n_genes: int | None = None, alphas=DEFAULT_ALPHAS, alpha: float | None = None):
        super().__init__(alphas, alpha)
        self.n_genes = n_genes

    @staticmethod
    def _pair_keys(idx: np.ndarray, n_genes: int) -> np.ndarray:
        s = np.sort(idx, axis=1)
        return np.stack([s[:, 0] * n_genes + s[:, 1], s[:, 0] * n_genes + s[:, 2],
                         s[:, 1] * n_genes + s[:, 2]], axis=1)

    def _design(self, idx: np.ndarray, fit: bool) -> sp.csr_matrix:
        if fit:
            self.n_genes_ = int(idx.max()) + 1 if self.n_genes is None else int(self.n_genes)
        g = self.n_genes_
        if fit:
            # A fixed key base larger than any training id; at predict time ids beyond it become
            # -1, whose keys are negative and so never match a training pair.
            self.pair_base_ = max(g, int(idx.max()) + 1)
            keys = self._pair_keys(idx, self.pair_base_)
            self.pairs_ = np.unique(keys)
        else:
            keys = self._pair_keys(np.where(idx < self.pair_base_, idx, -1), self.pair_base_)
        n = len(idx)
        pos = np.searchsorted(self.pairs_, keys)
        pos_c = np.minimum(pos, len(self.pairs_) - 1)
        known = self.pairs_[pos_c] == keys
        gene_cols = idx.reshape(-1)
        gene_rows = np.repeat(np.arange(n), 3)
        gk = gene_cols < g
        pr = np.repeat(np.arange(n), 3)[known.reshape(-1)]
        pc = g + pos_c.reshape(-1)[known.reshape(-1)]
        rows = np.concatenate([gene_rows[gk], pr])
        cols = np.concatenate([gene_cols[gk], pc])
        return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, g + len(self.pairs_)))

    @property
    def gene_coef_(self) -> np.ndarray:
        return self.model_.coef_[: self.n_genes_]

    @property
    def pair_coef_(self) -> np.ndarray:
        """Coefficients aligned with ``pair_index_`` ((P, 2) sorted gene id pairs)."""
        return self.model_.coef_[self.n_genes_:]

    @property
    def pair_index_(self) -> np.ndarray:
        return np.stack([self.pairs_ // self.pair_base_, self.pairs_ % self.pair_base_], axis=1)


PERMUTATIONS = tuple(itertools.permutations(range(3)))


def sorted_triplet_features(embeddings: np.ndarray, indices) -> np.ndarray:
    """(M, 3H) features: per embedding dimension, the three genes' values sorted (min, mid, max).

    Invariant to gene order but loses which gene each coordinate came from.
    """
    idx = as_index_array(indices)
    e = np.asarray(embeddings)[idx]  # (M, 3, H)
    return np.sort(e, axis=1).reshape(len(idx), -1)


class EmbeddingMLP:
    """A small torch MLP on the integrated embeddings of the three genes.

    ``embeddings`` (n_genes, H): the integrated (meta-embedding) output of a pre-trained DANGO,
    e.g. from :func:`integrated_embeddings`. ``features="concat"`` (default): the three embeddings
    concatenated, (B, 3H); every training step shows each triplet in a random gene order (seeded)
    and predictions average all six orders, so the score does not depend on gene order.
    ``"sorted"``: :func:`sorted_triplet_features` (invariant by construction, weaker: on a planted
    non-additive function of the embeddings r 0.83 vs 0.99 for concat). Embedding dimensions are
    standardised with training statistics (pooled over the three genes) and targets with the
    training mean/sd; Adam with L2 ``weight_decay``, MSE loss. With validation data the epoch with
    the lowest validation MSE is kept (early stopping after ``patience`` epochs without
    improvement); without, the last of ``max_epochs``. Runs on the CPU.
    """

    def __init__(self, embeddings, hidden_layer_sizes=(128, 64), features: str = "concat",
                 weight_decay: float = 1e-5, lr: float = 3e-3, batch_size: int = 128,
                 max_epochs: int = 100, patience: int = 10, seed: int = 0):
        if hasattr(embeddings, "detach"):
            embeddings = embeddings.detach().cpu().numpy()
        self.embeddings = np.asarray(embeddings, dtype=np.float64)
        if self.embeddings.ndim != 2:
            raise ValueError(f"embeddings must be (n_genes, H), got {self.embeddings.shape}")
        if features not in ("concat", "sorted"):
            raise ValueError(f"features must be 'concat' or 'sorted', got {features!r}")
        self.hidden_layer_sizes = tuple(int(h) for h in hidden_layer_sizes)
        self.features = features
        self.weight_decay, self.lr = weight_decay, lr
        self.batch_size, self.max_epochs, self.patience, self.seed = batch_size, max_epochs, patience, seed

    def _net(self, in_dim: int):
        import torch

        layers, d = [], in_dim
        for h in self.hidden_layer_sizes:
            layers += [torch.nn.Linear(d, h), torch.nn.ReLU()]
            d = h
        layers.append(torch.nn.Linear(d, 1))
        return torch.nn.Sequential(*layers)

    def _x(self, idx):
        """(B, 3H) float32 features of index tensor ``idx`` (B, 3) in its given gene order."""
        e = self.emb_[idx]  # (B, 3, H)
        if self.features == "sorted":
            e = e.sort(dim=1).values
        return e.reshape(idx.shape[0], -1)

    def _predict_std(self, net, idx) -> np.ndarray:
        import torch

        orders = PERMUTATIONS if self.features == "concat" else ((0, 1, 2),)
        net.eval()
        out = torch.zeros(idx.shape[0], dtype=torch.float64)
        with torch.no_grad():
            for start in range(0, idx.shape[0], 65536):
                chunk = idx[start:start + 65536]
                acc = sum(net(self._x(chunk[:, list(o)])).squeeze(1).double() for o in orders)
                out[start:start + 65536] = acc / len(orders)
        return out.numpy()

    def fit(self, indices, targets, val_indices=None, val_targets=None) -> "EmbeddingMLP":
        import torch

        idx_np, y = _drop_nan(as_index_array(indices), _targets(targets))
        if len(y) == 0:
            raise ValueError("EmbeddingMLP: no finite training targets")
        pooled = self.embeddings[np.unique(idx_np)]
        mean, std = pooled.mean(axis=0), pooled.std(axis=0) + 1e-8
        self.emb_ = torch.as_tensor((self.embeddings - mean) / std, dtype=torch.float32)
        self.y_mean_, self.y_std_ = float(y.mean()), float(y.std() + 1e-12)
        idx = torch.as_tensor(idx_np)
        ys = torch.as_tensor((y - self.y_mean_) / self.y_std_, dtype=torch.float32)
        vi = yv = None
        if val_indices is not None:
            v_idx, yv = _drop_nan(as_index_array(val_indices), _targets(val_targets))
            vi = torch.as_tensor(v_idx) if len(yv) else None
        gen = torch.Generator().manual_seed(self.seed)
        torch.manual_seed(self.seed)  # weight init
        net = self._net(3 * self.embeddings.shape[1])
        opt = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        perms = torch.as_tensor(PERMUTATIONS)
        best_err, best_state, best_epoch, since = np.inf, None, -1, 0
        self.val_mse_ = []
        for epoch in range(self.max_epochs):
            net.train()
            order = torch.randperm(len(idx), generator=gen)
            for start in range(0, len(idx), self.batch_size):
                sel = order[start:start + self.batch_size]
                b = idx[sel]
                if self.features == "concat":  # a random gene order per triplet
                    b = torch.gather(b, 1, perms[torch.randint(0, 6, (len(sel),), generator=gen)])
                loss = torch.nn.functional.mse_loss(net(self._x(b)).squeeze(1), ys[sel])
                opt.zero_grad()
                loss.backward()
                opt.step()
            if vi is None:
                continue
            err = mse(yv, self._predict_std(net, vi) * self.y_std_ + self.y_mean_)
            self.val_mse_.append(err)
            if err < best_err:
                best_err, best_epoch, since = err, epoch, 0
                best_state = copy.deepcopy(net.state_dict())
            else:
                since += 1
                if since >= self.patience:
                    break
        if best_state is not None:
            net.load_state_dict(best_state)
        self.model_ = net
        self.best_epoch_ = self.max_epochs - 1 if best_state is None else best_epoch
        return self

    def predict(self, indices) -> np.ndarray:
        import torch

        idx = torch.as_tensor(as_index_array(indices))
        return self._predict_std(self.model_, idx) * self.y_std_ + self.y_mean_


def integrated_embeddings(model, cell_graph) -> np.ndarray:
    """(n_genes, H) integrated (meta-embedding) gene embeddings of a DANGO model, eval mode."""
    return model.embeddings(cell_graph).cpu().numpy().astype(np.float64)


BASELINES = {
    "mean": MeanPredictor,
    "additive": AdditiveGeneModel,
    "pairwise_additive": PairwiseAdditiveModel,
}
