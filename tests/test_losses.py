import math

import pytest
import torch

from dango_nb.data.graph import channel_of
from dango_nb.losses import (DangoLoss, LossOutput, finite_mask, interaction_loss, log_cosh, lookup_lambda,
                             weighted_mse, weighted_mse_linear)
from dango_nb.models.sparse import SparseRows, gather_rows
from dango_nb.schedules import PaperTwoStage, PreThenPost

# torch announces sparse CSR support as beta once per process; not about this code
pytestmark = pytest.mark.filterwarnings("ignore:Sparse:UserWarning")


def _random_adj(n, nnz, gen):
    code = torch.unique(torch.randint(0, n * n, (nnz,), generator=gen))
    i, j = code // n, code % n
    keep = i != j
    i, j = i[keep], j[keep]
    w = torch.rand(i.numel(), generator=gen) * 0.9 + 0.1
    return torch.sparse_coo_tensor(torch.stack([i, j]), w, (n, n)).coalesce().to_sparse_csr()


def test_gather_rows_is_row_aligned():
    # gene g's row holds the weights of g's edges; row k of the batch is gene rows[k] (not rows[k] +/- 1)
    n = 5
    i = torch.tensor([0, 1, 1, 3, 4])
    j = torch.tensor([2, 0, 4, 3, 1])
    w = torch.tensor([0.2, 0.5, 0.7, 0.9, 0.4])
    adj = torch.sparse_coo_tensor(torch.stack([i, j]), w, (n, n)).coalesce().to_sparse_csr()
    rows = torch.tensor([4, 1, 2, 1])
    t = gather_rows(adj, rows)
    dense = t.to_dense()
    expected = torch.zeros(4, n)
    expected[0, 1] = 0.4   # gene 4 -> 1
    expected[1, 0] = 0.5   # gene 1 -> 0
    expected[1, 4] = 0.7   # gene 1 -> 4
    expected[3, 0] = 0.5
    expected[3, 4] = 0.7   # gene 2 has no edges: row 2 stays empty
    torch.testing.assert_close(dense, expected)
    csr = torch.sparse_csr_tensor(t.crow, t.col, t.value, (4, n))
    torch.testing.assert_close(csr.to_dense(), expected)
    assert t.crow.tolist() == [0, 1, 3, 3, 5]


def test_gather_rows_random_matches_dense():
    gen = torch.Generator().manual_seed(1)
    adj = _random_adj(40, 300, gen)
    rows = torch.randperm(40, generator=gen)[:17]
    torch.testing.assert_close(gather_rows(adj, rows).to_dense(), adj.to_dense()[rows])
    empty = gather_rows(adj, torch.tensor([], dtype=torch.long))
    assert empty.nnz == 0 and empty.to_dense().shape == (0, 40)


@pytest.mark.parametrize("lam", [0.1, 1.0, 0.0])
@pytest.mark.parametrize("with_bias", [True, False])
def test_weighted_mse_linear_equals_dense(lam, with_bias):
    gen = torch.Generator().manual_seed(0)
    n, h, r = 60, 8, 13
    adj = _random_adj(n, 500, gen)
    rows = torch.randperm(n, generator=gen)[:r]
    target = gather_rows(adj, rows)
    z = torch.randn(r, h, generator=gen, dtype=torch.float64).requires_grad_()
    w = torch.randn(n, h, generator=gen, dtype=torch.float64).requires_grad_()
    b = (torch.randn(n, generator=gen, dtype=torch.float64).requires_grad_() if with_bias else None)
    t64 = SparseRows(target.row, target.col, target.value.double(), r, n, target.crow)

    dense_pred = z @ w.t() + (b if with_bias else 0)
    ref = weighted_mse(dense_pred, t64.to_dense(), lam)
    got = weighted_mse_linear(z, w, b, t64, lam)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=0)
    params = [z, w] + ([b] if with_bias else [])
    g_ref = torch.autograd.grad(ref, params)
    g_got = torch.autograd.grad(got, params)
    for a, e in zip(g_got, g_ref):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-12)


