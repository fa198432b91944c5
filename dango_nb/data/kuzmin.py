"""Kuzmin et al. 2018 (Science, aao1729) Data S1: trigenic and digenic interaction scores.

Each row of Data S1 is one measured combined mutant: a query strain (a double mutant
``YAR002W+YML107C_tm2550``, or ``X+YDL227C_...`` where ``YDL227C`` is the HO control locus, i.e. a
digenic row) crossed to an array strain (``YAL048C_dma5203`` deletion or ``YBR001C_tsa100``
temperature-sensitive allele). The genes are read from the strain ids, which are taken as the
authority over the "Combined mutant type" column (disagreements are counted, not dropped).
"""

from __future__ import annotations

import gzip
import io
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
from scipy import stats

from dango_nb.data.textio import orf_name, read_bytes, unquote
from dango_nb.errors import DataFormatError
from dango_nb.fileio import atomic_write

log = logging.getLogger(__name__)

KUZMIN_COLUMNS = (
    "Query strain ID", "Query allele name", "Array strain ID", "Array allele name",
    "Combined mutant type", "Raw genetic interaction score (epsilon)",
    "Adjusted genetic interaction score (epsilon or tau)", "P-value",
    "Query single/double mutant fitness", "Array single mutant fitness",
    "Combined mutant fitness", "Combined mutant fitness standard deviation",
)
NUMERIC_COLUMNS = KUZMIN_COLUMNS[5:]
#: Other spellings of the last two columns (Kuzmin et al. 2020 tables, the authors' export script).
COLUMN_ALIASES = {
    "Double/triple mutant fitness": "Combined mutant fitness",
    "Double/triple mutant fitness standard deviation": "Combined mutant fitness standard deviation",
}
SCORE_COLUMN = "Adjusted genetic interaction score (epsilon or tau)"
PVALUE_COLUMN = "P-value"
#: The HO locus: a query ``X+YDL227C`` carries one real mutation, so its rows are digenic.
HO_LOCUS = "YDL227C"
ARRAY_TYPES = ("dma", "tsa")
_NA_VALUES = ["", "NA", "na", "NaN", "nan", "NAN", "N/A", "n/a", "null", "NULL", "None", "none"]

TRIGENIC_COLUMNS = ("gene1", "gene2", "gene3", "tau", "pvalue", "n_replicates", "tau_sd",
                    "query_strain", "array_strain", "query_allele", "array_allele", "array_type")
DIGENIC_COLUMNS = ("gene1", "gene2", "epsilon", "pvalue", "n_replicates", "epsilon_sd",
                   "query_strain", "array_strain", "query_allele", "array_allele", "array_type")


@dataclass
class KuzminScreen:
    """Parsed Data S1.

    ``trigenic``: one row per sorted ORF triplet (columns :data:`TRIGENIC_COLUMNS`); replicates are
    merged: mean ``tau``, Fisher-combined ``pvalue``, ``n_replicates``, ``tau_sd`` (NaN for one
    replicate); strain/allele fields are those of the first replicate in file order.
    ``digenic``: the same for sorted ORF pairs with ``epsilon``.
    ``dropped``: reason -> number of file rows left out. ``trigenic_rows``/``digenic_rows``: the kept
    rows before merging, with their file ``line``, for replicate analyses.
    ``type_disagreements``: rows whose "Combined mutant type" disagrees with the strain ids.
    ``missing_pvalue``: kept rows without a p-value.
    """

    trigenic: pd.DataFrame
    digenic: pd.DataFrame
    dropped: dict[str, int] = field(default_factory=dict)
    trigenic_rows: pd.DataFrame | None = None
    digenic_rows: pd.DataFrame | None = None
    type_disagreements: int = 0
    missing_pvalue: int = 0
    source: str | None = None


def _decode(data: bytes, path: Path) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        # only allele names can hold non-ASCII text (e.g. "nup2Δ"); ids and scores are ASCII
        line = data[: exc.start].count(b"\n") + 1
        log.warning("%s:%d: not UTF-8 (%s); read as Latin-1, allele names may be garbled", path, line, exc.reason)
        return data.decode("latin-1")


