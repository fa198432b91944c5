"""STRING networks -> the PyTorch Geometric ``cell_graph`` (one ``HeteroData`` edge type per channel)."""

from __future__ import annotations

import logging
import re
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch_geometric.data import HeteroData

from dango_nb.data.string_db import CHANNELS, EXTRA_CHANNELS, StringNetworks

log = logging.getLogger(__name__)

_EDGE_NAME = re.compile(r"^string(\d+)(?:_(\d+))?_([a-z]+)$")


def edge_type_name(version: str, channel: str) -> str:
    """``("9.1", "coexpression") -> "string9_1_coexpression"`` (STRING's channel spelling kept)."""
    version = str(version)
    if not re.fullmatch(r"\d+(?:\.\d+)?", version):
        raise ValueError(f"STRING version {version!r} is not of the form '9.1'")
    if channel not in CHANNELS + EXTRA_CHANNELS:
        raise ValueError(f"unknown STRING channel {channel!r}; known: {list(CHANNELS + EXTRA_CHANNELS)}")
    return f"string{version.replace('.', '_')}_{channel}"


def channel_of(edge_type_or_name) -> str:
    """Channel of an edge type: ``("gene", "string11_0_coexpression", "gene")``,
    ``"string9_1_coexpression"`` or plain ``"coexpression"`` -> ``"coexpression"``."""
    name = edge_type_or_name[1] if isinstance(edge_type_or_name, tuple) else edge_type_or_name
    if name in CHANNELS + EXTRA_CHANNELS:
        return name
    m = _EDGE_NAME.match(str(name))
    if not m or m.group(3) not in CHANNELS + EXTRA_CHANNELS:
        raise ValueError(f"{edge_type_or_name!r} is not a STRING edge type like 'string9_1_coexpression'")
    return m.group(3)


def version_of(edge_type_or_name) -> str:
    """``"string9_1_coexpression" -> "9.1"``."""
    name = edge_type_or_name[1] if isinstance(edge_type_or_name, tuple) else edge_type_or_name
    m = _EDGE_NAME.match(str(name))
    if not m:
        raise ValueError(f"{edge_type_or_name!r} is not a STRING edge type like 'string9_1_coexpression'")
    return m.group(1) + (f".{m.group(2)}" if m.group(2) else "")


def build_cell_graph(networks: StringNetworks, genes: Sequence[str] | None = None) -> HeteroData:
    """``HeteroData`` over ``genes`` (default ``networks.genes``) with one edge type per channel.

    ``data["gene"].num_nodes`` / ``.node_ids`` (list[str]); for each channel
    ``data["gene", edge_type_name(version, channel), "gene"]`` holds ``edge_index`` (2, 2E) long with
    both directions, sorted by (source, target), and ``edge_weight`` (2E,) float32. ``genes`` may be
    a larger vocabulary (e.g. screened genes absent from STRING become isolated nodes); edges are
    mapped by gene name, and edges touching a gene missing from ``genes`` are left out (logged).
    ``data.string_version`` records the STRING version. Weights outside (0, 1] as float32 (zero,
    negative, NaN, or too small to survive float32) raise ``ValueError``.
    """
    node_ids = list(networks.genes if genes is None else genes)
    index = pd.Index(node_ids)
    if not index.is_unique:
        dup = index[index.duplicated()][0]
        raise ValueError(f"gene {dup!r} appears more than once in genes")
    n = len(node_ids)
    remap = index.get_indexer(pd.Index(networks.genes)) if genes is not None else np.arange(len(networks.genes))
    data = HeteroData()
    data["gene"].num_nodes = n
    data["gene"].node_ids = node_ids
    data.string_version = networks.version
    for channel, df in networks.channels.items():
        i = remap[df["i"].to_numpy(np.int64)]
        j = remap[df["j"].to_numpy(np.int64)]
        w = df["weight"].to_numpy(np.float32)
        if len(w) and not ((w > 0) & (w <= 1)).all():  # also NaN, and weights that round to 0 in float32
            bad = w[~((w > 0) & (w <= 1))][0]
            raise ValueError(f"channel {channel!r}: edge weight {bad!r} (as float32) outside (0, 1]; "
                             "STRING weights are score / 1000")
        ok = (i >= 0) & (j >= 0)
        if not ok.all():
            log.info("%s: %d edges touch genes outside the given gene list; left out", channel, int((~ok).sum()))
            i, j, w = i[ok], j[ok], w[ok]
        src = np.concatenate([i, j])
        dst = np.concatenate([j, i])
        order = np.lexsort((dst, src))
        store = data["gene", edge_type_name(networks.version, channel), "gene"]
        store.edge_index = torch.from_numpy(np.stack([src[order], dst[order]]).astype(np.int64))
        store.edge_weight = torch.from_numpy(np.concatenate([w, w])[order].astype(np.float32))
    return data
