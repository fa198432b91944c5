"""What pre-training learns: held-out edge recovery per channel, meta-embedding weights and
integrated gene embeddings (the pre-training notebook's analyses).

Held-out edges: a seeded fraction of each channel's undirected edges is removed from the cell graph
before pre-training (:func:`holdout_edges`); afterwards every held-out pair ``(i, j)`` is scored from
the reconstruction heads, ``0.5 * (head_j . z_i + b_j + head_i . z_j + b_i)`` (only the two entries
needed, never a dense row block), against the same number of sampled non-edges (pairs of genes of
that channel that are not edges in the full graph, held-out ones included). AUROC 0.5 is chance.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from dango_nb.models import eval_mode

__all__ = ["EdgeHoldout", "holdout_edges", "heldout_auroc", "GeneEmbeddings", "gene_embeddings",
           "module_knn_agreement"]


@dataclass
class EdgeHoldout:
    """``train_graph``: the cell graph without the held-out edges. ``heldout``: edge type ->
    ``(2, K)`` long pairs (``i < j``). ``full_graph``: the original graph."""

    train_graph: object
    heldout: dict[tuple[str, str, str], torch.Tensor]
    full_graph: object
    fraction: float
    seed: int

    def table(self) -> pd.DataFrame:
        from dango_nb.data.graph import channel_of

        rows = []
        for et, pairs in self.heldout.items():
            total = int(self.full_graph[et].edge_index.size(1)) // 2
            rows.append({"channel": channel_of(et), "edges": total, "held_out": int(pairs.size(1)),
                         "kept": int(self.train_graph[et].edge_index.size(1)) // 2})
        return pd.DataFrame(rows)


def _canonical(store) -> tuple[torch.Tensor, torch.Tensor]:
    ei = store.edge_index
    keep = ei[0] < ei[1]
    w = store.edge_weight[keep] if getattr(store, "edge_weight", None) is not None else None
    return ei[:, keep], w


def holdout_edges(cell_graph, fraction: float, seed: int = 0) -> EdgeHoldout:
    """Remove ``round(fraction * E)`` seeded random undirected edges from every channel.

    The returned ``train_graph`` is a copy with both directions of those edges removed (node data
    shared by value); ``cell_graph`` is not changed.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    gen = torch.Generator().manual_seed(int(seed))
    train = copy.copy(cell_graph)  # new stores, shared tensors; edge tensors are replaced below
    heldout = {}
    for et in cell_graph.edge_types:
        pairs, w = _canonical(cell_graph[et])
        e = pairs.size(1)
        k = int(round(fraction * e))
        perm = torch.randperm(e, generator=gen)
        held, kept = perm[:k].sort().values, perm[k:].sort().values
        heldout[et] = pairs[:, held]
        kp = pairs[:, kept]
        src, dst = torch.cat([kp[0], kp[1]]), torch.cat([kp[1], kp[0]])
        order = np.lexsort((dst.numpy(), src.numpy()))
        order = torch.from_numpy(order)
        train[et].edge_index = torch.stack([src[order], dst[order]])
        if w is not None:
            train[et].edge_weight = torch.cat([w[kept], w[kept]])[order]
    return EdgeHoldout(train, heldout, cell_graph, float(fraction), int(seed))


