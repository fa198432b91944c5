import copy
import itertools
import pickle

import pytest
import torch
from torch_geometric.data import HeteroData

from dango_nb.losses import DangoLoss
from dango_nb.models import (Dango, DangoOutput, DangoPreTrain, GraphInputs, HyperSAGNN, MetaEmbedding,
                             TripletSelfAttention, prepare_graph)

CHANNELS = [("coexpression", 160), ("experimental", 90), ("fusion", 12)]

# torch announces sparse CSR support as beta once per process; not about this code
pytestmark = pytest.mark.filterwarnings("ignore:Sparse:UserWarning")


def make_graph(n=40, seed=0, channels=CHANNELS, version="9_1"):
    gen = torch.Generator().manual_seed(seed)
    g = HeteroData()
    g["gene"].num_nodes = n
    g["gene"].node_ids = [f"Y{i:03d}" for i in range(n)]
    for ch, e in channels:
        code = torch.unique(torch.randint(0, n * n, (3 * e,), generator=gen))
        i, j = code // n, code % n
        keep = i < j
        i, j = i[keep][:e], j[keep][:e]
        w = torch.rand(i.numel(), generator=gen) * 0.9 + 0.1
        et = ("gene", f"string{version}_{ch}", "gene")
        g[et].edge_index = torch.stack([torch.cat([i, j]), torch.cat([j, i])])
        g[et].edge_weight = torch.cat([w, w])
    return g


def edge_types(g):
    return list(g.edge_types)


def test_pretrain_shapes_and_reconstruction():
    g = make_graph()
    torch.manual_seed(0)
    m = DangoPreTrain(40, edge_types(g), hidden_channels=16)
    emb = m(g)
    assert list(emb) == edge_types(g)
    assert all(v.shape == (40, 16) for v in emb.values())
    rows = torch.tensor([3, 0, 17])
    d = Dango(40, edge_types(g), hidden_channels=16, num_heads=2)
    rec = d(g, None, recon_rows=rows).reconstructions()
    emb_d = d.pretrain(g)
    for et in edge_types(g):
        head = d.pretrain.head(et)
        assert rec[et].shape == (3, 40)
        torch.testing.assert_close(rec[et], emb_d[et][rows] @ head.weight.t() + head.bias)
    assert m.head(edge_types(g)[0]).weight.shape == (40, 16)
    with pytest.raises(ValueError, match="genes"):
        DangoPreTrain(41, edge_types(g), 16).prepare(g)
    with pytest.raises(KeyError, match="database"):
        DangoPreTrain(40, [("gene", "string9_1_database", "gene")], 16).prepare(g)


def test_batched_equals_per_channel_loop():
    g = make_graph(seed=1)
    torch.manual_seed(0)
    loop = DangoPreTrain(40, edge_types(g), hidden_channels=16, batched=False).double()
    batched = copy.deepcopy(loop)
    batched.batched = True
    inputs = loop.prepare(g)
    e_loop, e_batch = loop(inputs), batched(inputs)
    for et in edge_types(g):
        torch.testing.assert_close(e_batch[et], e_loop[et], rtol=1e-10, atol=1e-12)
    # gradients of every parameter agree too
    w = {et: torch.randn(40, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(k))
         for k, et in enumerate(edge_types(g))}
    sum(((e_loop[et] * w[et]) ** 2).sum() for et in w).backward()
    sum(((e_batch[et] * w[et]) ** 2).sum() for et in w).backward()
    for (name, p1), (_, p2) in zip(loop.named_parameters(), batched.named_parameters()):
        torch.testing.assert_close(p2.grad, p1.grad, rtol=1e-9, atol=1e-12, msg=name)


