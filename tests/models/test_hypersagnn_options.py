"""Hyper-SAGNN switches: dropout places, feed-forward block, attention nonlinearity, presets."""

import inspect
import itertools
import math
import typing

import pytest
import torch
from test_models import edge_types, make_graph

from dango_nb.losses import DangoLoss
from dango_nb.models import (HYPERSAGNN_PRESETS, Dango, FeedForward, HyperSAGNN, TripletSelfAttention,
                             hypersagnn_preset)

pytestmark = pytest.mark.filterwarnings("ignore:Sparse:UserWarning")

SWITCHES = {"attention_dropout": float, "projection_dropout": float, "output_dropout": float,
            "feed_forward": bool, "feed_forward_dropout": float, "attention_activation": str | None}


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def hypersagnn_params(h, layers, feed_forward=False):
    """static (H^2 + H) + layers x attention (qkv 3H^2 + 3H, out H^2 + H) + beta (L) + lin_out (H + 1)
    [+ layers x feed-forward (LayerNorm 2H, two linear maps 2H^2 + 2H, beta 1)]."""
    base = (4 * layers + 1) * h * h + (4 * layers + 2) * h + layers + 1
    return base + (layers * (2 * h * h + 4 * h + 1) if feed_forward else 0)


def with_live_residuals(model):
    """Non-zero ReZero scalars, so the attention and feed-forward paths reach the score."""
    hs = model.hypersagnn if isinstance(model, Dango) else model
    with torch.no_grad():
        hs.beta.copy_(torch.linspace(0.7, -1.3, hs.beta.numel()))
        for block in hs.ffn or []:
            block.beta.fill_(0.9)
    return model


# ---- the default head is the one built before the switches existed ----------------------------------

# Recorded from the model as it was before the switches (torch.manual_seed(0), HyperSAGNN(16, 4, 2)).
# Shapes, names and the random stream's position after init are exact on any CPU; the float32 draws
# themselves (normal_ is vectorised differently for AVX2, AVX-512 and plain x86-64) and the outputs
# computed from them may differ in the last bits, so those are compared at float32 tolerances.
REFERENCE_STATE = [
    ("beta", (2,), 0.0), ("static.weight", (16, 16), -1.7949356138706207),
    ("static.bias", (16,), -1.0142773985862732), ("layers.0.qkv.weight", (48, 16), 0.12081167101860046),
    ("layers.0.qkv.bias", (48,), -0.09778422117233276), ("layers.0.out.weight", (16, 16), 2.9747992753982544),
    ("layers.0.out.bias", (16,), 0.026441723108291626), ("layers.1.qkv.weight", (48, 16), 2.5568695068359375),
    ("layers.1.qkv.bias", (48,), 0.6209641695022583), ("layers.1.out.weight", (16, 16), 0.3763146996498108),
    ("layers.1.out.bias", (16,), -0.2193247377872467), ("lin_out.weight", (1, 16), -0.6363889575004578),
    ("lin_out.bias", (1,), -0.12585580348968506)]
REFERENCE_HEAD_OUT = [-1.3259798288345337, -0.8727186322212219, -0.8350162506103516,
                      -0.30297574400901794, -1.6737555265426636]
# Dango(40, make_graph(seed=3), hidden_channels=16) under torch.manual_seed(0)
REFERENCE_RAND_AFTER_INIT = [0.038202106952667236, 0.9455280900001526, 0.34392815828323364]
REFERENCE_DANGO_SCORES = [0.09634912759065628, 0.09077606350183487, 0.10143178701400757]


def assert_sum_close(tensor, total, what):
    """``tensor``'s sum equals ``total`` up to float32 rounding of each element: a last-bit
    difference per draw moves the sum by at most ~1.2e-7 of the summed magnitudes; a different
    init or another number of draws moves it by orders of magnitude more."""
    t = tensor.double()
    assert abs(t.sum().item() - total) <= 1e-6 * t.abs().sum().item() + 1e-12, (what, t.sum().item(), total)


