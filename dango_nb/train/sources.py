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

__all__ = ["Batch", "BatchSource", "TripletEpochs", "FixedBatch", "GeneEpochs"]


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