def test_aggregation_is_weighted_mean():
    # gene 0 has neighbours 1 (w=.2) and 2 (w=1.): aggregate = (.2 x1 + 1. x2) / 2
    g = HeteroData()
    g["gene"].num_nodes = 3
    et = ("gene", "string9_1_coexpression", "gene")
    g[et].edge_index = torch.tensor([[0, 1, 0, 2], [1, 0, 2, 0]])
    g[et].edge_weight = torch.tensor([0.2, 0.2, 1.0, 1.0])
    for batched in (False, True):
        m = DangoPreTrain(3, [et], hidden_channels=2, activation="identity", batched=batched)
        conv = m.conv1[et[1]]
        with torch.no_grad():
            for lin in (conv.lin_l, m.conv2[et[1]].lin_l):
                lin.weight.copy_(torch.eye(2))
                lin.bias.zero_()
            conv.lin_r.weight.zero_()
            m.conv2[et[1]].lin_r.weight.zero_()
            m.embedding.weight.copy_(torch.tensor([[1.0, 0.0], [10.0, 0.0], [100.0, 1.0]]))
        x = m.embedding.weight
        layer1 = torch.stack([(0.2 * x[1] + 1.0 * x[2]) / 2, 0.2 * x[0], 1.0 * x[0]])
        layer2 = torch.stack([(0.2 * layer1[1] + layer1[2]) / 2, 0.2 * layer1[0], layer1[0]])
        torch.testing.assert_close(m(g)[et], layer2)


def test_edge_weights_change_embeddings():
    g = make_graph(seed=2)
    torch.manual_seed(0)
    m = DangoPreTrain(40, edge_types(g), hidden_channels=8)
    before = m(g)
    g2 = copy.copy(g)
    et = edge_types(g)[0]
    g2[et].edge_weight = g[et].edge_weight * 0.5
    after = m(g2)
    assert not torch.allclose(before[et], after[et])
    torch.testing.assert_close(before[edge_types(g)[1]], after[edge_types(g)[1]])


def test_prepared_inputs_are_block_structured():
    g = make_graph(seed=3)
    inputs = prepare_graph(g, edge_types(g))
    n, c = 40, len(CHANNELS)
    assert isinstance(inputs, GraphInputs)
    assert inputs.stacked.shape == (c * n, n) and inputs.block.shape == (c * n, c * n)
    dense_stacked = inputs.stacked.to_dense()
    for k, et in enumerate(edge_types(g)):
        a = inputs.adj[et].to_dense()
        ei, w = g[et].edge_index, g[et].edge_weight
        expected = torch.zeros(n, n)
        expected[ei[1], ei[0]] = w
        torch.testing.assert_close(a, expected)
        deg = (expected != 0).sum(1, keepdim=True).clamp(min=1)
        torch.testing.assert_close(dense_stacked[k * n:(k + 1) * n], expected / deg)
    torch.testing.assert_close(inputs.stacked_t.to_dense(), dense_stacked.t())
    torch.testing.assert_close(inputs.block_t.to_dense(), inputs.block.to_dense().t())


def test_meta_embedding():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 10, 8, generator=gen)
    torch.manual_seed(0)
    att = MetaEmbedding(8)
    integ, w = att(x)
    assert integ.shape == (10, 8) and w.shape == (10, 3)
    torch.testing.assert_close(w.sum(1), torch.ones(10))
    torch.testing.assert_close(integ, torch.einsum("nc,cnh->nh", w, x))
    assert not torch.allclose(w, torch.full_like(w, 1 / 3))
    integ_list, _ = att(list(x))
    torch.testing.assert_close(integ_list, integ)
    mean = MetaEmbedding(8, mode="mean")
    integ_m, w_m = mean(x)
    torch.testing.assert_close(integ_m, x.mean(0))
    torch.testing.assert_close(w_m, torch.full((10, 3), 1 / 3))
    assert len(list(mean.parameters())) == 0
    with pytest.raises(ValueError, match="mode"):
        MetaEmbedding(8, mode="max")