def test_weighted_mse_linear_float32_and_gather_fallback(monkeypatch):
    gen = torch.Generator().manual_seed(3)
    n, h, r = 200, 16, 31
    adj = _random_adj(n, 3000, gen)
    rows = torch.unique(torch.randint(0, n, (r,), generator=gen))
    target = gather_rows(adj, rows)
    z = torch.randn(rows.numel(), h, generator=gen).requires_grad_()
    w = (0.3 * torch.randn(n, h, generator=gen)).requires_grad_()
    b = torch.randn(n, generator=gen).requires_grad_()
    ref = weighted_mse(z @ w.t() + b, target.to_dense(), 0.1)
    got = weighted_mse_linear(z, w, b, target, 0.1)
    assert abs(got.item() - ref.item()) <= 1e-5 * abs(ref.item())
    g_ref = torch.autograd.grad(ref, [z, w, b])
    g_got = torch.autograd.grad(got, [z, w, b])
    for a, e in zip(g_got, g_ref):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-6)

    # the gather path (used where SDDMM is unavailable) gives the same value
    def no_sddmm(*args, **kwargs):
        raise RuntimeError("no sddmm here")

    # the index_add backward (backends without CSC products) gives the same gradients
    real_mm = torch.sparse.mm

    def mm_without_csc(a, b, *args):
        if a.layout == torch.sparse_csc:
            raise RuntimeError("no CSC here")
        return real_mm(a, b, *args)

    monkeypatch.setattr(torch.sparse, "mm", mm_without_csc)
    g_csc = torch.autograd.grad(weighted_mse_linear(z, w, b, target, 0.1), [z, w, b])
    for a, e in zip(g_csc, g_ref):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-6)
    monkeypatch.setattr(torch.sparse, "mm", real_mm)

    monkeypatch.setattr(torch.sparse, "sampled_addmm", no_sddmm)
    got2 = weighted_mse_linear(z, w, b, target, 0.1)
    assert abs(got2.item() - ref.item()) <= 1e-5 * abs(ref.item())


def test_weighted_mse_dense_reference_by_hand():
    pred = torch.tensor([[1.0, 2.0], [0.0, 3.0]])
    target = torch.tensor([[0.5, 0.0], [0.0, 1.0]])
    # nonzero targets: (1-.5)^2 + (3-1)^2 = 4.25; zero targets: 2^2 + 0 = 4 -> lam * 4
    assert weighted_mse(pred, target, 0.1).item() == pytest.approx((4.25 + 0.4) / 4)


def test_weighted_mse_linear_shape_mismatch():
    t = SparseRows(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), torch.zeros(0), 3, 10)
    with pytest.raises(ValueError, match="3x10"):
        weighted_mse_linear(torch.zeros(2, 4), torch.zeros(10, 4), None, t, 0.1)


def test_lambda_lookup_independent_of_string_version():
    lambdas = {"coexpression": 0.1, "experimental": 1.0}
    assert channel_of(("gene", "string9_1_coexpression", "gene")) == "coexpression"
    assert channel_of("string11_0_coexpression") == "coexpression"
    assert lookup_lambda(lambdas, ("gene", "string9_1_coexpression", "gene")) == 0.1
    assert lookup_lambda(lambdas, ("gene", "string11_0_coexpression", "gene")) == 0.1
    assert lookup_lambda(lambdas, "string12_0_experimental") == 1.0
    # keys given as full edge type names work too
    assert lookup_lambda({"string9_1_fusion": 0.1}, ("gene", "string11_0_fusion", "gene")) == 0.1


def test_unknown_channel_is_an_error_not_one():
    with pytest.raises(KeyError) as err:
        lookup_lambda({"coexpression": 0.1, "fusion": 1.0}, ("gene", "string9_1_database", "gene"))
    msg = str(err.value)
    assert "database" in msg and "coexpression" in msg and "fusion" in msg