def _parse_fast(body: bytes, header: list[str]):
    """pyarrow parse of the data rows; ``None`` when anything is off (the slow path then finds it).

    Empty lines are not ignored here, so row ``k`` is line ``k + 2``.
    """
    text_cols = [c for c in KUZMIN_COLUMNS if c not in NUMERIC_COLUMNS]
    types = {**{c: pa.string() for c in text_cols}, **{c: pa.float64() for c in NUMERIC_COLUMNS}}
    try:
        table = pacsv.read_csv(
            io.BytesIO(body),
            read_options=pacsv.ReadOptions(column_names=header, block_size=1 << 24),
            parse_options=pacsv.ParseOptions(delimiter="\t", quote_char='"', ignore_empty_lines=False),
            convert_options=pacsv.ConvertOptions(column_types=types, include_columns=list(KUZMIN_COLUMNS),
                                                 null_values=_NA_VALUES, strings_can_be_null=False),
        )
    except (pa.ArrowException, ValueError):
        return None
    text = {c: table[c].to_numpy(zero_copy_only=False).astype(object) for c in text_cols}
    num = {c: table[c].to_numpy(zero_copy_only=False).astype(np.float64) for c in NUMERIC_COLUMNS}
    line = np.arange(2, table.num_rows + 2, dtype=np.int64)
    # an empty line comes back as a row of empty fields: not a row of the screen
    blank = np.logical_and.reduce([text[c] == "" for c in text_cols] + [np.isnan(num[c]) for c in NUMERIC_COLUMNS])
    if blank.any():
        text = {c: v[~blank] for c, v in text.items()}
        num = {c: v[~blank] for c, v in num.items()}
        line = line[~blank]
    return text, num, line


def _to_float(v: str) -> float:
    try:
        return float(v)
    except ValueError:
        return math.nan if v in _NA_VALUES else None


def _parse_slow(text: str, header: list[str], path: Path):
    """Line-by-line parse that names the first bad line and column (fields may be CSV-quoted)."""
    lines = text.split("\n")
    nf = len(header)
    records, linenos = [], []
    for k, raw in enumerate(lines[1:], start=2):
        raw = raw.rstrip("\r")
        if not raw.strip():
            continue
        parts = [unquote(f) for f in raw.split("\t")]
        if len(parts) != nf:
            raise DataFormatError(f"expected {nf} tab-separated fields, found {len(parts)}", path, line=k)
        records.append(parts)
        linenos.append(k)
    df = pd.DataFrame(records, columns=header, dtype=object) if records else pd.DataFrame(columns=header, dtype=object)
    line = np.asarray(linenos, dtype=np.int64)
    num = {}
    for c in NUMERIC_COLUMNS:
        # float() like the fast path: "inf", "Infinity" and "1e400" are numbers (infinite), not errors
        val = _per_unique(df[c].str.strip().to_numpy(dtype=object), lambda v: (_to_float(v),))[0]
        bad = np.array([v is None for v in val], dtype=bool)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise DataFormatError(f"expected a number, found {df[c].iloc[k]!r}", path, line=int(line[k]), column=c)
        num[c] = val.astype(np.float64)
    text_cols = {c: df[c].to_numpy(dtype=object) for c in KUZMIN_COLUMNS if c not in NUMERIC_COLUMNS}
    return text_cols, num, line


def _per_unique(values: np.ndarray, fn) -> list[np.ndarray]:
    """Apply ``fn(str) -> tuple`` to each distinct value only; returns one object array per tuple slot."""
    codes, uniques = pd.factorize(values)
    parsed = [fn(u) for u in uniques]
    width = len(fn(""))
    return [np.array([p[k] for p in parsed] + [None], dtype=object)[codes] for k in range(width)]


# gene names hold no quote, BOM or space (an unparsed export artefact makes the strain unparseable)
_NAME = r"[^+_\s\"'\ufeff]+"
_QUERY = re.compile(rf"^({_NAME})(?:\+({_NAME}))?_(\S+)$")
_ARRAY = re.compile(rf"^({_NAME})_([A-Za-z]+)\S*$")


def _parse_query(s: str):
    m = _QUERY.match(s.strip())
    return (orf_name(m.group(1)), orf_name(m.group(2) or "")) if m else (None, None)


def _parse_array(s: str):
    m = _ARRAY.match(s.strip())
    return (orf_name(m.group(1)), m.group(2).lower()) if m else (None, None)


