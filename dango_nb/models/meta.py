"""Meta embedding: integrates the per-channel gene embeddings into one per gene."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dango_nb.models.pretrain import resolve_activation

__all__ = ["MetaEmbedding"]


class MetaEmbedding(nn.Module):
    """Per gene, score each channel's embedding with ``Linear(H, H') - act - Linear(H', 1)``, softmax
    over channels, and take the weighted sum (``mode="attention"``); or the plain average
    (``mode="mean"``, the ablation).

    Args:
        hidden_channels (int): ``H``.
        mode (str): ``"attention"`` or ``"mean"``.
        meta_hidden (int, optional): ``H'`` of the scoring MLP (default ``H``).
        activation (str): MLP nonlinearity.

    Shapes:
        input: ``(C, N, H)`` tensor (or a sequence of ``C`` tensors ``(N, H)``)
        output: ``integrated (N, H)``, ``weights (N, C)`` (rows sum to 1)
    """

    MODES = ("attention", "mean")

    def __init__(self, hidden_channels: int, mode: str = "attention", meta_hidden: int | None = None,
                 activation: str = "relu"):
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"meta embedding mode must be 'attention' or 'mean', got {mode!r}")
        self.mode = mode
        self.hidden_channels = int(hidden_channels)
        if mode == "attention":
            mh = int(meta_hidden or hidden_channels)
            self.score = nn.Sequential(nn.Linear(hidden_channels, mh), resolve_activation(activation),
                                       nn.Linear(mh, 1))
        else:
            self.score = None
        self.reset_parameters()

    def reset_parameters(self):
        if self.score is not None:
            for m in self.score:
                if hasattr(m, "reset_parameters"):
                    m.reset_parameters()

    def forward(self, xs) -> tuple[Tensor, Tensor]:
        x = xs if isinstance(xs, Tensor) else torch.stack(list(xs))  # (C, N, H)
        c, n, _ = x.shape
        if self.mode == "mean":
            return x.mean(0), x.new_full((n, c), 1.0 / c)
        w = torch.softmax(self.score(x).squeeze(-1), dim=0)  # (C, N)
        return (w.unsqueeze(-1) * x).sum(0), w.t()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.hidden_channels}, mode={self.mode!r})"