def test_self_attention_has_zero_diagonal_and_no_self_leak():
    torch.manual_seed(0)
    att = TripletSelfAttention(8, num_heads=2)
    x = torch.randn(5, 3, 8)
    out, a = att(x, return_attention=True)
    assert out.shape == (5, 3, 8) and a.shape == (5, 2, 3, 3)
    assert torch.all(torch.diagonal(a, dim1=-2, dim2=-1) == 0)
    torch.testing.assert_close(a.sum(-1), torch.ones(5, 2, 3))
    # with query/key projections zeroed, attention is uniform over the OTHER genes, so gene 0's output
    # cannot depend on gene 0's own input (it would with the diagonal unmasked)
    with torch.no_grad():
        att.qkv.weight[:16].zero_()
        att.qkv.bias[:16].zero_()
    x2 = x.clone()
    x2[:, 0] += 5.0
    o1, o2 = att(x), att(x2)
    torch.testing.assert_close(o1[:, 0], o2[:, 0])
    assert not torch.allclose(o1[:, 1], o2[:, 1])
    # and, in general, the Jacobian of gene i's output w.r.t. its own value vector is zero
    torch.manual_seed(1)
    att = TripletSelfAttention(8, num_heads=2)
    v = torch.randn(1, 3, 8)
    qk_in = torch.randn(1, 3, 8)

    def out_from_values(vv):  # queries/keys fixed, only the value path varies
        b, k, h = vv.shape
        q, key, _ = att.qkv(qk_in).view(b, k, 3, 2, 4).permute(2, 0, 3, 1, 4)
        _, _, val = att.qkv(vv).view(b, k, 3, 2, 4).permute(2, 0, 3, 1, 4)
        _, a = att(qk_in, return_attention=True)
        return att.out((a @ val).transpose(1, 2).reshape(b, k, h))

    jac = torch.autograd.functional.jacobian(out_from_values, v)  # (1,3,8, 1,3,8)
    for i in range(3):
        assert torch.all(jac[0, i, :, 0, i, :] == 0)
        assert jac[0, i, :, 0, (i + 1) % 3, :].abs().sum() > 0


def test_hypersagnn_shapes_beta_and_formula():
    torch.manual_seed(0)
    h = HyperSAGNN(16, num_heads=4, num_layers=2)
    assert torch.equal(h.beta.detach(), torch.zeros(2))
    x = torch.randn(7, 3, 16)
    assert h(x).shape == (7,)
    # beta = 0: dynamic = input, score = mean_i Linear((x_i - act(W_s x_i + b))^2)
    s = torch.relu(h.static(x))
    expected = h.lin_out((x - s) ** 2).squeeze(-1).mean(-1)
    torch.testing.assert_close(h(x), expected)
    h2 = HyperSAGNN(16, num_heads=4, num_layers=3, beta_init=0.5)
    assert torch.equal(h2.beta.detach(), torch.full((3,), 0.5))
    h2.reset_parameters()
    assert torch.equal(h2.beta.detach(), torch.full((3,), 0.5))
    # beta is learned: it gets a gradient even at 0
    h(x).sum().backward()
    assert h.beta.grad is not None and h.beta.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="divisible"):
        HyperSAGNN(10, num_heads=4)


def test_triplet_score_is_order_invariant():
    g = make_graph(seed=4)
    torch.manual_seed(0)
    m = Dango(40, edge_types(g), hidden_channels=16, num_heads=4, num_layers=2).double()
    with torch.no_grad():
        m.hypersagnn.beta.copy_(torch.tensor([0.7, -1.3]))
    trip = torch.tensor([[1, 5, 9], [2, 30, 17], [0, 0, 4]])
    scores = [m(g, trip[:, list(p)]).scores for p in itertools.permutations(range(3))]
    for s in scores[1:]:
        torch.testing.assert_close(s, scores[0], rtol=1e-12, atol=1e-12)
    # and it is not trivially constant: different triplets score differently
    assert scores[0][0] != scores[0][1]


