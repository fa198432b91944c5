"""Prediction: tau of triplets from a trained model (:func:`predict`), and scoring by gene name,
a given list or every triplet among a gene set in chunks.

A *scorer* is anything with ``genes`` (the model's gene vocabulary, index = gene id) and
``score(indices (M, 3) int64) -> (prediction (M,), spread (M,))`` on the tau scale; spread is the
standard deviation across ensemble members (0 for a single model).
:class:`dango_nb.eval.ensemble.EnsembleScorer` is the DANGO one; :class:`BaselineScorer` wraps any
fitted baseline.

All triplets among n genes are enumerated lexicographically in index space (same order as
``itertools.combinations``) by unranking a contiguous range of ranks per chunk, so memory is
bounded by the chunk size whatever n is, and the count is exactly C(n, 3).
"""

from __future__ import annotations

import math
import os
from typing import Iterable, Iterator, Protocol, Sequence

import numpy as np
import pandas as pd

from dango_nb.fileio import atomic_write_table
from dango_nb.metrics import STRONG_THRESHOLD

__all__ = ["STRONG_THRESHOLD", "OUTPUT_COLUMNS", "TripletScorer", "BaselineScorer", "predict", "evaluate",
           "n_triplets", "unrank_triplets", "iter_triplet_chunks", "score_triplets", "score_all_triplets",
           "write_predictions", "read_gene_list", "read_triplet_list"]
OUTPUT_COLUMNS = ("gene1", "gene2", "gene3", "prediction", "spread")


def _as_indices(indices):
    import torch

    if hasattr(indices, "indices") and hasattr(indices, "targets"):  # TripletTensors
        indices = indices.indices
    idx = torch.as_tensor(np.asarray(indices) if not isinstance(indices, torch.Tensor) else indices)
    if idx.dim() != 2 or idx.size(1) != 3:
        raise ValueError(f"triplet indices must be (N, 3), got {tuple(idx.shape)}")
    return idx.long()


def predict(model, cell_graph, indices, scaler, batch_size: int = 4096) -> np.ndarray:
    """Predicted tau ``(N,)`` for triplets ``indices`` (N, 3) (tensor, array or ``TripletTensors``)
    of a :class:`~dango_nb.models.Dango` (:meth:`~dango_nb.models.Dango.predict`) mapped back by its
    target scaler; ``scaler=None`` returns the raw (standardised) scores."""
    z = model.predict(cell_graph, _as_indices(indices), batch_size).double().cpu().numpy()
    return scaler.inverse_transform(z) if scaler is not None else z


def evaluate(model, cell_graph, triplets, scaler, batch_size: int = 4096) -> dict[str, float]:
    """``{"pearson", "spearman", "mse"}`` of :func:`predict` against ``triplets.targets`` (tau scale)."""
    from dango_nb.train.loop import regression_metrics

    pred = predict(model, cell_graph, triplets, scaler, batch_size)
    r, rho, mse = regression_metrics(triplets.targets.cpu().numpy(), pred)
    return {"pearson": r, "spearman": rho, "mse": mse}


