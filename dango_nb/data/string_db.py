"""STRING networks: ``protein.links.detailed`` files and DANGO's released adjacency format.

Both formats end up as one :class:`StringNetworks`: a gene vocabulary and, per channel, an undirected
edge table ``i < j`` with ``weight = score / 1000`` in (0, 1].
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from dango_nb.data.textio import (
    SYSTEMATIC_ORF, artefact_in, cut_error, decode_line, orf_name, read_bytes, unquote,
    whitespace_line_error,
)
from dango_nb.errors import DataFormatError
from dango_nb.fileio import atomic_write

log = logging.getLogger(__name__)

#: DANGO's six channels, in STRING's column order and spelling (``cooccurence``).
CHANNELS = ("neighborhood", "fusion", "cooccurence", "coexpression", "experimental", "database")
#: Channels present in STRING files that DANGO does not use; readable on request.
EXTRA_CHANNELS = ("textmining",)
STRING_COLUMNS = ("protein1", "protein2", *CHANNELS, "textmining", "combined_score")
#: STRING's prior probability of a random pair interacting, used to combine channel scores.
STRING_PRIOR = 0.041

DANGO_GENES_FILE = "yeast_string_genes.txt"


def dango_adjacency_file(channel: str) -> str:
    return f"yeast_string_{channel}_adjacency.txt"


@dataclass
class StringNetworks:
    """A gene vocabulary and one undirected weighted edge table per channel.

    ``channels[c]`` has columns ``i`` (int64), ``j`` (int64), ``weight`` (float32) with ``i < j``,
    no duplicates, sorted by ``(i, j)``; ``i``/``j`` index ``genes``.
    ``missing_channels`` lists requested channels that the source did not have; ``conflicts`` counts,
    per channel, pairs whose two listed directions disagreed (the larger score is kept); ``dropped``
    counts rows left out by reason (e.g. ``"self_loop"``).
    """

    version: str
    genes: list[str]
    channels: dict[str, pd.DataFrame]
    source: str | None = None
    missing_channels: tuple[str, ...] = ()
    conflicts: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def num_genes(self) -> int:
        return len(self.genes)

    def num_edges(self) -> dict[str, int]:
        """Undirected edge count per channel."""
        return {c: len(df) for c, df in self.channels.items()}

    def summary(self) -> pd.DataFrame:
        """One row per channel: undirected edges, density, weight quantiles."""
        n = len(self.genes)
        rows = []
        for c, df in self.channels.items():
            w = df["weight"].to_numpy()
            rows.append({
                "channel": c, "edges": len(df),
                "density": len(df) / max(n * (n - 1) / 2, 1),
                "weight_median": float(np.median(w)) if len(w) else np.nan,
                "weight_max": float(w.max()) if len(w) else np.nan,
                "direction_conflicts": self.conflicts.get(c, 0),
            })
        return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------- helpers

def _check_channels(channels: Iterable[str] | None, default: Sequence[str] = CHANNELS) -> tuple[str, ...]:
    if channels is None:
        return tuple(default)
    channels = tuple(channels)
    unknown = [c for c in channels if c not in CHANNELS + EXTRA_CHANNELS]
    if unknown:
        raise ValueError(f"unknown STRING channel(s) {unknown}; known: {list(CHANNELS + EXTRA_CHANNELS)}")
    return channels


def _version_from_name(path: Path) -> str | None:
    m = re.search(r"\.v(\d+(?:\.\d+)?)\.", path.name)
    return m.group(1) if m else None


def _canonical(i: np.ndarray, j: np.ndarray, w: np.ndarray, n: int):
    """Undirected edges ``i < j`` sorted; duplicate pairs keep the max weight.

    Returns ``(i, j, w, n_conflicts, n_self_loops)`` where a conflict is a pair listed more than
    once with different weights.
    """
    self_loop = i == j
    n_self = int(self_loop.sum())
    if n_self:
        keep = ~self_loop
        i, j, w = i[keep], j[keep], w[keep]
    a = np.minimum(i, j).astype(np.int64)
    b = np.maximum(i, j).astype(np.int64)
    key = a * n + b
    order = np.argsort(key, kind="stable")
    key, w = key[order], w[order]
    if len(key) == 0:
        return a[:0], b[:0], w[:0], 0, n_self
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    wmax = np.maximum.reduceat(w, starts)
    wmin = np.minimum.reduceat(w, starts)
    ukey = key[starts]
    return ukey // n, ukey % n, wmax, int((wmax != wmin).sum()), n_self


def _edge_frame(i: np.ndarray, j: np.ndarray, w: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"i": i.astype(np.int64), "j": j.astype(np.int64), "weight": w.astype(np.float32)})


# ---------------------------------------------------------------------------- protein.links.detailed

def _lines(data: bytes, path: Path, start: int = 1):
    """``(line number, text)`` of the data lines, UTF-8 checked; empty lines are skipped (the fast
    readers skip them too), a line holding only whitespace is an error naming it."""
    for lineno, raw in enumerate(data.split(b"\n")[:-1], start=1):
        if lineno < start:
            continue
        text = decode_line(raw, path, lineno).rstrip("\r")
        if not text:
            continue
        if not text.strip():
            raise whitespace_line_error(path, lineno)
        yield lineno, text


def _read_header(data: bytes, path: Path) -> list[str]:
    nl = data.find(b"\n")
    first = decode_line(data[: nl if nl >= 0 else len(data)], path, 1).rstrip("\r")
    if not first.strip():
        raise DataFormatError("empty file; expected the header line '" + " ".join(STRING_COLUMNS) + "'",
                              path, line=1)
    return first.split(" ")


def _bad_protein_id(v: str, prefix: str) -> bool:
    return not v.startswith(prefix) or len(v) == len(prefix) or artefact_in(v) is not None


def _diagnose_string(data: bytes, path: Path, header: list[str], taxon: str, score_cols: Sequence[str]) -> None:
    """Slow line-by-line pass that raises a ``DataFormatError`` at the first bad line."""
    pos = {c: header.index(c) for c in ("protein1", "protein2", *score_cols)}
    prefix = taxon + "."
    for lineno, text in _lines(data, path, start=2):
        parts = text.split(" ")
        if len(parts) != len(header):
            raise DataFormatError(
                f"expected {len(header)} space-separated fields ({' '.join(header)}), found {len(parts)}",
                path, line=lineno)
        for c in ("protein1", "protein2"):
            v = parts[pos[c]]
            if _bad_protein_id(v, prefix):
                raise DataFormatError(f"expected a protein id '{prefix}<ORF>', found {v!r}",
                                      path, line=lineno, column=c)
        for c in score_cols:
            v = parts[pos[c]]
            try:
                s = int(v)
            except ValueError:
                raise DataFormatError(f"expected an integer score 0..1000, found {v!r}",
                                      path, line=lineno, column=c) from None
            if not 0 <= s <= 1000:
                raise DataFormatError(f"score {s} outside 0..1000", path, line=lineno, column=c)


def read_string_detailed(path: str | os.PathLike, version: str | None = None,
                         channels: Iterable[str] | None = None, taxon: str = "4932") -> StringNetworks:
    """Read a STRING ``protein.links.detailed`` file (v9.1, v11.0, v12.0; plain or ``.gz``).

    A pair is an edge of a channel when that channel's score is > 0; ``weight = score / 1000``.
    Pairs are usually listed in both directions; they are merged into ``i < j`` (the larger score
    wins when the two directions disagree; counted in ``conflicts``). The vocabulary is the sorted
    set of ORFs appearing in the file (ids ``<taxon>.<ORF>``, ORF names upper-cased). ``channels``
    defaults to :data:`CHANNELS`; ``"textmining"`` may be added. The file is read with
    :func:`dango_nb.data.textio.read_bytes` (BOM removed; a cut file is an error); a file without
    data rows, or without any edge in the requested channels, is an error.
    """
    path = Path(path)
    channels = _check_channels(channels)
    if version is None:
        version = _version_from_name(path)
        if version is None:
            raise DataFormatError("cannot tell the STRING version from the file name (expected "
                                  "'...protein.links.detailed.v<version>...'); pass version=", path)
    data = read_bytes(path)
    header = _read_header(data, path)
    for c in ("protein1", "protein2", *channels):
        if c not in header:
            raise DataFormatError(f"missing column; expected header '{' '.join(STRING_COLUMNS)}', "
                                  f"found '{' '.join(header)}'", path, line=1, column=c)
    if len(set(header)) != len(header):
        raise DataFormatError(f"repeated column name in header '{' '.join(header)}'", path, line=1)

    types = {"protein1": pa.string(), "protein2": pa.string(), **{c: pa.int64() for c in channels}}
    try:
        table = pacsv.read_csv(
            pa.BufferReader(data),
            read_options=pacsv.ReadOptions(column_names=header, skip_rows=1, block_size=1 << 24),
            parse_options=pacsv.ParseOptions(delimiter=" ", quote_char=False),
            convert_options=pacsv.ConvertOptions(column_types=types, include_columns=list(types),
                                                 strings_can_be_null=False, quoted_strings_can_be_null=False),
        )
        ok = True
    except (pa.ArrowInvalid, pa.ArrowException, OSError, EOFError, ValueError):
        ok = False
    if ok:
        for c in ("protein1", "protein2", *channels):
            if table[c].null_count:
                ok = False
            elif c in channels and table.num_rows:
                mm = pc.min_max(table[c]).as_py()
                ok = ok and mm["min"] >= 0 and mm["max"] <= 1000
    if not ok:
        _diagnose_string(data, path, header, taxon, channels)
        raise DataFormatError("could not parse the file, but no single bad line was found", path)
    if table.num_rows == 0:
        raise DataFormatError("no data rows after the header line; expected one line per protein pair "
                              f"('{' '.join(STRING_COLUMNS)}')", path)

    both = pa.chunked_array(table["protein1"].chunks + table["protein2"].chunks).combine_chunks()
    enc = pc.dictionary_encode(both)
    codes = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    ids = enc.dictionary.to_pylist()
    prefix = taxon + "."
    bad = [v for v in ids if _bad_protein_id(v, prefix)]
    if bad:
        _diagnose_string(data, path, header, taxon, channels)
        raise DataFormatError(f"expected protein ids '{prefix}<ORF>', found {bad[0]!r}", path)
    # ids differing only in case name one gene (merged below like the two directions of a pair)
    genes_u, inv = np.unique(np.array([orf_name(v[len(prefix):]) for v in ids], dtype=object),
                             return_inverse=True)
    codes = inv.reshape(-1)[codes]
    genes = [str(g) for g in genes_u]
    n_rows = table.num_rows
    p1, p2 = codes[:n_rows], codes[n_rows:]
    n = len(genes)

    out, conflicts, n_self_total = {}, {}, 0
    for c in channels:
        s = table[c].to_numpy()
        m = s > 0
        i, j, w, nconf, nself = _canonical(p1[m], p2[m], s[m], n)
        out[c] = _edge_frame(i, j, w / 1000.0)
        conflicts[c] = nconf
        n_self_total += nself
    if not any(len(df) for df in out.values()):
        raise DataFormatError(f"no edges: every score of channel(s) {list(channels)} is 0 in the "
                              f"{n_rows} data rows", path)
    if any(conflicts.values()):
        log.warning("%s: pairs whose two directions disagree (max score kept): %s", path,
                    {c: k for c, k in conflicts.items() if k})
    dropped = {"self_loop": n_self_total} if n_self_total else {}
    return StringNetworks(version=str(version), genes=genes, channels=out, source=str(path),
                          conflicts=conflicts, dropped=dropped)


def combined_score(scores: np.ndarray, prior: float = STRING_PRIOR) -> np.ndarray:
    """STRING-style combined score from per-channel integer scores ``(M, C)`` -> ``(M,)`` ints.

    Each channel's prior is removed, channels are combined as independent evidence and the prior is
    added back (STRING's published scheme; STRING's own files also fold in transferred evidence, so
    real combined scores differ slightly).
    """
    s = np.asarray(scores, dtype=np.float64) / 1000.0
    s = np.clip((s - prior) / (1.0 - prior), 0.0, 1.0)
    comb = 1.0 - np.prod(1.0 - s, axis=1)
    comb = comb + prior * (1.0 - comb)
    return np.rint(comb * 1000.0).astype(np.int64)


def _wide_scores(networks: StringNetworks, columns: Sequence[str]):
    """Union of all pairs ``i < j`` with one integer score column per channel (0 when absent)."""
    n = max(len(networks.genes), 1)
    keys = [df["i"].to_numpy(np.int64) * n + df["j"].to_numpy(np.int64)
            for c, df in networks.channels.items() if c in columns]
    allkeys = np.unique(np.concatenate(keys)) if keys else np.zeros(0, np.int64)
    scores = np.zeros((len(allkeys), len(columns)), dtype=np.int64)
    for k, c in enumerate(columns):
        df = networks.channels.get(c)
        if df is None or len(df) == 0:
            continue
        key = df["i"].to_numpy(np.int64) * n + df["j"].to_numpy(np.int64)
        # a weight that would round to 0 must stay an edge
        s = np.maximum(np.rint(df["weight"].to_numpy(np.float64) * 1000.0).astype(np.int64), 1)
        scores[np.searchsorted(allkeys, key), k] = s
    return allkeys // n, allkeys % n, scores


def write_string_detailed(path: str | os.PathLike, networks: StringNetworks, taxon: str = "4932") -> None:
    """Write ``networks`` as a STRING ``protein.links.detailed`` file (gzip when ``path`` ends .gz).

    Every pair is written in both directions with integer scores ``round(weight * 1000)``; channels
    missing from ``networks`` are written as 0; ``combined_score`` follows :func:`combined_score`.
    Genes without any edge cannot be represented in this format and are not written.
    """
    path = Path(path)
    score_cols = (*CHANNELS, "textmining")
    i, j, scores = _wide_scores(networks, score_cols)
    comb = combined_score(scores)
    src = np.concatenate([i, j])
    dst = np.concatenate([j, i])
    order = np.lexsort((dst, src))
    src, dst = src[order], dst[order]
    scores = np.concatenate([scores, scores])[order]
    comb = np.concatenate([comb, comb])[order]
    ids = np.array([f"{taxon}.{g}" for g in networks.genes], dtype=object)
    cols = {"protein1": pa.array(ids[src], pa.string()), "protein2": pa.array(ids[dst], pa.string())}
    for k, c in enumerate(score_cols):
        cols[c] = pa.array(scores[:, k])
    cols["combined_score"] = pa.array(comb)
    table = pa.table(cols)
    opts = pacsv.WriteOptions(include_header=False, delimiter=" ", quoting_style="none")
    with atomic_write(path, "wb") as fh:
        target = gzip.GzipFile(fileobj=fh, mode="wb", compresslevel=6, mtime=0) if path.suffix == ".gz" else fh
        try:
            target.write((" ".join(STRING_COLUMNS) + "\n").encode())
            pacsv.write_csv(table, target, write_options=opts)
        finally:
            if target is not fh:
                target.close()


# ------------------------------------------------------------------------------ DANGO release format

def _read_gene_list(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: gene list not found (expected one ORF name per line)")
    # DANGO's released gene list ends without a final newline; a cut shows in its last name instead
    data = read_bytes(path, final_newline=False)
    lines = data.split(b"\n")
    if not data.endswith(b"\n"):
        last = unquote(decode_line(lines[-1], path, len(lines)).strip())
        if last and not SYSTEMATIC_ORF.match(last):
            raise cut_error(data, path, f" and {last!r} is not a complete systematic ORF name")
    while lines and not lines[-1].strip():
        lines.pop()
    genes, seen = [], {}
    for k, raw in enumerate(lines, start=1):
        text = decode_line(raw, path, k)
        g = unquote(text.strip())
        if not g or len(text.split()) != 1 or artefact_in(g):
            raise DataFormatError(f"expected one gene name on the line, found {text!r}", path, line=k)
        g = orf_name(g)
        if g in seen:
            raise DataFormatError(f"gene {g!r} repeated (first on line {seen[g]})", path, line=k)
        seen[g] = k
        genes.append(g)
    if not genes:
        raise DataFormatError("empty gene list; expected one ORF name per line", path)
    return genes


def _diagnose_adjacency(data: bytes, path: Path, n: int) -> None:
    for lineno, text in _lines(data, path):
        parts = text.split("\t")
        if len(parts) != 3:
            raise DataFormatError(f"expected 3 tab-separated fields 'id1 id2 weight', found {len(parts)}",
                                  path, line=lineno)
        for col, v in zip(("id1", "id2"), parts[:2]):
            try:
                x = int(v)
            except ValueError:
                raise DataFormatError(f"expected a 1-based integer gene id, found {v!r}",
                                      path, line=lineno, column=col) from None
            if not 1 <= x <= n:
                raise DataFormatError(f"gene id {x} outside 1..{n} (the gene list has {n} lines)",
                                      path, line=lineno, column=col)
        try:
            w = float(parts[2])
        except ValueError:
            raise DataFormatError(f"expected a weight in (0, 1], found {parts[2]!r}",
                                  path, line=lineno, column="weight") from None
        if not 0.0 < w <= 1.0:
            raise DataFormatError(f"weight {w} outside (0, 1]", path, line=lineno, column="weight")
        if np.float32(w) == 0:
            raise DataFormatError(f"weight {w} rounds to 0 in float32, outside (0, 1]; weights are stored "
                                  "as float32", path, line=lineno, column="weight")


def _read_adjacency(path: Path, n: int):
    data = read_bytes(path)
    if not data.strip(b"\r\n"):
        raise DataFormatError("no edges: the file has no data lines (expected tab-separated 'id1 id2 weight')",
                              path)
    try:
        table = pacsv.read_csv(
            pa.BufferReader(data),
            read_options=pacsv.ReadOptions(column_names=["id1", "id2", "weight"], block_size=1 << 22),
            parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False),
            convert_options=pacsv.ConvertOptions(column_types={"id1": pa.int64(), "id2": pa.int64(),
                                                               "weight": pa.float64()}),
        )
        a = table["id1"].to_numpy()
        b = table["id2"].to_numpy()
        w = table["weight"].to_numpy()
        ok = (table["id1"].null_count == 0 and table["id2"].null_count == 0 and table["weight"].null_count == 0)
        if ok and len(a):
            ok = (a.min() >= 1 and b.min() >= 1 and a.max() <= n and b.max() <= n
                  and bool(np.all((w > 0) & (w <= 1) & (w.astype(np.float32) > 0))))
    except (pa.ArrowException, OSError, ValueError):
        ok = False
    if not ok:
        _diagnose_adjacency(data, path, n)
        raise DataFormatError("could not parse the file, but no single bad line was found", path)
    return a - 1, b - 1, w


def read_dango_release(folder: str | os.PathLike, version: str = "9.1",
                       channels: Iterable[str] | None = None) -> StringNetworks:
    """Read DANGO's released networks: ``yeast_string_genes.txt`` + ``yeast_string_<channel>_adjacency.txt``.

    The gene list's line ``k`` is gene id ``k`` (1-based); adjacency files are tab-separated
    ``id1 id2 weight`` listing both directions. The vocabulary keeps the gene list's order.
    With ``channels=None`` every channel of :data:`CHANNELS` whose file exists is read and the others
    are named in ``missing_channels`` (and a ``UserWarning``); an explicitly requested channel whose
    file is missing is an error.
    """
    folder = Path(folder)
    explicit = channels is not None
    channels = _check_channels(channels)
    genes = _read_gene_list(folder / DANGO_GENES_FILE)
    n = len(genes)
    out, conflicts, missing, n_self_total = {}, {}, [], 0
    for c in channels:
        p = folder / dango_adjacency_file(c)
        if not p.is_file():
            if explicit:
                raise FileNotFoundError(f"{p}: adjacency file for requested channel {c!r} not found")
            missing.append(c)
            continue
        a, b, w = _read_adjacency(p, n)
        i, j, wm, nconf, nself = _canonical(a, b, w, n)
        out[c] = _edge_frame(i, j, wm)
        conflicts[c] = nconf
        n_self_total += nself
    if not out:
        raise DataFormatError(f"no adjacency files found (expected e.g. {dango_adjacency_file(channels[0])})",
                              folder)
    if missing:
        warnings.warn(f"{folder}: no adjacency file for channel(s) {missing}; loaded {list(out)}",
                      UserWarning, stacklevel=2)
    if any(conflicts.values()):
        log.warning("%s: pairs whose two directions disagree (max weight kept): %s", folder,
                    {c: k for c, k in conflicts.items() if k})
    return StringNetworks(version=str(version), genes=genes, channels=out, source=str(folder),
                          missing_channels=tuple(missing), conflicts=conflicts,
                          dropped={"self_loop": n_self_total} if n_self_total else {})


def write_dango_release(folder: str | os.PathLike, networks: StringNetworks) -> None:
    """Write ``networks`` in DANGO's released format (1-based ids, both directions, 6 decimals)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_write(folder / DANGO_GENES_FILE) as fh:
        fh.write("".join(g + "\n" for g in networks.genes))
    for c, df in networks.channels.items():
        i = df["i"].to_numpy(np.int64)
        j = df["j"].to_numpy(np.int64)
        w = df["weight"].to_numpy(np.float64)
        src, dst, ww = np.concatenate([i, j]), np.concatenate([j, i]), np.concatenate([w, w])
        order = np.lexsort((dst, src))
        frame = pd.DataFrame({"a": src[order] + 1, "b": dst[order] + 1, "w": ww[order]})
        with atomic_write(folder / dango_adjacency_file(c)) as fh:
            frame.to_csv(fh, sep="\t", header=False, index=False, float_format="%.6f", lineterminator="\n")