def test_log_cosh_stable_and_exact():
    x = torch.tensor([-1e4, -1e3, -100.0, -3.0, -0.5, 0.0, 1e-4, 0.5, 3.0, 100.0, 1e3, 1e4],
                     dtype=torch.float32, requires_grad=True)
    y = log_cosh(x)
    assert torch.isfinite(y).all()
    xd = x.detach().double()
    small = xd.abs() < 20
    torch.testing.assert_close(y.detach().double()[small], torch.log(torch.cosh(xd[small])), rtol=1e-5, atol=1e-6)
    # large |x|: log cosh x = |x| - log 2 (+ exp(-2|x|) terms)
    for v in [100.0, 1e3, 1e4]:
        assert log_cosh(torch.tensor(v)).item() == pytest.approx(v - math.log(2), rel=1e-6)
        assert log_cosh(torch.tensor(-v)).item() == pytest.approx(v - math.log(2), rel=1e-6)
    (g,) = torch.autograd.grad(y.sum(), x)
    assert torch.isfinite(g).all()
    torch.testing.assert_close(g, torch.tanh(x.detach()), rtol=1e-5, atol=1e-6)
    # the naive formula overflows where this one does not
    assert not torch.isfinite(torch.log(torch.cosh(torch.tensor(1e3)))).item()


def test_interaction_loss_masks_nan():
    pred = torch.tensor([0.5, 1.0, -2.0, 3.0], requires_grad=True)
    target = torch.tensor([1.0, float("nan"), 0.0, float("nan")])
    assert finite_mask(target).tolist() == [True, False, True, False]
    for kind, f in [("logcosh", log_cosh), ("mse", lambda d: d * d)]:
        loss = interaction_loss(pred, target, kind)
        expected = (f(torch.tensor(-0.5)) + f(torch.tensor(-2.0))) / 2
        assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
        (g,) = torch.autograd.grad(loss, pred)
        assert torch.isfinite(g).all() and g[1] == 0 and g[3] == 0
    with pytest.raises(ValueError, match="huber"):
        interaction_loss(pred, target, "huber")


def test_all_nan_batch_gives_zero_loss_and_zero_grad():
    pred = torch.randn(5, requires_grad=True)
    loss = interaction_loss(pred, torch.full((5,), float("nan")))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(pred.grad, torch.zeros(5))


class _FakeOutput:
    """What DangoLoss reads from a DangoOutput, for a linear head on 2 channels."""

    def __init__(self, gen, n=30, h=6, r=7, b=9):
        self.edge_types = [("gene", "string9_1_coexpression", "gene"), ("gene", "string9_1_fusion", "gene")]
        self.rows = torch.randperm(n, generator=gen)[:r]
        self.heads = {et: torch.nn.Linear(h, n) for et in self.edge_types}
        self.adj = {et: _random_adj(n, 150, gen) for et in self.edge_types}
        self.recon_embeddings = {et: torch.randn(r, h, generator=gen).requires_grad_() for et in self.edge_types}
        self.recon_heads = self.heads
        self.recon_rows = self.rows
        self.recon_targets = {et: gather_rows(self.adj[et], self.rows) for et in self.edge_types}
        self.scores = torch.randn(b, generator=gen).requires_grad_()
        self.integrated = torch.zeros(n, h)

    def dense_rec(self, lambdas):
        return {et: weighted_mse(self.heads[et](self.recon_embeddings[et]), self.adj[et].to_dense()[self.rows],
                                 lambdas[channel_of(et)]) for et in self.edge_types}