def test_dango_output_contents():
    g = make_graph(seed=5)
    torch.manual_seed(0)
    m = Dango(40, edge_types(g), hidden_channels=16)
    trip = torch.tensor([[3, 1, 7], [7, 20, 1]])
    out = m(g, trip)
    assert isinstance(out, DangoOutput)
    assert out.scores.shape == (2,)
    assert out.integrated.shape == (40, 16) and out.meta_weights.shape == (40, len(CHANNELS))
    assert out.recon_rows.tolist() == [1, 3, 7, 20]
    for et in edge_types(g):
        assert out.channel_embeddings[et].shape == (40, 16)
        torch.testing.assert_close(out.recon_embeddings[et], out.channel_embeddings[et][out.recon_rows])
        # targets: row k is gene recon_rows[k]'s own adjacency row
        ei, w = g[et].edge_index, g[et].edge_weight
        dense = torch.zeros(40, 40)
        dense[ei[0], ei[1]] = w
        torch.testing.assert_close(out.recon_targets[et].to_dense(), dense[out.recon_rows])
        assert out.recon_heads[et] is m.pretrain.head(et)
        assert out.reconstructions()[et].shape == (4, 40)
    # reconstruction only, all genes
    out_all = m(g)
    assert out_all.scores is None and out_all.recon_rows.tolist() == list(range(40))
    out_rows = m(g, trip, recon_rows=torch.tensor([5, 6]))
    assert out_rows.recon_rows.tolist() == [5, 6]
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        m(g, torch.tensor([1, 2, 3]))
    # scores only (prediction): no reconstruction work, same scores; score() reuses embeddings
    lean = m(g, trip, reconstruction=False)
    torch.testing.assert_close(lean.scores, out.scores)
    assert lean.recon_rows.numel() == 0 and lean.recon_embeddings == {} and lean.recon_targets == {}
    torch.testing.assert_close(m.score(out.integrated, trip), out.scores)
    loss = DangoLoss({"coexpression": 1.0, "experimental": 1.0, "fusion": 1.0}, "PreThenPost", transition_epoch=1)
    lo = loss(lean, torch.tensor([0.1, 0.2]), epoch=1)
    assert torch.isnan(lo.rec) and torch.isfinite(lo.total)
    with pytest.raises(ValueError, match="reconstruction"):
        loss(lean, torch.tensor([0.1, 0.2]), epoch=0)
    # an empty row set (what a step with reconstruction weight 0 may ask for) means "no reconstruction"
    empty = m(g, trip, recon_rows=torch.zeros(0, dtype=torch.long))
    lo = loss(empty, torch.tensor([0.1, 0.2]), epoch=1)
    assert torch.isnan(lo.rec) and torch.isfinite(lo.total)
    with pytest.raises(ValueError, match="reconstruction"):
        loss(empty, torch.tensor([0.1, 0.2]), epoch=0)


def test_prepare_is_cached_per_graph_and_not_pickled():
    g = make_graph(seed=6)
    m = Dango(40, edge_types(g), hidden_channels=8)
    p1 = m.prepare(g)
    assert m.prepare(g) is p1
    g2 = make_graph(seed=7)
    assert m.prepare(g2) is not p1
    assert m.prepare(p1) is p1  # prepared inputs pass through
    clone = copy.deepcopy(m)
    assert clone._cache is None
    restored = pickle.loads(pickle.dumps(m))
    assert restored._cache is None
    torch.testing.assert_close(restored(g, torch.tensor([[0, 1, 2]])).scores, m(g, torch.tensor([[0, 1, 2]])).scores)


def test_variants_build_and_train_one_step():
    g = make_graph(seed=8, version="11_0")
    lambdas = {"coexpression": 0.1, "experimental": 1.0, "fusion": 1.0}
    for kw in [dict(hidden_channels=128, num_heads=8), dict(hidden_channels=64, num_layers=3, beta_init=0.1),
               dict(hidden_channels=16, activation="gelu", meta_embedding="mean"),
               dict(hidden_channels=16, activation="tanh", batched=False)]:
        torch.manual_seed(0)
        m = Dango(40, edge_types(g), **kw)
        opt = torch.optim.Adam(m.parameters(), lr=1e-3)
        loss = DangoLoss(lambdas, "LinearUntilUniform", transition_epoch=2)
        trip = torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
        y = torch.tensor([0.5, -1.0, 2.0])
        first = loss(m(g, trip), y, 1)
        for _ in range(10):
            lo = loss(m(g, trip), y, 1)
            opt.zero_grad()
            lo.total.backward()
            opt.step()
        assert torch.isfinite(lo.total)
        assert lo.total.item() < first.total.item(), kw
        assert m.hypersagnn.hidden_channels == kw["hidden_channels"]


def test_same_seed_same_model():
    g = make_graph(seed=9)
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        m = Dango(40, edge_types(g), hidden_channels=16)
        outs.append(m(g, torch.tensor([[0, 1, 2]])).scores)
    assert torch.equal(outs[0], outs[1])


# a sparse graph (many genes outside the 1-hop neighbourhood of a batch) with isolated genes, so the
# batch-local path really drops layer-1 rows and must still reproduce the full path
LOCAL_CHANNELS = [("coexpression", 90), ("experimental", 40), ("fusion", 6)]


