"""Sparse adjacency rows: the reconstruction targets of a batch of genes, without any dense ``R x N``.

:func:`gather_rows` slices rows of a CSR adjacency into :class:`SparseRows`; the models build their
targets with it and :mod:`dango_nb.losses` consumes them.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["SparseRows", "gather_rows", "gather_rows_many", "quiet_sparse"]


@contextlib.contextmanager
def quiet_sparse():
    """Silence torch's one-time "sparse CSR is beta" / "invariant checks" notices (not actionable)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Sparse (CSR|CSC|invariant)", category=UserWarning)
        yield


@dataclass
class SparseRows:
    """The non-zero entries of ``R`` adjacency rows, in CSR order (by row, then column).

    Attributes:
        row (Tensor): ``(nnz,)`` long, position ``0..R-1`` of the row in the batch.
        col (Tensor): ``(nnz,)`` long, column = gene index ``0..N-1``.
        value (Tensor): ``(nnz,)`` float, the edge weight (the target).
        num_rows (int): ``R``.
        num_cols (int): ``N``.
        crow (Tensor, optional): ``(R + 1,)`` CSR row pointers (derived from ``row`` when omitted).
    """

    row: Tensor
    col: Tensor
    value: Tensor
    num_rows: int
    num_cols: int
    crow: Tensor | None = None

    def __post_init__(self):
        if self.crow is None:
            counts = torch.bincount(self.row, minlength=self.num_rows)
            self.crow = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])

    @property
    def nnz(self) -> int:
        return int(self.value.numel())

    def to_dense(self) -> Tensor:
        """``(R, N)`` dense targets (tests and plots only; never in a training step)."""
        out = self.value.new_zeros(self.num_rows, self.num_cols)
        out[self.row, self.col] = self.value
        return out

    def to(self, device) -> "SparseRows":
        return SparseRows(self.row.to(device), self.col.to(device), self.value.to(device),
                          self.num_rows, self.num_cols, self.crow.to(device))


def gather_rows(adj: Tensor, rows: Tensor) -> SparseRows:
    """Rows ``rows`` (R,) of a sparse CSR matrix ``adj`` (N, M) as :class:`SparseRows`.

    Row ``k`` of the result is row ``rows[k]`` of ``adj`` (the gene itself, not its neighbour in
    the ordering). Cost is O(R + nnz of those rows); nothing dense.
    """
    return gather_rows_many([adj], rows)[0]


def gather_rows_many(adjs: list[Tensor], rows: Tensor) -> list[SparseRows]:
    """:func:`gather_rows` of the same rows of several CSR matrices, reading all their sizes from
    the device at once (the sizes fix the output shapes: one host sync on CUDA instead of one per
    matrix)."""
    for adj in adjs:
        if adj.layout != torch.sparse_csr:
            raise ValueError(f"gather_rows expects a sparse CSR tensor, got layout {adj.layout}")
    if not adjs:
        return []
    rows = rows.to(device=adjs[0].device, dtype=torch.long).reshape(-1)
    parts = []
    for adj in adjs:
        crow = adj.crow_indices()
        starts = crow[rows]
        counts = crow[rows + 1] - starts
        parts.append((starts, torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)]), counts))
    totals = torch.stack([p[1][-1] for p in parts]).tolist() if len(parts) > 1 else [int(parts[0][1][-1])]
    return [_gather(adj, rows, starts, new_crow, counts, total)
            for adj, (starts, new_crow, counts), total in zip(adjs, parts, totals)]


def _gather(adj: Tensor, rows: Tensor, starts: Tensor, new_crow: Tensor, counts: Tensor, total: int) -> SparseRows:
    colidx, vals = adj.col_indices(), adj.values()
    row_pos = torch.repeat_interleave(torch.arange(rows.numel(), device=adj.device), counts,
                                      output_size=total)
    idx = torch.arange(total, device=adj.device) - new_crow[row_pos] + starts[row_pos]
    return SparseRows(row_pos, colidx[idx], vals[idx], int(rows.numel()), int(adj.size(1)), new_crow)
