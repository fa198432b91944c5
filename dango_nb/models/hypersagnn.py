"""Hyper-SAGNN head: scores a triplet of gene embeddings, invariant to the order of the genes.

The regularisation switches (dropout at three places, a feed-forward block) and the attention
nonlinearity are all off by default; off, the head is the same module, with the same parameters in
the same order and the same random draws at initialisation, as without them.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from dango_nb.models.pretrain import resolve_activation

__all__ = ["TripletSelfAttention", "FeedForward", "HyperSAGNN", "HYPERSAGNN_PRESETS", "hypersagnn_preset"]


def _dropout(name: str, p: float) -> nn.Module:
    """``nn.Dropout(p)``, or ``nn.Identity`` for ``p = 0`` so a switched-off dropout is not even a
    call in the graph."""
    p = float(p)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {p}")
    return nn.Dropout(p) if p > 0 else nn.Identity()


class TripletSelfAttention(nn.Module):
    r"""Multi-head self-attention inside each set of ``K`` genes where a gene attends to the others
    and never to itself (the diagonal of the attention matrix is masked out before the softmax):

    .. math::
        \hat d_i = \mathrm{Dropout}\Big(\sigma\Big(W_O \big\Vert_{h} \sum_{j \ne i}
        \mathrm{softmax}_j(\alpha^h_{ij}) W^h_V x_j + b_O\Big)\Big), \qquad
        \alpha^h_{ij} = \frac{(W^h_Q x_i)^\top W^h_K x_j}{\sqrt{H / \mathrm{heads}}}

    ``sigma`` is the identity unless ``activation`` is given: then, with one head, this is the
    summary spec's ``d_hat_i = sigma(sum_j softmax_j(alpha_ij) W_V E_j)`` (``W_O W_V`` acting as its
    ``W_V``); the original DANGO code, like the default here, stays linear.

    Args:
        hidden_channels (int): ``H`` (divisible by ``num_heads``).
        num_heads (int): heads.
        dropout (float): dropout on the output (the original code's 0.3 after the attention's output
            projection); 0 = none.
        activation (str, optional): ``sigma``; ``None`` = linear.

    Shapes:
        input: ``(B, K, H)``; output: ``(B, K, H)`` and, with ``return_attention``, the weights
        ``(B, heads, K, K)`` (zero diagonal).
    """

    def __init__(self, hidden_channels: int, num_heads: int = 4, dropout: float = 0.0,
                 activation: str | None = None):
        super().__init__()
        if hidden_channels % num_heads:
            raise ValueError(f"hidden_channels={hidden_channels} is not divisible by num_heads={num_heads}")
        self.hidden_channels, self.num_heads = int(hidden_channels), int(num_heads)
        self.head_dim = hidden_channels // num_heads
        self.qkv = nn.Linear(hidden_channels, 3 * hidden_channels)
        self.out = nn.Linear(hidden_channels, hidden_channels)
        self.act = resolve_activation(activation)
        self.dropout = _dropout("attention_dropout", dropout)
        self.reset_parameters()

    def reset_parameters(self):
        self.qkv.reset_parameters()
        self.out.reset_parameters()

    def forward(self, x: Tensor, return_attention: bool = False):
        b, k, h = x.shape
        if k < 2:
            raise ValueError("self-attention without the diagonal needs at least 2 genes per set")
        q, key, v = self.qkv(x).view(b, k, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        logits = q @ key.transpose(-1, -2) / math.sqrt(self.head_dim)  # (B, heads, K, K)
        eye = torch.eye(k, dtype=torch.bool, device=x.device)
        attn = torch.softmax(logits.masked_fill(eye, float("-inf")), dim=-1)
        out = self.dropout(self.act(self.out((attn @ v).transpose(1, 2).reshape(b, k, h))))
        return (out, attn) if return_attention else out


class FeedForward(nn.Module):
    r"""Position-wise feed-forward block with a pre-LayerNorm and a ReZero residual (its own
    learned scalar ``beta``), as the original DANGO code puts after its attention layer:

    .. math::
        x' = x + \beta \big(W_2 \, \mathrm{Dropout}(\mathrm{act}(W_1 \mathrm{LN}(x) + b_1)) + b_2\big)

    Args:
        hidden_channels (int): ``H`` (input, inner and output width, as in the original).
        dropout (float): dropout between the two linear maps (original: 0.4).
        activation (str): inner nonlinearity.
        beta_init (float): initial ``beta`` (0 = start as identity, as in the original).

    Shapes:
        input: ``(..., H)``; output: ``(..., H)``.
    """

    def __init__(self, hidden_channels: int, dropout: float = 0.0, activation: str = "relu",
                 beta_init: float = 0.0):
        super().__init__()
        self.beta_init = float(beta_init)
        self.norm = nn.LayerNorm(hidden_channels)
        self.lin1 = nn.Linear(hidden_channels, hidden_channels)
        self.act = resolve_activation(activation)
        self.dropout = _dropout("feed_forward_dropout", dropout)
        self.lin2 = nn.Linear(hidden_channels, hidden_channels)
        self.beta = nn.Parameter(torch.empty(1))
        self.reset_parameters()

    def reset_parameters(self):
        self.norm.reset_parameters()
        self.lin1.reset_parameters()
        self.lin2.reset_parameters()
        with torch.no_grad():
            self.beta.fill_(self.beta_init)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.beta * self.lin2(self.dropout(self.act(self.lin1(self.norm(x)))))


class HyperSAGNN(nn.Module):
    r"""Static embedding ``s_i = act(W_s E_i + b)``; dynamic embedding from ``num_layers`` layers of
    :class:`TripletSelfAttention` with ReZero residuals ``d = beta * attn(d) + d`` (one learned scalar
    ``beta`` per layer, initialised to ``beta_init``), each optionally followed by a
    :class:`FeedForward` block; per gene ``y_i = Linear((d_i - s_i)^2)``; triplet score = mean of the
    three:

    .. math::
        y_i = w^\top \mathrm{Drop}_{out}\big((\mathrm{Drop}_{proj}(d_i) - \mathrm{Drop}_{proj}(s_i))^2\big) + b,
        \qquad \mathrm{score} = \tfrac{1}{3} \textstyle\sum_i y_i

    Switches (all off by default; the summary spec and TorchCell's DANGO (2 layers, 4 heads, linear
    attention output, ReZero) have none of the dropouts or the feed-forward block, the original
    DANGO code has all of them):

    - ``attention_dropout``: on each attention layer's output, before the residual (original: 0.3).
    - ``projection_dropout``: on the dynamic and static embeddings, the outputs of the two branches
      (original: 0.3 after its dynamic and static projections).
    - ``output_dropout``: on ``(d_i - s_i)^2`` before the output layer (original: 0.25).
    - ``feed_forward`` / ``feed_forward_dropout``: a :class:`FeedForward` block after each attention
      layer (original: one, dropout 0.4, ReZero scaled, LayerNorm).
    - ``attention_activation``: ``sigma`` on the attention output (summary spec; the original code
      and the default are linear).

    :data:`HYPERSAGNN_PRESETS` holds the spec's and the original's settings.

    Args:
        hidden_channels (int): ``H``.
        num_heads (int): attention heads.
        num_layers (int): stacked attention layers.
        beta_init (float): initial ReZero ``beta`` (0 = start as identity), also of the feed-forward
            blocks.
        activation (str): static-embedding and feed-forward nonlinearity.
        attention_dropout (float): see above; 0 = off.
        projection_dropout (float): see above; 0 = off.
        output_dropout (float): see above; 0 = off.
        feed_forward (bool): add the feed-forward blocks (``2H^2 + 4H + 1`` parameters per layer).
        feed_forward_dropout (float): their inner dropout (needs ``feed_forward``).
        attention_activation (str, optional): ``sigma`` name (``"tanh"``, ``"relu"``, ...); ``None``
            = linear.

    Shapes:
        input: ``(B, 3, H)`` gene embeddings of each triplet; output: ``(B,)`` scores.
    """

    def __init__(self, hidden_channels: int, num_heads: int = 4, num_layers: int = 2,
                 beta_init: float = 0.0, activation: str = "relu", attention_dropout: float = 0.0,
                 projection_dropout: float = 0.0, output_dropout: float = 0.0, feed_forward: bool = False,
                 feed_forward_dropout: float = 0.0, attention_activation: str | None = None):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if feed_forward_dropout and not feed_forward:
            raise ValueError(f"feed_forward_dropout={feed_forward_dropout} needs feed_forward=True")
        self.hidden_channels = int(hidden_channels)
        self.beta_init = float(beta_init)
        self.static = nn.Linear(hidden_channels, hidden_channels)
        self.act = resolve_activation(activation)
        self.layers = nn.ModuleList(
            TripletSelfAttention(hidden_channels, num_heads, attention_dropout, attention_activation)
            for _ in range(num_layers))
        self.beta = nn.Parameter(torch.empty(num_layers))
        self.lin_out = nn.Linear(hidden_channels, 1)
        # created after everything else so that, switched off, the random draws at init are unchanged
        self.ffn = nn.ModuleList(FeedForward(hidden_channels, feed_forward_dropout, activation, beta_init)
                                 for _ in range(num_layers)) if feed_forward else None
        self.projection_dropout = _dropout("projection_dropout", projection_dropout)
        self.output_dropout = _dropout("output_dropout", output_dropout)
        self.reset_parameters()

    def reset_parameters(self):
        self.static.reset_parameters()
        for layer in self.layers:
            layer.reset_parameters()
        self.lin_out.reset_parameters()
        if self.ffn is not None:
            for block in self.ffn:
                block.reset_parameters()
        with torch.no_grad():
            self.beta.fill_(self.beta_init)

    def dynamic(self, x: Tensor) -> Tensor:
        """``(B, K, H)`` -> dynamic embeddings ``(B, K, H)`` (before ``projection_dropout``)."""
        d = x
        for i, (beta, layer) in enumerate(zip(self.beta, self.layers)):
            d = beta * layer(d) + d
            if self.ffn is not None:
                d = self.ffn[i](d)
        return d

    def gene_scores(self, x: Tensor) -> Tensor:
        """Per-gene scores ``y_i`` ``(B, K)``."""
        s = self.projection_dropout(self.act(self.static(x)))
        d = self.projection_dropout(self.dynamic(x))
        return self.lin_out(self.output_dropout((d - s) ** 2)).squeeze(-1)

    def forward(self, x: Tensor) -> Tensor:
        return self.gene_scores(x).mean(-1)


# keyword arguments of :class:`~dango_nb.models.Dango` (and of HyperSAGNN, but for gene_num/edge_types)
HYPERSAGNN_PRESETS: dict[str, dict] = {
    # the summary spec DANGO users work from: d = 64 (or 128), 4 heads, 2 layers, a nonlinearity on the
    # attention output (the spec does not name it; tanh), no dropout, no feed-forward block
    "spec": dict(hidden_channels=64, num_heads=4, num_layers=2, attention_activation="tanh"),
    # the original DANGO code's Hyper-SAGNN: d = 128, 8 heads, one attention layer, dropout 0.3 after
    # attention and projections, a feed-forward block with dropout 0.4, dropout 0.25 before the output
    "original": dict(hidden_channels=128, num_heads=8, num_layers=1, attention_dropout=0.3,
                     projection_dropout=0.3, output_dropout=0.25, feed_forward=True, feed_forward_dropout=0.4),
}


def hypersagnn_preset(name: str) -> dict:
    """A copy of the named preset's keyword arguments, for ``Dango(gene_num, edge_types, **preset)``
    (keys not given keep ``Dango``'s defaults)."""
    if name not in HYPERSAGNN_PRESETS:
        raise ValueError(f"unknown Hyper-SAGNN preset {name!r}; known: {', '.join(HYPERSAGNN_PRESETS)}")
    return dict(HYPERSAGNN_PRESETS[name])
