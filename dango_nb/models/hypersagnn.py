"""Hyper-SAGNN head: scores a triplet of gene embeddings, invariant to the order of the genes."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from dango_nb.models.pretrain import resolve_activation

__all__ = ["TripletSelfAttention", "HyperSAGNN"]


class TripletSelfAttention(nn.Module):
    """Multi-head self-attention inside each set of ``K`` genes where a gene attends to the others
    and never to itself (the diagonal of the attention matrix is masked out before the softmax).

    Args:
        hidden_channels (int): ``H`` (divisible by ``num_heads``).
        num_heads (int): heads.

    Shapes:
        input: ``(B, K, H)``; output: ``(B, K, H)`` and, with ``return_attention``, the weights
        ``(B, heads, K, K)`` (zero diagonal).
    """

    def __init__(self, hidden_channels: int, num_heads: int = 4):
        super().__init__()
        if hidden_channels % num_heads:
            raise ValueError(f"hidden_channels={hidden_channels} is not divisible by num_heads={num_heads}")
        self.hidden_channels, self.num_heads = int(hidden_channels), int(num_heads)
        self.head_dim = hidden_channels // num_heads
        self.qkv = nn.Linear(hidden_channels, 3 * hidden_channels)
        self.out = nn.Linear(hidden_channels, hidden_channels)
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
        out = self.out((attn @ v).transpose(1, 2).reshape(b, k, h))
        return (out, attn) if return_attention else out


class HyperSAGNN(nn.Module):
    """Static embedding ``s_i = act(W_s E_i + b)``; dynamic embedding from ``num_layers`` layers of
    :class:`TripletSelfAttention` with ReZero residuals ``d = beta * attn(d) + d`` (one learned scalar
    ``beta`` per layer, initialised to ``beta_init``); per gene ``y_i = Linear((d_i - s_i)^2)``;
    triplet score = mean of the three.

    Args:
        hidden_channels (int): ``H``.
        num_heads (int): attention heads.
        num_layers (int): stacked attention layers.
        beta_init (float): initial ReZero ``beta`` (0 = start as identity).
        activation (str): static-embedding nonlinearity.

    Shapes:
        input: ``(B, 3, H)`` gene embeddings of each triplet; output: ``(B,)`` scores.
    """

    def __init__(self, hidden_channels: int, num_heads: int = 4, num_layers: int = 2,
                 beta_init: float = 0.0, activation: str = "relu"):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.hidden_channels = int(hidden_channels)
        self.beta_init = float(beta_init)
        self.static = nn.Linear(hidden_channels, hidden_channels)
        self.act = resolve_activation(activation)
        self.layers = nn.ModuleList(TripletSelfAttention(hidden_channels, num_heads)
                                    for _ in range(num_layers))
        self.beta = nn.Parameter(torch.empty(num_layers))
        self.lin_out = nn.Linear(hidden_channels, 1)
        self.reset_parameters()

    def reset_parameters(self):
        self.static.reset_parameters()
        for layer in self.layers:
            layer.reset_parameters()
        self.lin_out.reset_parameters()
        with torch.no_grad():
            self.beta.fill_(self.beta_init)

    def dynamic(self, x: Tensor) -> Tensor:
        """``(B, K, H)`` -> dynamic embeddings ``(B, K, H)``."""
        d = x
        for beta, layer in zip(self.beta, self.layers):
            d = beta * layer(d) + d
        return d

    def gene_scores(self, x: Tensor) -> Tensor:
        """Per-gene scores ``y_i`` ``(B, K)``."""
        s = self.act(self.static(x))
        return self.lin_out((self.dynamic(x) - s) ** 2).squeeze(-1)

    def forward(self, x: Tensor) -> Tensor:
        return self.gene_scores(x).mean(-1)