def test_default_head_matches_the_recorded_model():
    torch.manual_seed(0)
    h = HyperSAGNN(16, num_heads=4, num_layers=2)
    state = h.state_dict()
    assert [(n, tuple(p.shape)) for n, p in state.items()] == [(n, s) for n, s, _ in REFERENCE_STATE]
    assert [n for n, _ in h.named_parameters()] == [n for n, _, _ in REFERENCE_STATE]
    for name, _, total in REFERENCE_STATE:
        assert_sum_close(state[name], total, name)
    x = torch.randn(5, 3, 16)  # drawn after init: equal only if init drew the same random numbers
    with_live_residuals(h).train()
    torch.testing.assert_close(h(x), torch.tensor(REFERENCE_HEAD_OUT), rtol=1e-5, atol=1e-5)
    assert h.ffn is None
    assert not any(isinstance(m, torch.nn.Dropout) for m in h.modules())


def test_default_dango_matches_the_recorded_model_and_explicit_off_switches():
    g = make_graph(seed=3)
    trip = torch.tensor([[1, 5, 9], [2, 30, 17], [0, 3, 4]])
    off = dict(attention_dropout=0.0, projection_dropout=0.0, output_dropout=0.0, feed_forward=False,
               feed_forward_dropout=0.0, attention_activation=None)
    models = []
    for kw in ({}, off):
        torch.manual_seed(0)
        m = Dango(40, edge_types(g), hidden_channels=16, **kw)
        assert torch.rand(3).tolist() == REFERENCE_RAND_AFTER_INIT  # same random draws at init
        assert n_params(m) == 8604 and len(m.state_dict()) == 42
        assert_sum_close(torch.cat([p.reshape(-1) for p in m.state_dict().values()]), 13.339577422942966,
                         "all parameters")
        with_live_residuals(m).train()
        torch.testing.assert_close(m(g, trip).scores, torch.tensor(REFERENCE_DANGO_SCORES), rtol=1e-5, atol=1e-5)
        models.append(m)
    a, b = models
    assert list(a.state_dict()) == list(b.state_dict())
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert torch.equal(a(g, trip).scores, b(g, trip).scores)


# ---- parameter counts -------------------------------------------------------------------------------

@pytest.mark.parametrize("h,heads,layers", [(8, 2, 1), (16, 4, 2), (24, 8, 3)])
def test_parameter_counts(h, heads, layers):
    assert n_params(HyperSAGNN(h, heads, layers)) == hypersagnn_params(h, layers)
    assert n_params(HyperSAGNN(h, heads, layers, feed_forward=True)) == hypersagnn_params(h, layers, True)
    assert n_params(FeedForward(h)) == 2 * h * h + 4 * h + 1
    # dropouts and the attention nonlinearity add no parameters
    for kw in (dict(attention_dropout=0.3), dict(projection_dropout=0.3), dict(output_dropout=0.25),
               dict(attention_activation="tanh")):
        m = HyperSAGNN(h, heads, layers, **kw)
        assert n_params(m) == hypersagnn_params(h, layers), kw
        assert list(m.state_dict()) == list(HyperSAGNN(h, heads, layers).state_dict()), kw
    ff = HyperSAGNN(h, heads, layers, feed_forward=True, feed_forward_dropout=0.4)
    names = [n for n, _ in ff.named_parameters() if n.startswith("ffn.")]
    assert names == [f"ffn.{i}.{p}" for i in range(layers)
                     for p in ("beta", "norm.weight", "norm.bias", "lin1.weight", "lin1.bias", "lin2.weight",
                               "lin2.bias")]


def test_parameter_counts_through_dango_and_presets():
    g = make_graph(seed=1)
    base = n_params(Dango(40, edge_types(g), hidden_channels=16))
    assert n_params(Dango(40, edge_types(g), hidden_channels=16, feed_forward=True)) - base == 2 * (2 * 256 + 64 + 1)
    orig = Dango(40, edge_types(g), **hypersagnn_preset("original"))
    assert n_params(orig.hypersagnn) == hypersagnn_params(128, 1, feed_forward=True) == 115971
    spec = Dango(40, edge_types(g), **hypersagnn_preset("spec"))
    assert n_params(spec.hypersagnn) == hypersagnn_params(64, 2) == 37507
    assert orig.hypersagnn.layers[0].num_heads == 8 and spec.hypersagnn.layers[0].num_heads == 4


