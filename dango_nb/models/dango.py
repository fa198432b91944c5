"""DANGO: per-channel GNN embeddings -> meta embedding -> Hyper-SAGNN triplet score."""

from __future__ import annotations

import contextlib
import inspect
import math
import typing
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import torch
from torch import Tensor, nn

from dango_nb.errors import shown
from dango_nb.models.sparse import SparseRows
from dango_nb.models.hypersagnn import HyperSAGNN
from dango_nb.models.meta import MetaEmbedding
from dango_nb.models.pretrain import DangoPreTrain, EdgeType, GraphInputs, resolve_activation

__all__ = ["DangoOutput", "Dango", "eval_mode"]

#: Triplets scored per Hyper-SAGNN call in :meth:`Dango.predict`.
PREDICT_BATCH_SIZE = 4096


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """``module.eval()`` inside the block, then the module's previous mode again (also on errors)."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


@dataclass
class DangoOutput:
    """One forward pass.

    Attributes:
        scores: ``(B,)`` triplet scores, or ``None`` when no triplets were given.
        channel_embeddings: edge type -> ``(N, H)`` layer-2 embeddings of all genes; with
            ``forward(..., local=True)`` ``(G, H)``, the genes ``embedding_rows`` only.
        integrated: ``(N, H)`` meta embeddings; meta_weights: ``(N, C)`` channel weights
            (columns in ``Dango.edge_types`` order); both ``(G, H)`` / ``(G, C)`` when local.
        recon_rows: ``(R,)`` genes whose adjacency rows the reconstruction loss uses (default: the
            unique genes of the batch); empty, with the three dicts below, when the forward was
            called with ``reconstruction=False``.
        recon_embeddings: edge type -> ``(R, H)`` layer-2 embeddings of those rows.
        recon_heads: edge type -> the ``nn.Linear`` head (weight ``(N, H)``, bias ``(N,)``).
        recon_targets: edge type -> :class:`~dango_nb.losses.SparseRows` (row ``k`` = gene
            ``recon_rows[k]``'s weighted adjacency row).
        embedding_rows: ``None`` when the embeddings above cover all ``N`` genes (row = gene id);
            with ``local=True`` (training steps) the ``(G,)`` sorted gene ids that row ``k`` of
            ``channel_embeddings``/``integrated``/``meta_weights`` belongs to: the unique genes of
            the triplets and ``recon_rows``. Use :meth:`Dango.embed` for all genes.
    """

    scores: Tensor | None
    channel_embeddings: dict[EdgeType, Tensor]
    integrated: Tensor
    meta_weights: Tensor
    recon_rows: Tensor
    recon_embeddings: dict[EdgeType, Tensor]
    recon_heads: dict[EdgeType, nn.Linear]
    recon_targets: dict[EdgeType, SparseRows]
    embedding_rows: Tensor | None = None

    def reconstructions(self) -> dict[EdgeType, Tensor]:
        """Dense ``(R, N)`` reconstructions of the rows (plots/AUROC; not used by the loss)."""
        return {et: self.recon_heads[et](z) for et, z in self.recon_embeddings.items()}


class Dango(nn.Module):
    """The DANGO model.

    Args:
        gene_num (int): ``N``.
        edge_types: channel edge types of the cell graph.
        hidden_channels (int): ``H`` (64 as in TorchCell, 128 as in the paper).
        num_heads (int): Hyper-SAGNN heads (4 or 8).
        num_layers (int): Hyper-SAGNN attention layers.
        beta_init (float): initial ReZero ``beta``.
        activation (str): nonlinearity used throughout.
        meta_embedding (str): ``"attention"`` or ``"mean"`` (ablation).
        batched (bool): run the channel GNNs as one batched graph.
        attention_dropout, projection_dropout, output_dropout (float), feed_forward (bool),
        feed_forward_dropout (float), attention_activation (str, optional): Hyper-SAGNN switches,
            all off by default (see :class:`HyperSAGNN`; presets in :data:`HYPERSAGNN_PRESETS`).

    ``forward(graph, triplet_indices (B, 3), recon_rows=None, reconstruction=True, local=False) ->
    DangoOutput``; ``graph`` is a ``HeteroData`` (its sparse inputs are built once and cached on the
    model for that graph object: call :meth:`clear_cache` after editing a graph in place) or
    :class:`GraphInputs` from :meth:`prepare`. The GNN stage runs once per call, over all genes, or
    with ``local=True`` (what training steps use) only for the genes the call needs
    (:meth:`DangoPreTrain.forward_rows`): same scores, losses and gradients, cost scaling with the
    batch. Measured on the ``kuzmin`` preset (6,400 genes, batch 256, CPU): one training epoch took
    45.7 CPU-s over all genes and 22.8 s with ``local=True``; the full path stays the reference the
    equivalence tests compare against.
    """

    def __init__(self, gene_num: int, edge_types, hidden_channels: int = 64, num_heads: int = 4,
                 num_layers: int = 2, beta_init: float = 0.0, activation: str = "relu",
                 meta_embedding: str = "attention", batched: bool = True, attention_dropout: float = 0.0,
                 projection_dropout: float = 0.0, output_dropout: float = 0.0, feed_forward: bool = False,
                 feed_forward_dropout: float = 0.0, attention_activation: str | None = None):
        super().__init__()
        self.pretrain = DangoPreTrain(gene_num, edge_types, hidden_channels, activation, batched)
        self.meta = MetaEmbedding(hidden_channels, meta_embedding, activation=activation)
        self.hypersagnn = HyperSAGNN(
            hidden_channels, num_heads, num_layers, beta_init, activation, attention_dropout=attention_dropout,
            projection_dropout=projection_dropout, output_dropout=output_dropout, feed_forward=feed_forward,
            feed_forward_dropout=feed_forward_dropout, attention_activation=attention_activation)
        self._cache: tuple | None = None

    @property
    def edge_types(self) -> list[EdgeType]:
        return self.pretrain.edge_types

    @property
    def gene_num(self) -> int:
        return self.pretrain.gene_num

    def reset_parameters(self):
        self.pretrain.reset_parameters()
        self.meta.reset_parameters()
        self.hypersagnn.reset_parameters()

    def prepare(self, cell_graph) -> GraphInputs:
        """Sparse graph inputs on the model's device; cached for the last graph object seen."""
        if isinstance(cell_graph, GraphInputs):
            return cell_graph
        w = self.pretrain.embedding.weight
        key = (w.device, w.dtype)
        if self._cache is not None and self._cache[0] is cell_graph and self._cache[1] == key:
            return self._cache[2]
        inputs = self.pretrain.prepare(cell_graph)
        self._cache = (cell_graph, key, inputs)
        return inputs

    def clear_cache(self):
        self._cache = None

    def __getstate__(self):  # keep the graph cache out of pickles and deep copies
        state = self.__dict__.copy()
        state["_cache"] = None
        return state

    #: Upper bounds of the integer sizes: beyond them one model would not fit in any memory.
    MAX_SIZES = {"hidden_channels": 16384, "num_heads": 1024, "num_layers": 256}

    @classmethod
    def hyperparameters(cls) -> dict[str, inspect.Parameter]:
        """The keyword arguments of ``__init__`` a configuration may set (all but ``gene_num`` and
        ``edge_types``), by name."""
        return {name: p for name, p in inspect.signature(cls.__init__).parameters.items()
                if name not in ("self", "gene_num", "edge_types")}

    @classmethod
    def check_hyperparameters(cls, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Validate ``kwargs`` against ``__init__``'s signature and annotated types before any
        model is built; ``ValueError`` names the key. Returns a plain dict copy."""
        params = cls.hyperparameters()
        hints = typing.get_type_hints(cls.__init__)
        for key, value in kwargs.items():
            if key not in params:
                raise ValueError(f"{key}: unknown key; Dango takes {', '.join(params)}")
            tp = hints[key]
            args = typing.get_args(tp)
            if type(None) in args:  # ``X | None``: None or a value of X
                if value is None:
                    continue
                tp = next(a for a in args if a is not type(None))
            if tp is bool:
                ok = isinstance(value, bool)
                expected = "true or false"
            elif tp is int:
                most = cls.MAX_SIZES.get(key)
                ok = isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= (most or value)
                expected = "an integer >= 1" if most is None else f"an integer from 1 to {most}"
            elif tp is float and key.endswith("dropout"):
                ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1
                expected = "a probability in [0, 1)"
            elif tp is float:
                ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                expected = "a finite number"
            else:
                ok = isinstance(value, tp)
                expected = f"a {tp.__name__}"
            if not ok:
                raise ValueError(f"{key}: expected {expected}, got {shown(value)}")
        merged = {name: p.default for name, p in params.items()} | dict(kwargs)
        try:
            resolve_activation(merged["activation"])
        except ValueError:
            raise ValueError(f"activation: expected a torch activation name such as 'relu', 'gelu' or "
                             f"'tanh', got {merged['activation']!r}") from None
        if merged.get("attention_activation") is not None:
            try:
                resolve_activation(merged["attention_activation"])
            except ValueError:
                raise ValueError(f"attention_activation: expected null or a torch activation name such as "
                                 f"'tanh', got {merged['attention_activation']!r}") from None
        if merged["meta_embedding"] not in MetaEmbedding.MODES:
            raise ValueError(f"meta_embedding: expected one of {', '.join(MetaEmbedding.MODES)}, "
                             f"got {merged['meta_embedding']!r}")
        if merged["hidden_channels"] % merged["num_heads"]:
            raise ValueError(f"hidden_channels: {merged['hidden_channels']} is not divisible by "
                             f"num_heads={merged['num_heads']}")
        return dict(kwargs)

    def embed(self, graph) -> tuple[dict[EdgeType, Tensor], Tensor, Tensor]:
        """Channel embeddings, integrated ``(N, H)`` and meta weights ``(N, C)`` of all genes."""
        inputs = self.prepare(graph)
        emb = self.pretrain(inputs)
        integrated, weights = self.meta(torch.stack([emb[et] for et in self.edge_types]))
        return emb, integrated, weights

    def score(self, integrated: Tensor, triplet_indices: Tensor) -> Tensor:
        """Scores ``(B,)`` of triplets ``(B, 3)`` from integrated embeddings ``(N, H)`` (so prediction
        can embed once and score many batches)."""
        idx = triplet_indices.to(device=integrated.device, dtype=torch.long)
        if idx.dim() != 2 or idx.size(1) != 3:
            raise ValueError(f"triplet_indices must be (B, 3), got {tuple(idx.shape)}")
        return self.hypersagnn(integrated[idx])

    def embeddings(self, graph) -> Tensor:
        """Integrated embeddings ``(N, H)`` of all genes, eval mode, no autograd."""
        inputs = self.prepare(graph)  # outside inference mode: the cached inputs stay trainable
        with eval_mode(self), torch.inference_mode():
            return self.embed(inputs)[1]

    def predict(self, graph, triplet_indices: Tensor, batch_size: int = PREDICT_BATCH_SIZE,
                embeddings: Tensor | None = None) -> Tensor:
        """Scores ``(M,)`` (the standardised scale the model was trained on) of triplets ``(M, 3)``.

        Eval mode and no autograd; the GNN stage and the meta embedding run once (or not at all
        when ``embeddings`` from :meth:`embeddings` are given), the Hyper-SAGNN head over chunks of
        ``batch_size`` triplets, so memory is bounded by the chunk.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if triplet_indices.dim() != 2 or triplet_indices.size(1) != 3:
            raise ValueError(f"triplet_indices must be (M, 3), got {tuple(triplet_indices.shape)}")
        integrated = self.embeddings(graph) if embeddings is None else embeddings
        with eval_mode(self), torch.inference_mode():
            out = [self.score(integrated, triplet_indices[s:s + batch_size])
                   for s in range(0, triplet_indices.size(0), batch_size)]
        return torch.cat(out) if out else integrated.new_zeros(0)

    def forward(self, graph, triplet_indices: Tensor | None = None, recon_rows: Tensor | None = None,
                reconstruction: bool = True, local: bool = False) -> DangoOutput:
        """Args:
            graph: ``HeteroData`` cell graph or :class:`GraphInputs`.
            triplet_indices: ``(B, 3)`` long gene indices, or ``None`` (reconstruction only).
            recon_rows: ``(R,)`` genes for the reconstruction loss; default the unique genes of
                ``triplet_indices``, or all genes when there are no triplets.
            reconstruction: ``False`` leaves the reconstruction fields empty (prediction, or epochs
                whose reconstruction weight is 0).
            local: embed only the genes this call uses (``DangoOutput.embedding_rows``); the
                scores and reconstruction fields are the same as without it.
        """
        inputs = self.prepare(graph)
        device = self.pretrain.embedding.weight.device
        idx = None
        if triplet_indices is not None:
            idx = triplet_indices.to(device=device, dtype=torch.long)
            if idx.dim() != 2 or idx.size(1) != 3:
                raise ValueError(f"triplet_indices must be (B, 3), got {tuple(idx.shape)}")
        default_rows = reconstruction and recon_rows is None and idx is not None
        if not reconstruction:
            recon_rows = torch.zeros(0, dtype=torch.long, device=device)
        elif recon_rows is None:
            recon_rows = torch.unique(idx) if idx is not None else torch.arange(self.gene_num, device=device)
        recon_rows = recon_rows.to(device=device, dtype=torch.long).reshape(-1)

        if local:
            used = recon_rows if idx is None else torch.cat([idx.reshape(-1), recon_rows])
            if default_rows:  # the genes are recon_rows (sorted, unique): no second unique (a host sync on CUDA)
                genes, inverse = recon_rows, torch.searchsorted(recon_rows, used)
            else:
                genes, inverse = torch.unique(used, return_inverse=True)
            stacked = self.pretrain(inputs, genes)  # (C, G, H), forward_rows
            integrated, weights = self.meta(stacked)
            emb = dict(zip(self.edge_types, stacked.unbind(0)))
            n_idx = 0 if idx is None else idx.numel()
            scores = None if idx is None else self.hypersagnn(integrated[inverse[:n_idx].view(-1, 3)])
            recon_pos = inverse[n_idx:]
        else:
            genes = None
            emb, integrated, weights = self.embed(inputs)
            scores = None if idx is None else self.hypersagnn(integrated[idx])
            recon_pos = recon_rows
        if not reconstruction:
            return DangoOutput(scores, emb, integrated, weights, recon_rows, {}, {}, {}, genes)
        return DangoOutput(
            scores=scores,
            channel_embeddings=emb,
            integrated=integrated,
            meta_weights=weights,
            recon_rows=recon_rows,
            recon_embeddings={et: emb[et][recon_pos] for et in self.edge_types},
            recon_heads={et: self.pretrain.head(et) for et in self.edge_types},
            recon_targets=inputs.target_rows_all(recon_rows),
            embedding_rows=genes,
        )