def _sample_non_edges(pairs_full: torch.Tensor, genes: np.ndarray, n: int, rng: np.random.Generator,
                      n_nodes: int) -> np.ndarray:
    """``(2, n)`` distinct pairs ``i < j`` of ``genes`` that are not in ``pairs_full``."""
    edges = set((pairs_full[0].numpy().astype(np.int64) * n_nodes + pairs_full[1].numpy()).tolist())
    m = len(genes)
    possible = m * (m - 1) // 2 - len(edges)
    if possible < n:
        raise ValueError(f"only {possible} non-edges among {m} genes; cannot sample {n}")
    chosen: set[int] = set()
    while len(chosen) < n:
        a = genes[rng.integers(0, m, size=2 * (n - len(chosen)) + 16)]
        b = genes[rng.integers(0, m, size=a.size)]
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        for code in (lo * n_nodes + hi)[lo != hi].tolist():
            if code not in edges and code not in chosen:
                chosen.add(code)
                if len(chosen) == n:
                    break
    codes = np.fromiter(chosen, dtype=np.int64)
    codes.sort()
    return np.stack([codes // n_nodes, codes % n_nodes])


@torch.no_grad()
def _pair_scores(model, emb: dict, et, pairs: torch.Tensor) -> np.ndarray:
    head = model.pretrain.head(et)
    z = emb[et]
    i, j = pairs[0].to(z.device), pairs[1].to(z.device)
    s_ij = (z[i] * head.weight[j]).sum(-1) + head.bias[j]
    s_ji = (z[j] * head.weight[i]).sum(-1) + head.bias[i]
    return (0.5 * (s_ij + s_ji)).cpu().numpy().astype(np.float64)


@torch.no_grad()
def heldout_auroc(model, holdout: EdgeHoldout, negatives_per_positive: int = 1, seed: int = 0) -> pd.DataFrame:
    """AUROC per channel of held-out edges against sampled non-edges, scored by ``model`` (a
    :class:`~dango_nb.models.Dango` pre-trained on ``holdout.train_graph``).

    Returns columns ``channel, held_out, negatives, auroc, mean_score_edges, mean_score_non_edges``.
    """
    from sklearn.metrics import roc_auc_score

    from dango_nb.data.graph import channel_of

    inputs = model.prepare(holdout.train_graph)
    with eval_mode(model):
        emb = model.pretrain(inputs)
    rng = np.random.default_rng(seed)
    n_nodes = int(holdout.full_graph["gene"].num_nodes)
    rows = []
    for et, pos in holdout.heldout.items():
        full, _ = _canonical(holdout.full_graph[et])
        genes = np.unique(full.numpy())
        k = int(pos.size(1))
        if k == 0:
            rows.append({"channel": channel_of(et), "held_out": 0, "negatives": 0, "auroc": float("nan"),
                         "mean_score_edges": float("nan"), "mean_score_non_edges": float("nan")})
            continue
        neg = torch.from_numpy(_sample_non_edges(full, genes, k * int(negatives_per_positive), rng, n_nodes))
        sp, sn = _pair_scores(model, emb, et, pos), _pair_scores(model, emb, et, neg)
        y = np.r_[np.ones(len(sp)), np.zeros(len(sn))]
        rows.append({"channel": channel_of(et), "held_out": k, "negatives": int(neg.size(1)),
                     "auroc": float(roc_auc_score(y, np.r_[sp, sn])),
                     "mean_score_edges": float(sp.mean()), "mean_score_non_edges": float(sn.mean())})
    return pd.DataFrame(rows)


@dataclass
class GeneEmbeddings:
    """``integrated`` (N, H) meta embeddings, ``meta_weights`` (N, C) with columns ``channels``."""

    integrated: np.ndarray
    meta_weights: np.ndarray
    channels: list[str]
    genes: list[str]

    def weights_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.meta_weights, columns=self.channels, index=pd.Index(self.genes, name="gene"))


@torch.no_grad()
def gene_embeddings(model, cell_graph) -> GeneEmbeddings:
    """Integrated embeddings and meta-embedding weights of every gene (eval mode)."""
    from dango_nb.data.graph import channel_of

    with eval_mode(model):
        _, integrated, weights = model.embed(cell_graph)
    return GeneEmbeddings(integrated.cpu().numpy().astype(np.float64), weights.cpu().numpy().astype(np.float64),
                          [channel_of(et) for et in model.edge_types], list(cell_graph["gene"].node_ids))


def module_knn_agreement(embeddings, labels, k: int = 10) -> tuple[float, float]:
    """How well embeddings group genes by module: the mean fraction of each labelled gene's ``k``
    nearest labelled neighbours (cosine) that share its module, and the same fraction expected by
    chance (sum of squared module shares, leaving the gene out). Genes with no label are ignored."""
    from sklearn.neighbors import NearestNeighbors

    lab = pd.Series(np.asarray(labels, dtype=object))
    ok = ~(lab.isna() | lab.astype(str).isin(["", "-1", "none", "None"])).to_numpy()
    x, y = np.asarray(embeddings, dtype=float)[ok], lab[ok].astype(str).to_numpy()
    n = len(y)
    if n <= k:
        raise ValueError(f"need more than k={k} labelled genes, got {n}")
    nn = NearestNeighbors(n_neighbors=k + 1, metric="cosine").fit(x)
    _, idx = nn.kneighbors(x)
    agree = float((y[idx[:, 1:]] == y[:, None]).mean())
    counts = pd.Series(y).value_counts().to_numpy(dtype=float)
    chance = float(np.sum(counts * (counts - 1)) / (n * (n - 1)))
    return agree, chance