# ---- dropout: where it acts and only in training -------------------------------------------------------

DROPOUTS = [dict(attention_dropout=0.5), dict(projection_dropout=0.5), dict(output_dropout=0.5),
            dict(feed_forward=True, feed_forward_dropout=0.5)]


@pytest.mark.parametrize("kw", DROPOUTS, ids=lambda kw: [k for k in kw if k.endswith("dropout")][0])
def test_dropout_only_in_training_mode(kw):
    torch.manual_seed(0)
    m = with_live_residuals(HyperSAGNN(16, 4, 2, **kw))
    zero = HyperSAGNN(16, 4, 2, **{k: (0.0 if k.endswith("dropout") else v) for k, v in kw.items()})
    zero.load_state_dict(m.state_dict())
    x = torch.randn(32, 3, 16)
    m.train()
    t1, t2 = m(x), m(x)
    assert not torch.allclose(t1, t2)
    m.eval()
    e1, e2 = m(x), m(x)
    assert torch.equal(e1, e2)
    assert not torch.allclose(t1, e1)
    torch.testing.assert_close(e1, zero.eval()(x), rtol=0, atol=0)
    torch.testing.assert_close(zero.train()(x), e1, rtol=0, atol=0)  # p = 0 in training is a no-op


def _captured(module, fn):
    """Run ``fn``; return the inputs and output ``module`` saw."""
    seen = {}

    def hook(mod, args, out):
        seen["in"], seen["out"] = args[0].detach(), out.detach()

    handle = module.register_forward_hook(hook)
    try:
        fn()
    finally:
        handle.remove()
    return seen


def _dropped_or_scaled(train, ref, p):
    """Each entry is 0 or ``ref / (1 - p)`` (inverted dropout), and both occur."""
    zero = train == 0
    torch.testing.assert_close(train[~zero], ref[~zero] / (1 - p))
    assert 0 < zero.float().mean() < 1


def test_dropout_places():
    torch.manual_seed(0)
    x = torch.randn(64, 3, 16)
    # attention_dropout: on each attention layer's output
    m = with_live_residuals(HyperSAGNN(16, 4, 2, attention_dropout=0.5))
    ref = _captured(m.layers[0], lambda: m.eval()(x))["out"]
    _dropped_or_scaled(_captured(m.layers[0], lambda: m.train()(x))["out"], ref, 0.5)
    # output_dropout: on (d - s)^2, the input of the output layer
    m = with_live_residuals(HyperSAGNN(16, 4, 2, output_dropout=0.25))
    ref = _captured(m.lin_out, lambda: m.eval()(x))["in"]
    _dropped_or_scaled(_captured(m.lin_out, lambda: m.train()(x))["in"], ref, 0.25)
    # projection_dropout: on d and s separately, so each entry of (d - s)^2 is one of four values
    m = with_live_residuals(HyperSAGNN(16, 4, 2, projection_dropout=0.5))
    with torch.no_grad():
        d, s = m.dynamic(x), torch.relu(m.static(x))
        got = _captured(m.lin_out, lambda: m.train()(x))["in"]
    options = torch.stack([(2 * d - 2 * s) ** 2, (2 * d) ** 2, (2 * s) ** 2, torch.zeros_like(d)])
    err = (options - got).abs().amin(0)
    assert err.max() < 1e-5
    assert ((got - (2 * d - 2 * s) ** 2).abs() > 1e-4).float().mean() > 0.3  # really dropped
    # feed_forward_dropout: between the two linear maps of each block
    m = with_live_residuals(HyperSAGNN(16, 4, 2, feed_forward=True, feed_forward_dropout=0.4))
    ref = _captured(m.ffn[0].lin2, lambda: m.eval()(x))["in"]
    _dropped_or_scaled(_captured(m.ffn[0].lin2, lambda: m.train()(x))["in"], ref, 0.4)


