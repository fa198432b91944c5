import warnings

import numpy as np
import pytest
import torch

from dango_nb.data.graph import build_cell_graph, channel_of, edge_type_name, version_of
from dango_nb.data.string_db import CHANNELS, read_dango_release, read_string_detailed


@pytest.fixture
def networks(fixtures_dir):
    return read_string_detailed(fixtures_dir / "string" / "4932.protein.links.detailed.v9.1.txt")


def test_edge_type_names():
    assert edge_type_name("9.1", "coexpression") == "string9_1_coexpression"
    assert edge_type_name("11.0", "cooccurence") == "string11_0_cooccurence"
    assert edge_type_name("12", "fusion") == "string12_fusion"
    for name in ("string9_1_coexpression", "string11_0_coexpression", ("gene", "string12_0_coexpression", "gene"),
                 "coexpression"):
        assert channel_of(name) == "coexpression"
    assert version_of(("gene", "string11_0_database", "gene")) == "11.0"
    assert version_of("string12_fusion") == "12"
    for c in CHANNELS:
        assert channel_of(edge_type_name("9.1", c)) == c
    with pytest.raises(ValueError):
        edge_type_name("9.1", "cooccurrence")  # STRING spells it 'cooccurence'
    with pytest.raises(ValueError):
        edge_type_name("v9", "fusion")
    with pytest.raises(ValueError):
        channel_of("string9_1_physical")
    with pytest.raises(ValueError):
        channel_of(("gene", "interacts", "gene"))


def check_graph(data, networks, node_ids):
    assert data["gene"].num_nodes == len(node_ids)
    assert data["gene"].node_ids == list(node_ids)
    assert data.string_version == networks.version
    names = np.asarray(node_ids)
    assert set(data.edge_types) == {("gene", edge_type_name(networks.version, c), "gene") for c in networks.channels}
    for c, df in networks.channels.items():
        store = data["gene", edge_type_name(networks.version, c), "gene"]
        ei, ew = store.edge_index, store.edge_weight
        assert ei.dtype == torch.long and ei.shape == (2, 2 * len(df))
        assert ew.dtype == torch.float32 and ew.shape == (2 * len(df),)
        key = ei[0] * len(node_ids) + ei[1]
        assert bool((key[1:] > key[:-1]).all())  # sorted by (source, target), no duplicates
        got = {(names[a], names[b], float(w)) for a, b, w in zip(ei[0].tolist(), ei[1].tolist(), ew.tolist())}
        g = np.asarray(networks.genes)
        want = set()
        for i, j, w in zip(df["i"], df["j"], df["weight"]):
            want |= {(g[i], g[j], float(w)), (g[j], g[i], float(w))}
        assert got == want, c
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert data.validate()


def test_build_cell_graph_default_vocabulary(networks):
    data = build_cell_graph(networks)
    check_graph(data, networks, networks.genes)


def test_build_cell_graph_exact_small(networks):
    data = build_cell_graph(networks)
    store = data["gene", "string9_1_experimental", "gene"]
    # genes: Q0010 YAL001C YAL002W YBR001C YCL001W YDL227C; edges (1,2) .64, (3,4) .417, (4,5) .21
    assert store.edge_index.tolist() == [[1, 2, 3, 4, 4, 5], [2, 1, 4, 3, 5, 4]]
    assert store.edge_weight.tolist() == pytest.approx([0.64, 0.64, 0.417, 0.417, 0.21, 0.21])


def test_build_cell_graph_larger_gene_list(networks):
    genes = ["YZZ999W", *reversed(networks.genes), "YAA000C"]
    data = build_cell_graph(networks, genes=genes)
    check_graph(data, networks, genes)
    assert data["gene"].num_nodes == 8
    deg = torch.zeros(8, dtype=torch.long)
    for et in data.edge_types:
        deg += torch.bincount(data[et].edge_index[0], minlength=8)
    assert deg[0] == 0 and deg[7] == 0  # screened genes absent from STRING are isolated nodes


def test_build_cell_graph_smaller_gene_list_drops_edges(networks):
    genes = ["YAL001C", "YAL002W", "YCL001W"]
    data = build_cell_graph(networks, genes=genes)
    assert data["gene", "string9_1_experimental", "gene"].edge_index.tolist() == [[0, 1], [1, 0]]
    assert data["gene", "string9_1_coexpression", "gene"].edge_index.shape == (2, 0)
    with pytest.raises(ValueError, match="more than once"):
        build_cell_graph(networks, genes=["YAL001C", "YAL001C"])


def test_cell_graph_from_shared_release(shared_string_dir):
    with pytest.warns(UserWarning):
        net = read_dango_release(shared_string_dir)
    data = build_cell_graph(net)
    assert data["gene"].num_nodes == 6400
    counts = {channel_of(et): data[et].edge_index.shape[1] for et in data.edge_types}
    assert counts == {"neighborhood": 91220, "fusion": 2722, "cooccurence": 5328, "database": 66972}


@pytest.mark.parametrize("bad", [0.0, -0.3, float("nan"), 1e-50, 1.5])
def test_weights_outside_unit_interval_refused(networks, bad):
    df = networks.channels["experimental"].copy()
    df["weight"] = df["weight"].astype(np.float64)
    df.loc[df.index[0], "weight"] = bad
    networks.channels["experimental"] = df
    with pytest.raises(ValueError, match=r"channel 'experimental': edge weight .* outside \(0, 1\]"):
        build_cell_graph(networks)
