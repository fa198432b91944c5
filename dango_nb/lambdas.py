"""Lambda determination: how many zeros of the earlier STRING release became edges in the later one.

For each channel, over the genes that have an edge in that channel in both releases (matched by gene
name) and their unordered pairs::

    pct_decreased_zeros = 100 * |pairs that are edges later but not earlier| / |non-edges earlier|
    lambda = low (0.1) if pct > threshold_pct (1%, strict) else high (1.0)

A channel whose zeros often turn into edges has unreliable zeros, so the reconstruction loss weighs
them down. Pairs are handled as int64 codes ``i * M + j`` with NumPy set operations; nothing dense.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from dango_nb.data.string_db import StringNetworks

__all__ = ["LAMBDA_COLUMNS", "MAX_LAMBDA", "LambdaResult", "check_lambdas", "check_covers", "determine_lambdas", "decreased_zeros"]

#: Largest lambda accepted: the weighted squared errors of the zero entries stay far inside float32.
MAX_LAMBDA = 1e6

LAMBDA_COLUMNS = ["channel", "genes_in_both", "n_pairs", "non_edges_earlier", "new_edges",
                  "pct_decreased_zeros", "lambda"]


def check_lambdas(lambdas: Mapping[Any, Any], where: str = "") -> dict[str, float]:
    """``lambdas`` as ``{key: float}`` or ``ValueError`` ``"[<where>: ]key 'lambdas.<key>': ..."``.

    A key is a STRING channel (``coexpression``) or an edge type name (``string9_1_coexpression``);
    a value is a number in (0, :data:`MAX_LAMBDA`]. Every source of lambdas (parameter files, lambda
    files, the training loop) goes through here, so a misspelt channel or an infinite weight is
    named before any work instead of surfacing as a missing lambda or a NaN loss later."""
    from dango_nb.data.graph import channel_of
    from dango_nb.data.string_db import CHANNELS, EXTRA_CHANNELS
    from dango_nb.errors import shown

    prefix = f"{where}: " if where else ""
    out = {}
    for k, v in lambdas.items():
        name = k if isinstance(k, str) else shown(k)
        try:
            channel_of(name)
        except ValueError:
            raise ValueError(f"{prefix}key 'lambdas.{name[:60]}': not a STRING channel; expected one of "
                             f"{', '.join(CHANNELS + EXTRA_CHANNELS)} (or an edge type name such as "
                             "'string9_1_coexpression')") from None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= MAX_LAMBDA:  # NaN fails too
            raise ValueError(f"{prefix}key 'lambdas.{name}': expected a number > 0 and <= {MAX_LAMBDA:g}, "
                             f"got {shown(v)}")
        out[name] = float(v)
    return out


def check_covers(lambdas: Mapping[str, Any], edge_types, where: str = "") -> None:
    """``ValueError`` ``"[<where>: ]key 'lambdas': no lambda for channel(s) ..."`` unless every channel
    of ``edge_types`` has a lambda. The channels are only known once the data load, so a run checks
    this before it writes anything rather than failing inside the loss."""
    from dango_nb.data.graph import channel_of

    known = {channel_of(k) for k in lambdas}
    missing = [ch for ch in dict.fromkeys(channel_of(et) for et in edge_types) if ch not in known]
    if missing:
        prefix = f"{where}: " if where else ""
        raise ValueError(f"{prefix}key 'lambdas': no lambda for channel(s) {', '.join(missing)} of the data; "
                         f"lambdas are given for: {', '.join(sorted(known)) or 'none'}")


@dataclass
class LambdaResult:
    """``table`` has :data:`LAMBDA_COLUMNS` (one row per channel); ``lambdas`` maps channel -> lambda
    (what :class:`~dango_nb.losses.DangoLoss` takes)."""

    table: pd.DataFrame
    lambdas: dict[str, float]


def _present_genes(genes: list[str], edges: pd.DataFrame) -> np.ndarray:
    idx = np.unique(np.concatenate([edges["i"].to_numpy(np.int64), edges["j"].to_numpy(np.int64)]))
    return np.asarray(genes, dtype=object)[idx]


def _pair_codes(edges: pd.DataFrame, genes: list[str], common: np.ndarray) -> np.ndarray:
    """Unique codes ``a * M + b`` (a < b, positions in the sorted ``common`` names) of edges between
    common genes."""
    names = np.asarray(genes, dtype=object)
    pos = pd.Series(np.arange(len(common), dtype=np.int64), index=pd.Index(common))
    a = pos.reindex(names[edges["i"].to_numpy(np.int64)]).to_numpy()
    b = pos.reindex(names[edges["j"].to_numpy(np.int64)]).to_numpy()
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep].astype(np.int64), b[keep].astype(np.int64)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    lo, hi = lo[lo != hi], hi[lo != hi]
    return np.unique(lo * len(common) + hi)


def decreased_zeros(earlier_genes: list[str], earlier_edges: pd.DataFrame, later_genes: list[str],
                    later_edges: pd.DataFrame) -> dict[str, float]:
    """Counts for one channel: ``genes_in_both``, ``n_pairs``, ``non_edges_earlier``, ``new_edges``,
    ``pct_decreased_zeros`` (NaN when the earlier release has no non-edges among those genes)."""
    common = np.array(sorted(set(_present_genes(earlier_genes, earlier_edges))
                             & set(_present_genes(later_genes, later_edges))), dtype=object)
    m = len(common)
    n_pairs = m * (m - 1) // 2
    if m < 2:
        return {"genes_in_both": m, "n_pairs": n_pairs, "non_edges_earlier": n_pairs,
                "new_edges": 0, "pct_decreased_zeros": float("nan")}
    e_codes = _pair_codes(earlier_edges, earlier_genes, common)
    l_codes = _pair_codes(later_edges, later_genes, common)
    non_edges = n_pairs - len(e_codes)
    new = int(len(np.setdiff1d(l_codes, e_codes, assume_unique=True)))
    pct = 100.0 * new / non_edges if non_edges > 0 else float("nan")
    return {"genes_in_both": m, "n_pairs": n_pairs, "non_edges_earlier": non_edges,
            "new_edges": new, "pct_decreased_zeros": pct}


def determine_lambdas(earlier: "StringNetworks", later: "StringNetworks", threshold_pct: float = 1.0,
                      low: float = 0.1, high: float = 1.0) -> LambdaResult:
    """Lambda per channel from two STRING releases (see the module docstring).

    Channels are those of ``earlier`` (in its order); each must exist in ``later`` too. A channel with
    fewer than 2 shared genes or no earlier non-edges has ``pct`` NaN and gets ``high``.
    """
    missing = [ch for ch in earlier.channels if ch not in later.channels]
    if missing:
        raise KeyError(f"channel(s) {missing} of STRING {earlier.version} are missing from STRING "
                       f"{later.version} (it has {sorted(later.channels)})")
    rows = []
    for ch, e_edges in earlier.channels.items():
        r = decreased_zeros(list(earlier.genes), e_edges, list(later.genes), later.channels[ch])
        pct = r["pct_decreased_zeros"]
        r["lambda"] = float(low) if (pct == pct and pct > threshold_pct) else float(high)
        rows.append({"channel": ch, **r})
    table = pd.DataFrame(rows, columns=LAMBDA_COLUMNS)
    return LambdaResult(table, dict(zip(table["channel"], table["lambda"].astype(float))))