@pytest.mark.parametrize("case", ["triplets", "recon_rows", "no_reconstruction", "pretrain", "empty_rows",
                                  "loop", "mean_meta"])
def test_local_forward_equals_full_forward(case):
    n = 150
    g = make_graph(n=n, seed=11, channels=LOCAL_CHANNELS)
    kwargs = {"batched": case != "loop", "meta_embedding": "mean" if case == "mean_meta" else "attention"}
    torch.manual_seed(0)
    m = Dango(n, edge_types(g), hidden_channels=8, num_heads=2, **kwargs).double()
    inputs = m.prepare(g)
    gen = torch.Generator().manual_seed(1)
    trip = torch.randint(0, n, (12, 3), generator=gen)
    trip[0] = torch.tensor([149, 3, 149 - 1])
    call = {"triplets": dict(triplet_indices=trip),
            "recon_rows": dict(triplet_indices=trip, recon_rows=torch.tensor([148, 0, 77, 3])),
            "no_reconstruction": dict(triplet_indices=trip, reconstruction=False),
            "pretrain": dict(triplet_indices=None, recon_rows=torch.tensor([5, 140, 9, 60, 61])),
            "empty_rows": dict(triplet_indices=trip, recon_rows=torch.zeros(0, dtype=torch.long)),
            "loop": dict(triplet_indices=trip), "mean_meta": dict(triplet_indices=trip)}[case]
    lambdas = {"coexpression": 0.1, "experimental": 1.0, "fusion": 0.5}
    loss_fn = DangoLoss(lambdas, "LinearUntilFlipped", transition_epoch=4)
    epoch = 0 if case == "pretrain" else (5 if case in ("no_reconstruction", "empty_rows") else 2)
    target = None if call["triplet_indices"] is None else torch.randn(12, generator=gen, dtype=torch.float64)

    results = []
    for local in (False, True):
        m.zero_grad(set_to_none=True)
        out = m(inputs, **call, local=local)
        lo = loss_fn(out, target, epoch)
        lo.total.backward()
        grads = {k: p.grad.clone() for k, p in m.named_parameters() if p.grad is not None}
        results.append((out, lo, grads))
    (full, lo_f, g_f), (loc, lo_l, g_l) = results
    tight = dict(rtol=1e-12, atol=1e-14)
    assert full.embedding_rows is None
    used = [call["triplet_indices"], call.get("recon_rows")]
    if call.get("reconstruction", True) and call.get("recon_rows") is None:
        used.append(torch.unique(trip))
    expected_rows = torch.unique(torch.cat([u.reshape(-1) for u in used if u is not None]))
    assert torch.equal(loc.embedding_rows, expected_rows)
    g_rows = loc.embedding_rows
    torch.testing.assert_close(loc.integrated, full.integrated[g_rows], **tight)
    torch.testing.assert_close(loc.meta_weights, full.meta_weights[g_rows], **tight)
    for et in edge_types(g):
        torch.testing.assert_close(loc.channel_embeddings[et], full.channel_embeddings[et][g_rows], **tight)
    if full.scores is None:
        assert loc.scores is None
    else:
        torch.testing.assert_close(loc.scores, full.scores, **tight)
    assert torch.equal(loc.recon_rows, full.recon_rows) and set(loc.recon_embeddings) == set(full.recon_embeddings)
    for et in full.recon_embeddings:
        torch.testing.assert_close(loc.recon_embeddings[et], full.recon_embeddings[et], **tight)
        assert torch.equal(loc.recon_targets[et].to_dense(), full.recon_targets[et].to_dense())
    for name in ("total", "rec", "int"):
        a, b = getattr(lo_l, name), getattr(lo_f, name)
        assert torch.isnan(a) == torch.isnan(b)
        if not torch.isnan(a):
            torch.testing.assert_close(a, b, **tight)
    assert set(g_l) == set(g_f) and g_f
    for k in g_f:
        torch.testing.assert_close(g_l[k], g_f[k], rtol=1e-10, atol=1e-13, msg=f"gradient of {k}")


