"""Batch sources: what one training epoch iterates over.

A source is bound to a device once (:meth:`bind`) and then yields one :class:`Batch` per step.
:class:`TripletEpochs` shuffles the training triplets every epoch (:func:`~dango_nb.train.fit`),
:class:`FixedBatch` is one step on the same batch every epoch
(:func:`~dango_nb.train.overfit_batch`), :class:`GeneEpochs` visits every gene's adjacency rows
once per epoch for reconstruction-only pre-training (:func:`~dango_nb.train.pretrain`).
"""

from __future__ import annotations

from typing import Iterator, NamedTuple

import torch
from torch import Tensor

from dango_nb.train.scaler import TargetScaler

__all__ = ["Batch", "BatchSource", "TripletEpochs", "FixedBatch", "GeneEpochs", "check_edge_weights",
           "check_triplets"]


def check_triplets(triplets, n_genes: int, what: str) -> None:
    """Refuse gene indices outside ``0 .. n_genes - 1`` (a negative index would silently pick a
    gene from the end) and infinite targets (NaN marks a missing target and is masked)."""
    idx = triplets.indices
    bad = (idx < 0) | (idx >= n_genes)
    if bool(bad.any()):
        row = int(bad.any(dim=1).nonzero()[0, 0])
        raise ValueError(f"{what} triplets: row {row} has gene indices {idx[row].tolist()}, expected "
                         f"0 .. {n_genes - 1} (the cell graph has {n_genes} genes)")
    inf = torch.isinf(triplets.targets)
    if bool(inf.any()):
        row = int(inf.nonzero()[0, 0])
        raise ValueError(f"{what} triplets: row {row} has target {float(triplets.targets[row])}, expected a "
                         f"finite tau (NaN for a missing one); {int(inf.sum())} infinite targets in all")


def check_edge_weights(cell_graph) -> None:
    """Refuse edge weights outside (0, 1] (the cell graph contract: scaled STRING scores) or
    not finite, naming the channel."""
    for et in cell_graph.edge_types:
        w = getattr(cell_graph[et], "edge_weight", None)
        if w is None:
            continue
        bad = ~((w > 0) & (w <= 1))  # NaN fails both comparisons
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise ValueError(f"cell graph channel {et[1]!r}: {int(bad.sum())} edge weights outside (0, 1], "
                             f"e.g. {float(w[i])} at edge {i}; edge weights are STRING scores scaled to (0, 1]")


class Batch(NamedTuple):
    """One step's inputs: triplet ``indices (B, 3)``, scaled targets ``z (B,)`` and tau targets
    ``y (B,)`` (all ``None`` without triplets), and ``rows (R,)``, the genes whose reconstruction
    the step trains (``None`` = the model's default, the triplets' genes)."""

    indices: Tensor | None
    z: Tensor | None
    y: Tensor | None
    rows: Tensor | None


class BatchSource:
    """Base class. ``name`` labels the run (progress bar, checkpoint kind); ``trains_interaction``
    says whether its epochs can train the interaction loss (only those compete for "best")."""

    name = "source"
    trains_interaction = True
    triplets = None  # the TripletTensors trained on, if any

    def bind(self, device: torch.device, batch_size: int, n_genes: int) -> TargetScaler:
        """Move the data to ``device``; returns the target scaler (fitted on the training targets)."""
        raise NotImplementedError

    def steps_per_epoch(self) -> int:
        raise NotImplementedError

    def batches(self, generator: torch.Generator) -> Iterator[Batch]:
        raise NotImplementedError


class _Triplets(BatchSource):
    def __init__(self, triplets):
        if triplets is None or len(triplets) == 0:
            raise ValueError("no training triplets")
        self.triplets = triplets

    def bind(self, device, batch_size, n_genes):
        check_triplets(self.triplets, n_genes, "training")
        self.device, self.batch_size = device, batch_size
        scaler = TargetScaler.fit(self.triplets.targets)  # training split only
        self.idx = self.triplets.indices.to(device, torch.long)
        self.y = self.triplets.targets.to(device, torch.float32)
        self.z = scaler.transform(self.y.double()).float()  # NaN stays NaN
        return scaler


class TripletEpochs(_Triplets):
    """Every epoch: all training triplets in a fresh seeded order, ``batch_size`` per step."""

    name = "fit"

    def steps_per_epoch(self) -> int:
        return -(-len(self.triplets) // self.batch_size)

    def batches(self, generator):
        order = torch.randperm(len(self.triplets), generator=generator).to(self.device)
        for s in range(0, len(self.triplets), self.batch_size):
            sel = order[s:s + self.batch_size]
            yield Batch(self.idx[sel], self.z[sel], self.y[sel], None)


class FixedBatch(_Triplets):
    """Every epoch: one step on the whole batch (``batch_size`` is not used)."""

    name = "overfit"

    def steps_per_epoch(self) -> int:
        return 1

    def batches(self, generator):
        yield Batch(self.idx, self.z, self.y, None)


class GeneEpochs(BatchSource):
    """Every epoch: all genes' adjacency rows in a fresh seeded order, ``batch_size`` genes per
    step, no triplets (reconstruction only)."""

    name = "pretrain"
    trains_interaction = False

    def bind(self, device, batch_size, n_genes):
        self.device, self.batch_size, self.n_genes = device, batch_size, n_genes
        return TargetScaler()

    def steps_per_epoch(self) -> int:
        return -(-self.n_genes // self.batch_size)

    def batches(self, generator):
        order = torch.randperm(self.n_genes, generator=generator).to(self.device)
        for s in range(0, self.n_genes, self.batch_size):
            yield Batch(None, None, None, order[s:s + self.batch_size])
