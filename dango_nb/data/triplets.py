"""Trigenic targets as PyTorch objects: a fast tensor view and a TorchCell-style PyG dataset.

Both views hold the same triplets in the same order: ``TripletTensors`` for training at scale
(index tensors, subsets, device moves), ``TripletDataset`` for users who know TorchCell's
``perturbed_genes`` / ``perturbation_indices`` / ``phenotype_values`` items and ``follow_batch``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch_geometric.data import Data, Dataset

from dango_nb.errors import DataFormatError

log = logging.getLogger(__name__)

GENE_COLUMNS = ("gene1", "gene2", "gene3")


@dataclass
class TripletTensors:
    """``indices`` (N, 3) long into ``genes`` (the cell graph's node ids), ``targets`` (N,) float32
    (tau), ``pvalues`` (N,) float32 (NaN when unknown)."""

    indices: torch.Tensor
    targets: torch.Tensor
    pvalues: torch.Tensor
    genes: list[str]

    def __post_init__(self):
        n = self.indices.shape[0]
        if self.indices.dim() != 2 or self.indices.shape[1] != 3:
            raise ValueError(f"indices must be (N, 3), got {tuple(self.indices.shape)}")
        if self.targets.shape != (n,) or self.pvalues.shape != (n,):
            raise ValueError(f"targets {tuple(self.targets.shape)} and pvalues {tuple(self.pvalues.shape)} "
                             f"must be ({n},)")

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def __repr__(self) -> str:
        return (f"TripletTensors(n={len(self)}, num_genes={len(self.genes)}, "
                f"device={self.indices.device.type})")

    def subset(self, idx) -> "TripletTensors":
        """Rows ``idx`` (index tensor/array, boolean mask or slice); ``genes`` is shared."""
        if isinstance(idx, np.ndarray):
            idx = torch.from_numpy(idx)
        elif not isinstance(idx, (slice, torch.Tensor)):
            idx = torch.as_tensor(idx, dtype=torch.long)
        return TripletTensors(self.indices[idx], self.targets[idx], self.pvalues[idx], self.genes)

    def to(self, device) -> "TripletTensors":
        return TripletTensors(self.indices.to(device), self.targets.to(device), self.pvalues.to(device),
                              self.genes)

    def to_frame(self) -> pd.DataFrame:
        """``gene1, gene2, gene3, tau, pvalue`` with gene names."""
        names = np.asarray(self.genes, dtype=object)[self.indices.cpu().numpy()]
        return pd.DataFrame({"gene1": names[:, 0], "gene2": names[:, 1], "gene3": names[:, 2],
                             "tau": self.targets.cpu().numpy(), "pvalue": self.pvalues.cpu().numpy()})


def as_index_array(triplets) -> np.ndarray:
    """A :class:`TripletTensors`, a torch tensor or an array -> ``(N, 3)`` int64 NumPy array."""
    idx = triplets.indices if hasattr(triplets, "targets") else triplets  # TripletTensors-like
    if hasattr(idx, "detach"):
        idx = idx.detach().cpu().numpy()
    idx = np.asarray(idx)
    if idx.ndim != 2 or idx.shape[1] != 3:
        raise ValueError(f"expected triplet indices of shape (N, 3), got {idx.shape}")
    return idx.astype(np.int64, copy=False)


def make_triplets(trigenic_table: pd.DataFrame, node_ids: Sequence[str]) -> tuple[TripletTensors, dict[str, int]]:
    """Map a trigenic table (``gene1, gene2, gene3, tau`` and optionally ``pvalue``) onto ``node_ids``.

    Rows are dropped and counted by reason: ``gene_not_in_graph``, ``repeated_gene``, ``nan_tau``,
    ``non_finite_tau`` (infinite or beyond float32's range; first applicable reason). Table order is
    kept. Raises ``DataFormatError`` for missing columns or when nothing is left.
    """
    for c in (*GENE_COLUMNS, "tau"):
        if c not in trigenic_table.columns:
            raise DataFormatError(f"trigenic table lacks column; has {list(trigenic_table.columns)}", column=c)
    index = pd.Index(list(node_ids))
    if not index.is_unique:
        raise ValueError("node_ids contain duplicates")
    idx = np.stack([index.get_indexer(trigenic_table[c].astype(str)) for c in GENE_COLUMNS], axis=1)
    tau = pd.to_numeric(trigenic_table["tau"], errors="coerce").to_numpy(np.float64)
    pval = (pd.to_numeric(trigenic_table["pvalue"], errors="coerce").to_numpy(np.float64)
            if "pvalue" in trigenic_table.columns else np.full(len(tau), np.nan))
    names = trigenic_table[list(GENE_COLUMNS)].astype(str).to_numpy()
    missing = (idx < 0).any(axis=1)
    repeated = (names[:, 0] == names[:, 1]) | (names[:, 0] == names[:, 2]) | (names[:, 1] == names[:, 2])
    nan_tau = np.isnan(tau)
    # infinite, or beyond float32 (the targets' dtype), where 1e300 would become inf
    non_finite = ~nan_tau & ~(np.abs(np.nan_to_num(tau)) <= np.finfo(np.float32).max)
    dropped = {}
    taken = np.zeros(len(tau), dtype=bool)
    for mask, why in ((missing, "gene_not_in_graph"), (repeated, "repeated_gene"), (nan_tau, "nan_tau"),
                      (non_finite, "non_finite_tau")):
        m = mask & ~taken
        if m.any():
            dropped[why] = int(m.sum())
        taken |= m
    keep = ~taken
    if not keep.any():
        raise DataFormatError(f"no triplets left after filtering {len(tau)} rows (dropped {dropped})")
    if dropped:
        log.warning("make_triplets: dropped %d of %d triplets: %s", int(taken.sum()), len(tau), dropped)
    tt = TripletTensors(
        indices=torch.from_numpy(idx[keep].astype(np.int64)),
        targets=torch.from_numpy(tau[keep].astype(np.float32)),
        pvalues=torch.from_numpy(pval[keep].astype(np.float32)),
        genes=list(node_ids),
    )
    return tt, dropped


class TripletDataset(Dataset):
    """TorchCell-layout view of :class:`TripletTensors`; item ``k`` is a ``Data`` with
    ``perturbed_genes`` (3 names), ``perturbation_indices`` (3,) long (global node indices),
    ``phenotype_values`` (1,) float (tau) and ``pvalue`` (1,) float.

    Batch with ``torch_geometric.loader.DataLoader(ds, follow_batch=["perturbation_indices"])`` to get
    ``perturbation_indices_batch``. Items set ``num_nodes = 3`` (the perturbed genes) so PyG does not
    have to guess it; ``perturbation_indices`` is not offset during batching (its name holds no
    ``"index"``), so batched values remain global cell-graph indices.
    """

    def __init__(self, triplets: TripletTensors, transform=None):
        super().__init__(root=None, transform=transform)
        self.triplets = triplets

    @classmethod
    def from_table(cls, trigenic_table: pd.DataFrame, node_ids: Sequence[str], **kwargs) -> "TripletDataset":
        return cls(make_triplets(trigenic_table, node_ids)[0], **kwargs)

    def len(self) -> int:
        return len(self.triplets)

    def get(self, idx: int) -> Data:
        t = self.triplets
        ind = t.indices[idx]
        return Data(
            perturbed_genes=[t.genes[k] for k in ind.tolist()],
            perturbation_indices=ind.clone(),
            phenotype_values=t.targets[idx].reshape(1).clone(),
            pvalue=t.pvalues[idx].reshape(1).clone(),
            num_nodes=3,
        )