class TripletScorer(Protocol):
    genes: Sequence[str]

    def score(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ...


class BaselineScorer:
    """Adapter: a fitted baseline (``predict(indices)``) as a scorer with zero spread."""

    def __init__(self, model, genes: Sequence[str]):
        self.model, self.genes = model, list(genes)

    def score(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pred = np.asarray(self.model.predict(indices), dtype=np.float64)
        return pred, np.zeros_like(pred)


# ---------------------------------------------------------------------------------------------
# Enumeration in index space

def n_triplets(n: int) -> int:
    """C(n, 3), exact."""
    return math.comb(n, 3)


def unrank_triplets(n: int, ranks: np.ndarray) -> np.ndarray:
    """(M, 3) int64 triplets i < j < k of ``range(n)`` at the given lexicographic ranks.

    The first element is found by binary search on the number of triplets starting below each
    i; the (j, k) pair inside by the inverse of the pair count (closed form with an integer fix-up).
    """
    r = np.asarray(ranks, dtype=np.int64)
    total = n_triplets(n)
    if r.size and (r.min() < 0 or r.max() >= total):
        raise ValueError(f"ranks must lie in [0, {total}) for n={n}")
    i_all = np.arange(n, dtype=np.int64)
    m_all = n - i_all  # elements from i on
    # start[i] = number of triplets whose first element is < i = C(n,3) - C(n-i,3)
    start = total - m_all * (m_all - 1) * (m_all - 2) // 6
    i = np.searchsorted(start, r, side="right") - 1
    r1 = r - start[i]
    m = n - i - 1  # elements after i; (j, k) is a pair among them
    # pair rank r1 -> first element a (0-based among the m): largest a with
    # P(a) = C(m,2) - C(m-a,2) <= r1, i.e. smallest q = m - a with C(q,2) >= C(m,2) - r1.
    t = m * (m - 1) // 2 - r1
    q = np.ceil((1 + np.sqrt(1 + 8 * t.astype(np.float64))) / 2).astype(np.int64)
    # fix rounding: ensure C(q,2) >= t and C(q-1,2) < t
    for _ in range(3):
        q = np.where(q * (q - 1) // 2 < t, q + 1, q)
        q = np.where((q - 1) * (q - 2) // 2 >= t, q - 1, q)
    a = m - q
    b = a + 1 + (r1 - (m * (m - 1) // 2 - q * (q - 1) // 2))
    return np.stack([i, i + 1 + a, i + 1 + b], axis=1)


def iter_triplet_chunks(n: int, chunk_size: int = 1_000_000, start: int = 0,
                        stop: int | None = None) -> Iterator[np.ndarray]:
    """Yield (c, 3) int64 chunks of all triplets of ``range(n)`` (ranks ``start..stop``)."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    stop = n_triplets(n) if stop is None else stop
    for lo in range(start, stop, chunk_size):
        yield unrank_triplets(n, np.arange(lo, min(lo + chunk_size, stop), dtype=np.int64))


# ---------------------------------------------------------------------------------------------
# Names <-> indices

def gene_index(genes: Sequence[str]) -> dict[str, int]:
    return {g: i for i, g in enumerate(genes)}


def to_indices(names: Iterable[str], vocabulary: Sequence[str] | dict[str, int], what: str = "genes",
               where=None) -> np.ndarray:
    """Map gene names to ids; unknown names raise :class:`~dango_nb.errors.UnknownGenesError` (a
    ``KeyError``) that lists them (first 20). ``where(k)`` names the place of ``names[k]`` (e.g.
    ``file:line``); the message starts with the place of the first unknown name."""
    from dango_nb.errors import UnknownGenesError
    lookup = vocabulary if isinstance(vocabulary, dict) else gene_index(vocabulary)
    names = list(names)
    unknown = [g for g in dict.fromkeys(names) if g not in lookup]
    if unknown:
        shown = ", ".join(map(str, unknown[:20])) + (f", ... ({len(unknown)} in all)" if len(unknown) > 20 else "")
        place = "" if where is None else f"{where(names.index(unknown[0]))}: "
        raise UnknownGenesError(f"{place}{what}: {len(unknown)} gene name(s) not in the model's vocabulary "
                                f"({len(lookup)} genes): {shown}")
    return np.fromiter((lookup[g] for g in names), dtype=np.int64, count=len(names))


def _as_triplet_frame(triplets) -> pd.DataFrame:
    if isinstance(triplets, pd.DataFrame):
        missing = [c for c in ("gene1", "gene2", "gene3") if c not in triplets.columns]
        if missing:
            raise ValueError(f"triplet table lacks column(s) {missing}; expected gene1, gene2, gene3")
        return triplets[["gene1", "gene2", "gene3"]].astype(str).reset_index(drop=True)
    rows = [tuple(t) for t in triplets]
    bad = [k for k, t in enumerate(rows) if len(t) != 3]
    if bad:
        raise ValueError(f"triplet {bad[0]} has {len(rows[bad[0]])} genes, expected 3")
    return pd.DataFrame(rows, columns=["gene1", "gene2", "gene3"], dtype=str)


def _check_distinct(idx: np.ndarray, frame: pd.DataFrame) -> None:
    from dango_nb.errors import DataFormatError

    same = (idx[:, 0] == idx[:, 1]) | (idx[:, 0] == idx[:, 2]) | (idx[:, 1] == idx[:, 2])
    if same.any():
        k = int(np.flatnonzero(same)[0])
        raise DataFormatError(f"triplet {k} ({', '.join(frame.iloc[k])}) repeats a gene; a triplet needs "
                         f"three different genes ({int(same.sum())} such rows)")


# ---------------------------------------------------------------------------------------------
# Scoring

def score_triplets(scorer: TripletScorer, triplets, batch_size: int = 100_000,
                   progress: bool = False) -> pd.DataFrame:
    """Score a list of (gene1, gene2, gene3) names or a frame with those columns.

    Returns ``gene1, gene2, gene3, prediction, spread`` in input order (names as given).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    frame = _as_triplet_frame(triplets)
    lookup = gene_index(scorer.genes)
    place = _place(getattr(triplets, "attrs", {}))
    idx = to_indices(frame.to_numpy().reshape(-1), lookup, "triplets",
                     None if place is None else lambda k: place(k // 3)).reshape(-1, 3)
    _check_distinct(idx, frame)
    preds, spreads = [], []
    for lo in _progress(range(0, len(idx), batch_size), progress, "scoring", max(1, -(-len(idx) // batch_size))):
        p, s = scorer.score(idx[lo:lo + batch_size])
        preds.append(np.asarray(p, dtype=np.float64))
        spreads.append(np.asarray(s, dtype=np.float64))
    out = frame.copy()
    out["prediction"] = np.concatenate(preds) if preds else np.zeros(0)
    out["spread"] = np.concatenate(spreads) if spreads else np.zeros(0)
    return out


def score_all_triplets(scorer: TripletScorer, genes: Sequence[str], threshold: float | None = STRONG_THRESHOLD,
                       keep: str = "below", chunk_size: int = 200_000, progress: bool = True) -> pd.DataFrame:
    """Score all C(n, 3) triplets among ``genes``; keep those beyond ``threshold``.

    ``keep="below"`` keeps prediction <= threshold (strong negative), ``"above"`` >= threshold;
    ``threshold=None`` keeps everything (then the table has C(n, 3) rows: mind the size).
    Memory: one chunk of ``chunk_size`` triplets plus the rows kept. Triplets are listed with
    genes in the order of ``genes`` (itertools.combinations order).
    """
    if keep not in ("below", "above"):
        raise ValueError(f"keep must be 'below' or 'above', got {keep!r}")
    place = _place(getattr(genes, "attrs", {}))
    given = list(map(str, genes))
    genes = list(dict.fromkeys(given))
    ids = to_indices(genes, gene_index(scorer.genes), "genes",
                     None if place is None else lambda k: place(given.index(genes[k])))
    n = len(ids)
    total = n_triplets(n)
    kept_idx, kept_pred, kept_spread = [], [], []
    bar = _progress(None, progress, f"scoring C({n},3) triplets", total)
    for local in iter_triplet_chunks(n, chunk_size):
        p, s = scorer.score(ids[local])
        p, s = np.asarray(p, dtype=np.float64), np.asarray(s, dtype=np.float64)
        if threshold is None:
            sel = slice(None)
        else:
            sel = p <= threshold if keep == "below" else p >= threshold
        kept_idx.append(local[sel].astype(np.int32 if n < 2**31 else np.int64))
        kept_pred.append(p[sel])
        kept_spread.append(s[sel])
        if bar is not None:
            bar.update(len(local))
    if bar is not None:
        bar.close()
    local = np.concatenate(kept_idx) if kept_idx else np.zeros((0, 3), dtype=np.int64)
    names = np.asarray(genes, dtype=object)
    out = pd.DataFrame({"gene1": names[local[:, 0]], "gene2": names[local[:, 1]], "gene3": names[local[:, 2]],
                        "prediction": np.concatenate(kept_pred) if kept_pred else np.zeros(0),
                        "spread": np.concatenate(kept_spread) if kept_spread else np.zeros(0)})
    out.attrs.update({"n_scored": total, "threshold": threshold, "keep": keep})
    return out


def write_predictions(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """Atomic Parquet (``.parquet``) or TSV (``.tsv``) with gene names, prediction and spread."""
    missing = [c for c in OUTPUT_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"prediction table lacks column(s) {missing}")
    atomic_write_table(table.reset_index(drop=True), path)


class GeneList(list):
    """A gene list read from a file; ``attrs`` (``path``, ``lines``) name where each name stands."""

    def __init__(self, names=(), attrs: dict | None = None):
        super().__init__(names)
        self.attrs = dict(attrs or {})


def _place(attrs: dict):
    """``k -> "file:line"`` (or ``"file: row k"`` for Parquet) of the k-th name a reader read, or ``None``."""
    path, lines = attrs.get("path"), attrs.get("lines")
    if path is None:
        return None
    if lines is None:
        return lambda k: f"{path}: row {k}"
    return lambda k: f"{path}:{lines[k]}"


def _name_fields(text: str) -> list[str]:
    """The fields of one line of a gene or triplet list: '#' comments dropped, split at tabs, commas
    or spaces, CSV quotes removed."""
    from dango_nb.data.textio import unquote

    return [unquote(f) for f in text.split("#", 1)[0].replace(",", "\t").split()]


def _gene_name(name: str, path: str, lineno: int) -> str:
    """The canonical ORF name; one holding an export artefact (quote, BOM, ...) is refused."""
    from dango_nb.data.textio import artefact_in, orf_name
    from dango_nb.errors import DataFormatError

    bad = artefact_in(name)
    if bad is not None:
        raise DataFormatError(f"gene name {name!r} holds {bad!r}, which no gene name does", path=path, line=lineno)
    return orf_name(name)


def _ends_in_orf(text: str) -> bool:
    """A last line without newline is whole when it ends in a complete ORF name (else: cut)."""
    from dango_nb.data.textio import SYSTEMATIC_ORF

    fields = _name_fields(text)
    return bool(fields) and SYSTEMATIC_ORF.match(fields[-1]) is not None


def read_gene_list(path: str | os.PathLike) -> GeneList:
    """One gene name per line (first whitespace-separated field; '#' comments and blanks skipped).

    A ``.tsv``/``.csv`` file with a ``gene`` column header is read by that column, a ``.parquet``
    file by its ``gene`` column (one that is not Parquet is a ``DataFormatError``). Read the way the
    data loaders read (:func:`dango_nb.data.textio.read_lines`: ``.gz``, BOM, CRLF, CSV quotes, a
    non-UTF-8 or whitespace-only line or a cut last line named); names are upper-cased ORF names
    (``orf_name``). ``attrs`` names the file and each name's line.
    """
    from dango_nb.data.textio import read_lines
    from dango_nb.errors import DataFormatError

    path = os.fspath(path)
    if path.endswith(".parquet"):
        genes = GeneList(_read_parquet_names(path, ("gene",))["gene"])
        if not genes:
            raise DataFormatError("no gene names found", path=path)
        genes.attrs = {"path": path, "lines": None}
        return genes
    genes = GeneList()
    lines: list[int] = []
    header_col = None
    for lineno, text in read_lines(path, complete_last=_ends_in_orf):
        fields = _name_fields(text)
        if not fields:
            continue
        if header_col is None and not genes and "gene" in [f.lower() for f in fields]:
            header_col = [f.lower() for f in fields].index("gene")
            continue
        col = header_col or 0
        if col >= len(fields):
            raise DataFormatError(f"expected a gene name in field {col + 1}", path=path, line=lineno, column="gene")
        genes.append(_gene_name(fields[col], path, lineno))
        lines.append(lineno)
    if not genes:
        raise DataFormatError("no gene names found (one per line expected)", path=path)
    genes.attrs = {"path": path, "lines": lines}
    return genes


def _read_parquet_names(path: str, columns: tuple[str, ...]) -> pd.DataFrame:
    """The name ``columns`` of a Parquet file, as canonical ORF names; a file that is not Parquet, a
    missing column or a name holding an export artefact is a ``DataFormatError``."""
    from dango_nb.data.textio import artefact_in, orf_name
    from dango_nb.errors import DataFormatError

    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        why = " ".join(str(err).split())
        raise DataFormatError(f"not a readable Parquet file ({type(err).__name__}: {why})", path=path) from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataFormatError(f"missing column(s) {missing}; expected {', '.join(columns)}", path=path)
    frame = frame[list(columns)].astype(str)
    for c in frame.columns:
        for name in pd.unique(frame[c]):  # each distinct name once
            if artefact_in(name) is not None:
                k = int(np.flatnonzero(frame[c].to_numpy() == name)[0])
                raise DataFormatError(f"row {k}: gene name {name!r} holds {artefact_in(name)!r}, which no gene "
                                      "name does", path=path, column=c)
        frame[c] = frame[c].map(orf_name)
    return frame.reset_index(drop=True)


def read_triplet_list(path: str | os.PathLike) -> pd.DataFrame:
    """A table with ``gene1, gene2, gene3`` columns (TSV/CSV with header, or Parquet), or a
    headerless file of three whitespace/tab/comma-separated names per line.

    Text is read the way the data loaders read (:func:`dango_nb.data.textio.read_lines`: ``.gz``,
    BOM, CRLF, CSV quotes, a non-UTF-8 or whitespace-only line or a cut last line named); names are
    upper-cased ORF names (``orf_name``); ``attrs`` names the file and each row's line. A
    ``.parquet`` file that is not Parquet is a ``DataFormatError``.
    """
    from dango_nb.data.textio import read_lines
    from dango_nb.errors import DataFormatError

    path = os.fspath(path)
    if path.endswith(".parquet"):
        frame = _read_parquet_names(path, ("gene1", "gene2", "gene3"))
        frame.attrs = {"path": path, "lines": None}
        return frame
    rows, lines = [], []
    for lineno, text in read_lines(path, complete_last=_ends_in_orf):
        fields = _name_fields(text)
        if not fields:
            continue
        if not rows and [f.lower() for f in fields[:3]] == ["gene1", "gene2", "gene3"]:
            continue  # header
        if len(fields) < 3:
            raise DataFormatError(f"expected three gene names, found {len(fields)}", path=path, line=lineno)
        names = [_gene_name(f, path, lineno) for f in fields[:3]]
        if len(set(names)) < 3:
            raise DataFormatError(f"triplet {' '.join(names)} repeats a gene; a triplet needs three "
                                  "different genes", path=path, line=lineno)
        rows.append(names)
        lines.append(lineno)
    if not rows:
        raise DataFormatError("no triplets found (three gene names per line expected)", path=path)
    frame = pd.DataFrame(rows, columns=["gene1", "gene2", "gene3"])
    frame.attrs = {"path": path, "lines": np.asarray(lines, dtype=np.int64)}  # an array: cheap to copy
    return frame


def _progress(iterable, enabled: bool, desc: str, total: int):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, unit="triplet" if iterable is None else "batch")