def test_local_forward_skips_genes_outside_the_neighbourhood():
    """Layer 1's dense work covers only the 1-hop neighbourhood of the batch (the point of the
    local path), and an isolated gene's embedding depends on nothing else."""
    n = 150
    g = make_graph(n=n, seed=11, channels=LOCAL_CHANNELS)
    torch.manual_seed(0)
    m = Dango(n, edge_types(g), hidden_channels=8, num_heads=2)
    inputs = m.prepare(g)
    seen = []
    orig = torch.addmm
    try:
        torch.addmm = lambda *a, **k: seen.append(a[1].size(0)) or orig(*a, **k)
        stacked = m.pretrain(inputs, torch.tensor([0, 1]))
    finally:
        torch.addmm = orig
    assert stacked.shape == (len(LOCAL_CHANNELS), 2, 8)
    assert 0 < sum(seen) < len(LOCAL_CHANNELS) * n  # fewer (channel, gene) pairs than the full layer 1
    full = m.pretrain(inputs)
    torch.testing.assert_close(stacked, torch.stack([full[et][[0, 1]] for et in m.edge_types]))


def test_eval_mode_restores_the_previous_mode_even_on_error():
    from dango_nb.models import eval_mode

    m = torch.nn.Dropout(0.5)
    with eval_mode(m):
        assert not m.training
    assert m.training
    m.eval()
    with pytest.raises(RuntimeError), eval_mode(m):
        raise RuntimeError
    assert not m.training
    m.train()
    with pytest.raises(RuntimeError), eval_mode(m):
        raise RuntimeError
    assert m.training


def test_predict_scores_in_chunks_like_the_forward_pass():
    g = make_graph(seed=2)
    torch.manual_seed(0)
    m = Dango(40, edge_types(g), hidden_channels=16, num_heads=2)
    trip = torch.randint(0, 40, (37, 3))
    m.eval()
    with torch.no_grad():
        ref = m(g, trip, reconstruction=False).scores
    m.train()
    got = m.predict(g, trip, batch_size=5)
    assert m.training  # mode restored
    assert not got.requires_grad and got.shape == (37,)
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(m.predict(g, trip, embeddings=m.embeddings(g)), ref)
    assert m.predict(g, trip[:0]).shape == (0,)
    # the cached graph inputs built by predict stay usable for training (not inference tensors)
    out = m(g, trip, local=True)
    out.scores.sum().backward()
    with pytest.raises(ValueError, match="batch_size"):
        m.predict(g, trip, batch_size=0)
    with pytest.raises(ValueError, match=r"\(M, 3\)"):
        m.predict(g, trip[:, :2])


@pytest.mark.parametrize("kwargs, match", [
    ({"hidden_channels": "sixteen"}, "hidden_channels: expected an integer from 1 to 16384, got 'sixteen'"),
    ({"hidden_channels": 0}, "hidden_channels: expected an integer from 1 to 16384, got 0"),
    ({"activation": "bogus"}, "activation: expected a torch activation name"),
    ({"meta_embedding": "max"}, "meta_embedding: expected one of attention, mean"),
    ({"hidden_channels": 10, "num_heads": 4}, "not divisible by num_heads=4"),
    ({"batched": 1}, "batched: expected true or false"),
    ({"beta_init": float("nan")}, "beta_init: expected a finite number"),
    ({"hidden_size": 8}, "hidden_size: unknown key; Dango takes hidden_channels"),
    ({"attention_activation": 3}, "attention_activation: expected a str, got 3"),
    ({"attention_activation": "bogus"}, "attention_activation: expected null or a torch activation name"),
    ({"attention_dropout": "high"}, r"attention_dropout: expected a probability in \[0, 1\)"),
])
def test_hyperparameters_checked_against_the_signature(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Dango.check_hyperparameters(kwargs)


def test_hyperparameters_are_the_init_signature():
    import inspect

    names = [p for p in inspect.signature(Dango.__init__).parameters if p not in ("self", "gene_num", "edge_types")]
    assert list(Dango.hyperparameters()) == names
    assert Dango.check_hyperparameters({"hidden_channels": 8, "num_heads": 2, "activation": "gelu"}) == {
        "hidden_channels": 8, "num_heads": 2, "activation": "gelu"}
    # every keyword's own default passes (``X | None`` annotations included)
    defaults = {name: p.default for name, p in Dango.hyperparameters().items()}
    assert Dango.check_hyperparameters(defaults) == defaults
    assert Dango.check_hyperparameters({"attention_activation": "tanh"}) == {"attention_activation": "tanh"}