def _fisher(logp_sum: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Fisher's method, vectorised: ``chi2.sf(-2 * sum(log p), 2k)``; NaN where ``k == 0``."""
    with np.errstate(invalid="ignore"):
        out = stats.chi2.sf(-2.0 * logp_sum, 2 * np.maximum(k, 1))
    return np.where(k > 0, out, np.nan)


def _merge(rows: pd.DataFrame, genes: list[str], score: str) -> pd.DataFrame:
    if rows.empty:
        cols = [*genes, score, "pvalue", "n_replicates", f"{score}_sd", "query_strain", "array_strain",
                "query_allele", "array_allele", "array_type"]
        return pd.DataFrame({c: pd.Series(dtype=rows[c].dtype if c in rows else "float64") for c in cols})
    p = rows["pvalue"].to_numpy(np.float64)
    with np.errstate(divide="ignore"):
        logp = np.where(np.isnan(p), 0.0, np.log(p))
    tmp = rows.assign(_logp=logp, _hasp=(~np.isnan(p)).astype(np.int64))
    g = tmp.groupby(genes, sort=True, observed=True)
    first = g[["query_strain", "array_strain", "query_allele", "array_allele", "array_type"]].first()
    out = pd.DataFrame({
        score: g[score].mean(),
        "pvalue": _fisher(g["_logp"].sum().to_numpy(), g["_hasp"].sum().to_numpy()),
        "n_replicates": g.size().astype(np.int64),
        f"{score}_sd": g[score].std(ddof=1),
    })
    out = out.join(first).reset_index()
    return out


def read_kuzmin_s1(path: str | os.PathLike) -> KuzminScreen:
    """Read Kuzmin 2018 Data S1 (tab-separated, the 12 :data:`KUZMIN_COLUMNS`; plain or ``.gz``).

    Rows are classified by their strain ids (query genes other than the HO locus ``YDL227C`` plus the
    array gene: 3 distinct ORFs -> trigenic, 2 -> digenic). Rows are dropped, and counted in
    ``dropped``, for: ``unparseable_strain``, ``unknown_array_type`` (neither ``dma`` nor ``tsa``),
    ``repeated_gene`` (the same ORF twice), ``nan_tau`` / ``nan_epsilon`` (no score),
    ``non_finite_tau`` / ``non_finite_epsilon`` (``inf``, ``Infinity``, ``1e400``, or beyond float32's
    range like ``1e300``). ORF names are upper-cased; CSV-quoted fields, a BOM and CRLF line ends are
    read as spreadsheets write them; a file whose last line has no final newline was cut (error).
    Replicates of a
    triplet (or pair) are merged: mean score and a p-value combined with Fisher's method (the same
    as ``scipy.stats.combine_pvalues(method="fisher")``, computed vectorised over groups; missing
    p-values are left out of the combination). Malformed files (missing column, wrong field count,
    non-numeric values, p-value outside [0, 1], nothing trigenic left) raise ``DataFormatError``
    naming the file, line and column.
    """
    path = Path(path)
    data = read_bytes(path)
    nl = data.find(b"\n")
    first = _decode(data if nl < 0 else data[:nl], path).rstrip("\r")
    if not first.strip():
        raise DataFormatError("empty file; expected a header with the 12 Data S1 columns", path, line=1)
    header = [h.strip().strip('"') for h in first.split("\t")]
    header = [COLUMN_ALIASES.get(h, h) if COLUMN_ALIASES.get(h) not in header else h for h in header]
    for c in KUZMIN_COLUMNS:
        if c not in header:
            raise DataFormatError(f"missing column; found columns {header}", path, line=1, column=c)
    if len(set(header)) != len(header):
        raise DataFormatError(f"repeated column name in header {header}", path, line=1)
    body = b"" if nl < 0 else data[nl + 1:]
    if not body.strip():
        raise DataFormatError("no data rows after the header line; expected one row per measured strain", path)
    parsed = None
    try:
        body.decode("utf-8")
        utf8 = True
    except UnicodeDecodeError:
        utf8 = False
    if utf8:
        parsed = _parse_fast(body, header)
    if parsed is None:
        parsed = _parse_slow(_decode(data, path), header, path)
    text, num, line = parsed
    pval = num[PVALUE_COLUMN]
    badp = ~np.isnan(pval) & ((pval < 0) | (pval > 1))
    if badp.any():
        k = int(np.flatnonzero(badp)[0])
        raise DataFormatError(f"p-value {pval[k]} outside [0, 1]", path, line=int(line[k]), column=PVALUE_COLUMN)

    q1, q2 = _per_unique(text["Query strain ID"], _parse_query)
    ag, array_type = _per_unique(text["Array strain ID"], _parse_array)
    unparseable = pd.isna(q1) | pd.isna(ag)
    q1 = np.where(unparseable, "", q1).astype(object)
    q2 = np.where(unparseable, "", q2).astype(object)
    ag = np.where(unparseable, "", ag).astype(object)
    unknown_type = ~unparseable & ~np.isin(array_type.astype(str), ARRAY_TYPES)
    # the genes of a row: query genes other than HO, then the array gene
    q1_real = (q1 != HO_LOCUS) & (q1 != "")
    q2_real = (q2 != HO_LOCUS) & (q2 != "")
    n_genes = q1_real.astype(int) + q2_real.astype(int) + 1
    repeated = (q1_real & q2_real & (q1 == q2)) | (q1_real & (q1 == ag)) | (q2_real & (q2 == ag))
    bad_count = ~unparseable & ~unknown_type & ~repeated & (n_genes < 2)
    trig = n_genes == 3
    score = num[SCORE_COLUMN]
    # infinite, or too large for the float32 the model trains on (1e300 would become inf there)
    non_finite = np.isinf(score) | (np.abs(np.nan_to_num(score)) > np.finfo(np.float32).max)

    reasons = np.full(len(line), "", dtype=object)
    for mask, why in ((unparseable, "unparseable_strain"), (bad_count, "unparseable_strain"),
                      (unknown_type, "unknown_array_type"), (repeated, "repeated_gene"),
                      (trig & np.isnan(score), "nan_tau"), (~trig & np.isnan(score), "nan_epsilon"),
                      (trig & non_finite, "non_finite_tau"), (~trig & non_finite, "non_finite_epsilon")):
        reasons[(reasons == "") & mask] = why
    keep = reasons == ""
    dropped = {str(r): int(c) for r, c in zip(*np.unique(reasons[~keep].astype(str), return_counts=True))}

    declared_tri, declared_di = (a.astype(bool) for a in _per_unique(
        text["Combined mutant type"], lambda v: (v.strip().lower().startswith("tri"),
                                                 v.strip().lower().startswith("di"))))
    disagree = keep & ((trig & ~declared_tri) | (~trig & ~declared_di))
    n_disagree = int(disagree.sum())

    strip = lambda v: (v.strip(),)
    base = pd.DataFrame({
        "query_strain": _per_unique(text["Query strain ID"], strip)[0],
        "array_strain": _per_unique(text["Array strain ID"], strip)[0],
        "query_allele": _per_unique(text["Query allele name"], strip)[0],
        "array_allele": _per_unique(text["Array allele name"], strip)[0],
        "array_type": array_type, "line": line,
    })
    tmask = keep & trig
    tg = np.sort(np.stack([q1[tmask], q2[tmask], ag[tmask]], axis=1).astype(str), axis=1)
    trows = pd.DataFrame({"gene1": tg[:, 0], "gene2": tg[:, 1], "gene3": tg[:, 2],
                          "tau": score[tmask], "pvalue": pval[tmask],
                          "raw_score": num["Raw genetic interaction score (epsilon)"][tmask]})
    trows = pd.concat([trows, base[tmask].reset_index(drop=True)], axis=1)
    dmask = keep & ~trig
    other = np.where(q1_real[dmask], q1[dmask], q2[dmask])
    dg = np.sort(np.stack([other, ag[dmask]], axis=1).astype(str), axis=1)
    drows = pd.DataFrame({"gene1": dg[:, 0], "gene2": dg[:, 1], "epsilon": score[dmask], "pvalue": pval[dmask],
                          "raw_score": num["Raw genetic interaction score (epsilon)"][dmask]})
    drows = pd.concat([drows, base[dmask].reset_index(drop=True)], axis=1)

    if trows.empty:
        raise DataFormatError(f"no trigenic rows left after filtering ({len(line)} data rows; dropped {dropped})",
                              path)
    trigenic = _merge(trows, ["gene1", "gene2", "gene3"], "tau")[list(TRIGENIC_COLUMNS)]
    digenic = _merge(drows, ["gene1", "gene2"], "epsilon")[list(DIGENIC_COLUMNS)]
    n_missing_p = int(np.isnan(pval[keep]).sum())
    if dropped:
        log.warning("%s: dropped %d of %d rows: %s", path, sum(dropped.values()), len(line), dropped)
    if n_disagree:
        log.warning("%s: %d rows whose 'Combined mutant type' disagrees with their strain ids "
                    "(strain ids used)", path, n_disagree)
    if n_missing_p:
        log.warning("%s: %d kept rows have no p-value", path, n_missing_p)
    return KuzminScreen(trigenic=trigenic, digenic=digenic, dropped=dropped, trigenic_rows=trows,
                        digenic_rows=drows, type_disagreements=n_disagree, missing_pvalue=n_missing_p,
                        source=str(path))


def write_kuzmin_s1(path: str | os.PathLike, rows: pd.DataFrame) -> None:
    """Write ``rows`` (a frame holding :data:`KUZMIN_COLUMNS`) as Data S1: tab-separated, header,
    missing numbers as ``NaN`` (the reader also takes empty fields); gzip when ``path`` ends ``.gz``; atomic."""
    path = Path(path)
    missing = [c for c in KUZMIN_COLUMNS if c not in rows.columns]
    if missing:
        raise ValueError(f"rows lack Data S1 column(s) {missing}")
    buf = io.StringIO()
    rows.loc[:, list(KUZMIN_COLUMNS)].to_csv(buf, sep="\t", index=False, na_rep="NaN", lineterminator="\n")
    data = buf.getvalue().encode("utf-8")
    with atomic_write(path, "wb") as fh:
        if path.suffix == ".gz":
            with gzip.GzipFile(fileobj=fh, mode="wb", compresslevel=6, mtime=0) as gz:
                gz.write(data)
        else:
            fh.write(data)