def test_dango_loss_combines_by_schedule():
    gen = torch.Generator().manual_seed(0)
    out = _FakeOutput(gen)
    target = torch.randn(9, generator=gen)
    target[2] = float("nan")
    lambdas = {"coexpression": 0.1, "fusion": 1.0}
    loss = DangoLoss(lambdas, "LinearUntilUniform", transition_epoch=4)
    lo = loss(out, target, epoch=2)
    assert isinstance(lo, LossOutput)
    assert (lo.alpha, lo.w_rec, lo.w_int) == (0.75, 0.75, 0.25)
    dense = out.dense_rec(lambdas)
    rec = sum(dense.values())
    inter = interaction_loss(out.scores, target)
    assert lo.rec.item() == pytest.approx(rec.item(), rel=1e-5)
    assert lo.int.item() == pytest.approx(inter.item(), rel=1e-6)
    assert lo.total.item() == pytest.approx(0.75 * rec.item() + 0.25 * inter.item(), rel=1e-5)
    assert lo.rec_weighted.item() == pytest.approx(0.75 * rec.item(), rel=1e-5)
    assert lo.int_weighted.item() == pytest.approx(0.25 * inter.item(), rel=1e-6)
    assert set(lo.rec_per_channel) == {"coexpression", "fusion"}
    assert lo.rec_per_channel["coexpression"].item() == pytest.approx(dense[out.edge_types[0]].item(), rel=1e-5)
    d = lo.as_dict()
    for key in ["loss_total", "loss_rec", "loss_int", "loss_rec_weighted", "loss_int_weighted",
                "alpha", "w_rec", "w_int", "loss_rec_coexpression", "loss_rec_fusion"]:
        assert key in d and isinstance(d[key], float)
    t = lo.as_dict(tensors=True)
    assert set(t) == set(d) and all(t[k] == d[k] for k in d)
    assert isinstance(t["loss_rec"], torch.Tensor) and not t["loss_total"].requires_grad
    lo.total.backward()
    assert out.scores.grad is not None and out.recon_embeddings[out.edge_types[0]].grad is not None

    mean = DangoLoss(lambdas, "LinearUntilUniform", transition_epoch=4, rec_reduction="mean")(out, target, 2)
    assert mean.rec.item() == pytest.approx(rec.item() / 2, rel=1e-5)


def test_zero_weight_component_is_logged_without_gradient():
    gen = torch.Generator().manual_seed(1)
    out = _FakeOutput(gen)
    target = torch.randn(9, generator=gen)
    loss = DangoLoss({"coexpression": 0.1, "fusion": 1.0}, PreThenPost(3))
    lo = loss(out, target, epoch=5)  # interaction only
    assert lo.w_rec == 0.0 and torch.isfinite(lo.rec) and lo.rec.item() > 0
    lo.total.backward()
    assert out.recon_embeddings[out.edge_types[0]].grad is None
    assert out.heads[out.edge_types[0]].weight.grad is None
    assert out.scores.grad is not None

    out2 = _FakeOutput(torch.Generator().manual_seed(1))
    lo2 = loss(out2, target, epoch=0)  # reconstruction only
    lo2.total.backward()
    assert out2.scores.grad is None and torch.isfinite(lo2.int)
    assert lo2.total.item() == pytest.approx(lo2.rec.item(), rel=1e-6)

    # no triplets given: the interaction part is NaN (not computed) and must not be needed
    lo3 = loss(out2, None, epoch=0)
    assert math.isnan(lo3.int.item())
    with pytest.raises(ValueError, match="interaction weight"):
        loss(out2, None, epoch=5)


def test_paper_two_stage_weights_and_unknown_lambda():
    gen = torch.Generator().manual_seed(2)
    out = _FakeOutput(gen)
    target = torch.randn(9, generator=gen)
    lo = DangoLoss({"coexpression": 0.1, "fusion": 1.0}, PaperTwoStage(1))(out, target, epoch=3)
    assert (lo.w_rec, lo.w_int, lo.alpha) == (0.001, 1.0, 0.001)
    assert lo.total.item() == pytest.approx(0.001 * lo.rec.item() + lo.int.item(), rel=1e-6)
    with pytest.raises(KeyError, match="fusion"):
        DangoLoss({"coexpression": 0.1}, PaperTwoStage(1))(out, target, epoch=0)
    with pytest.raises(ValueError):
        DangoLoss({}, "PreThenPost", interaction="huber")


def test_inactive_component_can_be_skipped():
    gen = torch.Generator().manual_seed(4)
    out = _FakeOutput(gen)
    target = torch.randn(9, generator=gen)
    loss = DangoLoss({"coexpression": 0.1, "fusion": 1.0}, PreThenPost(3), log_inactive=False)
    lo = loss(out, target, epoch=5)
    assert math.isnan(lo.rec.item()) and math.isnan(lo.rec_weighted.item()) and lo.rec_per_channel == {}
    assert lo.total.item() == pytest.approx(lo.int.item())
    lo = loss(out, target, epoch=0)
    assert math.isnan(lo.int.item()) and lo.total.item() == pytest.approx(lo.rec.item())