def test_dropout_values_are_checked():
    for name in ("attention_dropout", "projection_dropout", "output_dropout"):
        for bad in (1.0, -0.1):
            with pytest.raises(ValueError, match=name):
                HyperSAGNN(16, **{name: bad})
    with pytest.raises(ValueError, match="feed_forward_dropout"):
        HyperSAGNN(16, feed_forward=True, feed_forward_dropout=1.5)
    with pytest.raises(ValueError, match="needs feed_forward=True"):
        Dango(40, edge_types(make_graph()), hidden_channels=16, feed_forward_dropout=0.4)


# ---- feed-forward block ----------------------------------------------------------------------------

def test_feed_forward_formula_and_rezero_start():
    torch.manual_seed(0)
    block = FeedForward(8, dropout=0.0, activation="relu")
    x = torch.randn(4, 3, 8)
    assert torch.equal(block(x), x)  # beta = 0: identity at the start, as the other ReZero residuals
    with torch.no_grad():
        block.beta.fill_(0.5)
    ln = torch.nn.functional.layer_norm(x, (8,), block.norm.weight, block.norm.bias)
    expected = x + 0.5 * block.lin2(torch.relu(block.lin1(ln)))
    torch.testing.assert_close(block(x), expected)
    # inside the head: after each attention layer, d = ffn_l(beta_l * attn_l(d) + d)
    h = with_live_residuals(HyperSAGNN(8, 2, 2, feed_forward=True))
    d = x
    for i in range(2):
        d = h.ffn[i](h.beta[i] * h.layers[i](d) + d)
    torch.testing.assert_close(h.dynamic(x), d)
    plain = HyperSAGNN(8, 2, 2)
    plain.load_state_dict({k: v for k, v in h.state_dict().items() if not k.startswith("ffn.")})
    assert not torch.allclose(h(x), plain(x))


# ---- attention nonlinearity --------------------------------------------------------------------------

def test_attention_activation_is_the_spec_formula_and_changes_outputs():
    torch.manual_seed(0)
    att = TripletSelfAttention(8, num_heads=1, activation="tanh")
    x = torch.randn(5, 3, 8)
    # one head: d_hat_i = tanh(sum_{j != i} softmax_j(alpha_ij) W_V' x_j + b') with W_V' = W_O W_V
    wq, wk, wv = att.qkv.weight.split(8)
    bq, bk, bv = att.qkv.bias.split(8)
    q, k, v = x @ wq.T + bq, x @ wk.T + bk, x @ wv.T + bv
    logits = q @ k.transpose(1, 2) / math.sqrt(8)
    logits = logits.masked_fill(torch.eye(3, dtype=torch.bool), float("-inf"))
    expected = torch.tanh(torch.softmax(logits, -1) @ (v @ att.out.weight.T) + att.out.bias)
    torch.testing.assert_close(att(x), expected)
    linear = TripletSelfAttention(8, num_heads=1)
    linear.load_state_dict(att.state_dict())
    torch.testing.assert_close(att(x), torch.tanh(linear(x)))
    # in the head: same parameters, different scores
    torch.manual_seed(1)
    h = with_live_residuals(HyperSAGNN(16, 4, 2, attention_activation="tanh"))
    ref = HyperSAGNN(16, 4, 2)
    ref.load_state_dict(h.state_dict())
    x = torch.randn(6, 3, 16)
    assert not torch.allclose(h(x), ref(x))
    relu = HyperSAGNN(16, 4, 2, attention_activation="relu")
    relu.load_state_dict(h.state_dict())
    assert not torch.allclose(relu(x), h(x)) and not torch.allclose(relu(x), ref(x))


# ---- invariance and gradients over all switch combinations ---------------------------------------------

COMBOS = [dict(attention_dropout=a, projection_dropout=p, output_dropout=o, feed_forward=f,
               feed_forward_dropout=0.4 if f else 0.0, attention_activation=act)
          for a, p, o, f, act in itertools.product((0.0, 0.3), (0.0, 0.3), (0.0, 0.25), (False, True),
                                                   (None, "tanh"))]


