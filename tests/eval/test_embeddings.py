import numpy as np
import pytest
import torch
from torch import nn
from torch_geometric.data import HeteroData

from dango_nb.eval import embeddings as E

ET = ("gene", "string9_1_coexpression", "gene")
ET2 = ("gene", "string9_1_fusion", "gene")


def ring_graph(n=30):
    g = HeteroData()
    g["gene"].num_nodes = n
    g["gene"].node_ids = [f"Y{i:03d}" for i in range(n)]
    g.string_version = "9.1"
    for et, step in ((ET, 1), (ET2, 3)):
        i = np.arange(n)
        j = (i + step) % n
        lo, hi = np.minimum(i, j), np.maximum(i, j)
        src, dst = np.r_[lo, hi], np.r_[hi, lo]
        order = np.lexsort((dst, src))
        g[et].edge_index = torch.tensor(np.stack([src[order], dst[order]]), dtype=torch.long)
        g[et].edge_weight = torch.full((2 * n,), 0.5)
    return g


def edge_set(ei):
    return set(map(tuple, ei.t().tolist()))


def test_holdout_removes_both_directions_and_keeps_original():
    g = ring_graph()
    before = g[ET].edge_index.clone()
    h = E.holdout_edges(g, 0.2, seed=3)
    assert torch.equal(g[ET].edge_index, before)  # input untouched
    full, kept, held = edge_set(g[ET].edge_index), edge_set(h.train_graph[ET].edge_index), edge_set(h.heldout[ET])
    assert len(held) == 6 and all(i < j for i, j in held)
    assert not any((i, j) in kept or (j, i) in kept for i, j in held)
    assert kept | {(i, j) for i, j in held} | {(j, i) for i, j in held} == full
    assert h.train_graph[ET].edge_weight.shape[0] == h.train_graph[ET].edge_index.shape[1] == 48
    assert h.train_graph.string_version == "9.1" and h.train_graph["gene"].num_nodes == 30
    t = h.table()
    assert t.set_index("channel").loc["coexpression"].to_dict() == {"edges": 30, "held_out": 6, "kept": 24}
    again = E.holdout_edges(g, 0.2, seed=3)
    assert torch.equal(again.heldout[ET], h.heldout[ET])
    assert not torch.equal(E.holdout_edges(g, 0.2, seed=4).heldout[ET], h.heldout[ET])
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\)"):
        E.holdout_edges(g, 1.0)


class OracleModel(nn.Module):
    """Channel embeddings = adjacency of the FULL graph plus identity, heads = identity: a held-out
    pair scores 1, a non-edge 0, so AUROC is 1 exactly when the negatives are true non-edges."""

    def __init__(self, graph, informative=True):
        super().__init__()
        n = graph["gene"].num_nodes
        self.edge_types = list(graph.edge_types)
        self.z = {}
        for et in self.edge_types:
            a = torch.zeros(n, n)
            a[graph[et].edge_index[0], graph[et].edge_index[1]] = 1.0
            self.z[et] = (a + torch.eye(n)) if informative else torch.eye(n)
        heads = {et[1]: nn.Linear(n, n) for et in self.edge_types}
        for h in heads.values():
            nn.init.eye_(h.weight)
            nn.init.zeros_(h.bias)
        self.heads = nn.ModuleDict(heads)
        outer = self

        class Pre:
            def __call__(self, inputs):
                return outer.z

            def head(self, et):
                return outer.heads[et[1]]

        self.pretrain = Pre()

    def prepare(self, graph):
        return graph


def test_heldout_auroc_oracle_and_uninformative():
    g = ring_graph(40)
    h = E.holdout_edges(g, 0.25, seed=0)
    res = E.heldout_auroc(OracleModel(g), h, negatives_per_positive=3, seed=1)
    assert list(res["channel"]) == ["coexpression", "fusion"]
    assert (res["auroc"] == 1.0).all() and (res["negatives"] == 3 * res["held_out"]).all()
    flat = E.heldout_auroc(OracleModel(g, informative=False), h, seed=1)
    assert (flat["auroc"] == 0.5).all()


def test_sampled_non_edges_are_distinct_true_non_edges():
    g = ring_graph(12)
    pairs = g[ET].edge_index[:, g[ET].edge_index[0] < g[ET].edge_index[1]]
    rng = np.random.default_rng(0)
    neg = E._sample_non_edges(pairs, np.arange(12), 40, rng, 12)
    got = set(map(tuple, neg.T.tolist()))
    assert len(got) == 40 and all(i < j for i, j in got) and not got & edge_set(pairs)
    with pytest.raises(ValueError, match="cannot sample"):
        E._sample_non_edges(pairs, np.arange(12), 100, rng, 12)


def test_module_knn_agreement():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 25).astype(object)
    centres = rng.normal(size=(4, 8)) * 5
    x = centres[labels.astype(int)] + rng.normal(size=(100, 8))
    agree, chance = E.module_knn_agreement(x, labels, k=5)
    assert agree > 0.95 and chance == pytest.approx(4 * 25 * 24 / (100 * 99))
    agree_rand, _ = E.module_knn_agreement(rng.normal(size=(100, 8)), labels, k=5)
    assert agree_rand < 0.5
    labels[:10] = None
    agree, chance = E.module_knn_agreement(x, labels, k=5)
    assert chance == pytest.approx((15 * 14 + 3 * 25 * 24) / (90 * 89))


def test_gene_embeddings_on_a_real_model():
    from dango_nb.models import Dango

    g = ring_graph(20)
    model = Dango(20, g.edge_types, hidden_channels=8)
    model.train()
    ge = E.gene_embeddings(model, g)
    assert model.training  # mode restored
    assert ge.integrated.shape == (20, 8) and ge.meta_weights.shape == (20, 2)
    np.testing.assert_allclose(ge.meta_weights.sum(1), 1.0, rtol=1e-5)
    assert ge.channels == ["coexpression", "fusion"]
    assert list(ge.weights_frame().columns) == ["coexpression", "fusion"]