def test_triplet_score_is_order_invariant_for_every_switch_combination():
    torch.manual_seed(0)
    x = torch.randn(7, 3, 16, dtype=torch.float64)
    for kw in COMBOS:
        h = with_live_residuals(HyperSAGNN(16, 4, 2, **kw)).double().eval()
        scores = [h(x[:, list(p)]) for p in itertools.permutations(range(3))]
        for s in scores[1:]:
            torch.testing.assert_close(s, scores[0], rtol=1e-12, atol=1e-12)
        assert scores[0].std() > 0, kw
    # through the whole model, with each preset
    g = make_graph(seed=4)
    trip = torch.tensor([[1, 5, 9], [2, 30, 17], [0, 0, 4]])
    for name in HYPERSAGNN_PRESETS:
        torch.manual_seed(0)
        m = with_live_residuals(Dango(40, edge_types(g), **hypersagnn_preset(name))).double().eval()
        scores = [m(g, trip[:, list(p)]).scores for p in itertools.permutations(range(3))]
        for s in scores[1:]:
            torch.testing.assert_close(s, scores[0], rtol=1e-12, atol=1e-12)


def test_gradients_reach_the_new_parameters():
    torch.manual_seed(0)
    x = torch.randn(8, 3, 16)
    h = HyperSAGNN(16, 4, 2, **COMBOS[-1]).train()
    h(x).sum().backward()
    for block in h.ffn:  # ReZero start: only beta sees a gradient, as for the attention layers
        assert block.beta.grad.abs().sum() > 0
        assert block.lin1.weight.grad.abs().sum() == 0
    h.zero_grad()
    with_live_residuals(h)(x).sum().backward()
    for name, p in h.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_original_preset_trains():
    g = make_graph(seed=8, version="11_0")
    torch.manual_seed(0)
    m = Dango(40, edge_types(g), **hypersagnn_preset("original"))
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    loss = DangoLoss({"coexpression": 0.1, "experimental": 1.0, "fusion": 1.0}, "PreThenPost", transition_epoch=0)
    trip = torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12]])
    y = torch.tensor([0.5, -1.0, 2.0, 0.0])
    m.eval()
    with torch.no_grad():
        first = loss(m(g, trip), y, 1).int.item()
    m.train()
    for _ in range(30):
        lo = loss(m(g, trip), y, 1)
        opt.zero_grad()
        lo.total.backward()
        opt.step()
    m.eval()
    with torch.no_grad():
        assert loss(m(g, trip), y, 1).int.item() < first
    assert any(block.beta.item() != 0 for block in m.hypersagnn.ffn)


# ---- presets and the keyword arguments as params keys ---------------------------------------------------

def test_presets():
    assert HYPERSAGNN_PRESETS["spec"] == dict(hidden_channels=64, num_heads=4, num_layers=2,
                                              attention_activation="tanh")
    assert HYPERSAGNN_PRESETS["original"] == dict(
        hidden_channels=128, num_heads=8, num_layers=1, attention_dropout=0.3, projection_dropout=0.3,
        output_dropout=0.25, feed_forward=True, feed_forward_dropout=0.4)
    p = hypersagnn_preset("original")
    p["hidden_channels"] = 7
    assert hypersagnn_preset("original")["hidden_channels"] == 128  # a copy
    with pytest.raises(ValueError, match="known: spec, original"):
        hypersagnn_preset("paper")
    sig = inspect.signature(Dango.__init__).parameters
    for preset in HYPERSAGNN_PRESETS.values():
        assert set(preset) <= set(sig)


def test_switches_are_plain_typed_dango_arguments_defaulting_to_off():
    sig = inspect.signature(Dango.__init__).parameters
    hints = typing.get_type_hints(Dango.__init__)
    for name, typ in SWITCHES.items():
        assert hints[name] == typ, name
        assert sig[name].default is not inspect.Parameter.empty, name
        assert sig[name].default in (0.0, False, None), name
    head = inspect.signature(HyperSAGNN.__init__).parameters
    for name in SWITCHES:
        assert head[name].default == sig[name].default
