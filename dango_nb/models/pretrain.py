"""Per-channel GraphSAGE encoders with adjacency-row reconstruction heads (DANGO's pre-training
model).

Edge weights count: each layer aggregates the weighted mean ``(1/deg_i) * sum_j w_ij x_j`` (PyG's
``SAGEConv`` with a weighted sparse ``adj_t`` and ``aggr="mean"``, whose ``spmm`` divides by the
number of neighbours). The six channels run either one by one through the ``SAGEConv`` modules
(``batched=False``, the reference) or as one batched graph (``batched=True``, default): one sparse
product over all channels stacked as ``C * N`` nodes, then each channel's own ``SAGEConv`` weights
applied with ``torch.bmm``. Both give the same numbers (tested).

The sparse matrices are built once per cell graph by :meth:`DangoPreTrain.prepare` (a
:class:`GraphInputs`), never per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch_geometric.nn import SAGEConv
from torch_geometric.nn.resolver import activation_resolver

from dango_nb.models.sparse import SparseRows, gather_rows, gather_rows_many, quiet_sparse

__all__ = ["EdgeType", "normalize_edge_types", "resolve_activation", "GraphInputs", "prepare_graph",
           "DangoPreTrain"]

EdgeType = tuple[str, str, str]


def resolve_activation(name) -> nn.Module:
    """A nonlinearity module from a PyG activation name (``"relu"``, ``"gelu"``, ``"tanh"``, ...);
    ``"identity"``/``None`` give ``nn.Identity``."""
    if name is None or (isinstance(name, str) and name.lower() in ("identity", "linear", "none")):
        return nn.Identity()
    if isinstance(name, nn.Module):
        return name
    return activation_resolver(name)


def normalize_edge_types(edge_types) -> list[EdgeType]:
    """Accept ``("gene", rel, "gene")`` tuples or bare relation names; return tuples."""
    out = []
    for et in edge_types:
        if isinstance(et, str):
            et = ("gene", et, "gene")
        et = tuple(et)
        if len(et) != 3:
            raise ValueError(f"edge type must be (src, rel, dst) or a relation name, got {et!r}")
        out.append(et)
    if not out:
        raise ValueError("at least one edge type is needed")
    if len(set(out)) != len(out):
        raise ValueError(f"duplicate edge types in {out!r}")
    return out


# Sparse products run in float32 under CUDA autocast (bf16 runs): cuSPARSE takes no mixed
# bfloat16/float32 operands; backward runs in the forward's autocast state.
_FP32_FWD = torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)
_BWD = torch.amp.custom_bwd(device_type="cuda")


class _SpMM(torch.autograd.Function):
    """``A @ X`` for a CSR ``A`` whose transpose ``At`` is precomputed (backward = ``At @ G``)."""

    @staticmethod
    @_FP32_FWD
    def forward(ctx, a: Tensor, at: Tensor, x: Tensor) -> Tensor:
        ctx.at = at
        return torch.sparse.mm(a, x)

    @staticmethod
    @_BWD
    def backward(ctx, grad: Tensor):
        gx = torch.sparse.mm(ctx.at, grad.contiguous()) if ctx.needs_input_grad[2] else None
        return None, None, gx


class _SpMMRows(torch.autograd.Function):
    """``(A @ X)[rows]`` for the CSR ``A`` with precomputed ``At`` and distinct ``rows``: the backward
    copies the gradient into its rows (no accumulating scatter, which is slow on CPU) then ``At @ G``."""

    @staticmethod
    @_FP32_FWD
    def forward(ctx, a: Tensor, at: Tensor, x: Tensor, rows: Tensor) -> Tensor:
        ctx.at, ctx.num_rows = at, a.size(0)
        ctx.save_for_backward(rows)
        return torch.sparse.mm(a, x)[rows]

    @staticmethod
    @_BWD
    def backward(ctx, grad: Tensor):
        if not ctx.needs_input_grad[2]:
            return None, None, None, None
        (rows,) = ctx.saved_tensors
        full = grad.new_zeros(ctx.num_rows, grad.size(1)).index_copy_(0, rows, grad)
        return None, None, torch.sparse.mm(ctx.at, full), None


class _RowSpMM(torch.autograd.Function):
    """``A @ X`` for a small CSR ``A`` built per step (a row slice); the backward builds ``A^T`` by one
    stable sort of its ``nnz`` column indices (cheaper than torch's generic CSR transpose here)."""

    @staticmethod
    @_FP32_FWD
    def forward(ctx, crow: Tensor, col: Tensor, val: Tensor, x: Tensor) -> Tensor:
        with quiet_sparse():
            a = torch.sparse_csr_tensor(crow, col, val, (crow.numel() - 1, x.size(0)))
        ctx.save_for_backward(crow, col, val)
        ctx.num_cols = x.size(0)
        return torch.sparse.mm(a, x)

    @staticmethod
    @_BWD
    def backward(ctx, grad: Tensor):
        if not ctx.needs_input_grad[3]:
            return None, None, None, None
        crow, col, val = ctx.saved_tensors
        n_rows, n_cols = crow.numel() - 1, ctx.num_cols
        row = torch.repeat_interleave(torch.arange(n_rows, device=crow.device), crow.diff(), output_size=col.numel())
        order = torch.argsort(col, stable=True)
        counts = torch.bincount(col, minlength=n_cols)
        crow_t = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])
        with quiet_sparse():
            at = torch.sparse_csr_tensor(crow_t, row[order], val[order], (n_cols, n_rows))
        return None, None, None, torch.sparse.mm(at, grad.contiguous())


def _csr(row: Tensor, col: Tensor, val: Tensor, size: tuple[int, int]) -> Tensor:
    with quiet_sparse():
        return torch.sparse_coo_tensor(torch.stack([row, col]), val, size).coalesce().to_sparse_csr()


@dataclass
class GraphInputs:
    """Sparse matrices for one cell graph, built once (:func:`prepare_graph`).

    Attributes:
        num_nodes: ``N``.
        edge_types: channel order (``C`` of them).
        adj: edge type -> ``(N, N)`` CSR weighted adjacency (``adj[i, j] = w`` for the edge
            ``j -> i``; symmetric for STRING). Row ``g`` is gene ``g``'s reconstruction target and
            the ``adj_t`` passed to ``SAGEConv``.
        stacked, stacked_t: ``(C*N, N)`` degree-normalised adjacencies stacked vertically (first layer,
            all channels share the input) and its transpose.
        block, block_t: ``(C*N, C*N)`` block-diagonal degree-normalised adjacency (second layer) and
            its transpose.
    """

    num_nodes: int
    edge_types: list[EdgeType]
    adj: dict[EdgeType, Tensor]
    stacked: Tensor
    stacked_t: Tensor
    block: Tensor
    block_t: Tensor

    @property
    def device(self) -> torch.device:
        return self.stacked.device

    @property
    def dtype(self) -> torch.dtype:
        return self.stacked.dtype

    def to(self, device) -> "GraphInputs":
        return GraphInputs(self.num_nodes, list(self.edge_types),
                           {k: v.to(device) for k, v in self.adj.items()},
                           self.stacked.to(device), self.stacked_t.to(device),
                           self.block.to(device), self.block_t.to(device))

    def target_rows(self, edge_type: EdgeType, rows: Tensor) -> SparseRows:
        """Reconstruction targets: rows ``rows`` (R,) of ``edge_type``'s adjacency."""
        return gather_rows(self.adj[edge_type], rows)

    def target_rows_all(self, rows: Tensor) -> dict[EdgeType, SparseRows]:
        """:meth:`target_rows` of every channel, with one host read for all their sizes (one per
        channel otherwise: each is a device sync on CUDA)."""
        return dict(zip(self.edge_types, gather_rows_many([self.adj[et] for et in self.edge_types], rows)))


def prepare_graph(cell_graph, edge_types, device=None, dtype: torch.dtype = torch.float32) -> GraphInputs:
    """Build :class:`GraphInputs` from a ``HeteroData`` cell graph (``["gene"].num_nodes`` and per
    edge type ``edge_index`` (2, 2E) and ``edge_weight`` (2E,)), with values of ``dtype`` on ``device``.
    """
    edge_types = normalize_edge_types(edge_types)
    n = int(cell_graph["gene"].num_nodes)
    available = set(cell_graph.edge_types)
    dev = torch.device(device) if device is not None else None
    adj, rows_s, cols_s, vals_s, cols_b = {}, [], [], [], []
    for c, et in enumerate(edge_types):
        if et not in available:
            raise KeyError(f"cell graph has no edge type {et!r}; it has {sorted(available)}")
        store = cell_graph[et]
        ei = store.edge_index
        w = getattr(store, "edge_weight", None)
        if w is None:
            raise KeyError(f"edge type {et!r} has no 'edge_weight'")
        if ei.dim() != 2 or ei.size(0) != 2 or w.numel() != ei.size(1):
            raise ValueError(f"edge type {et!r}: edge_index {tuple(ei.shape)} and edge_weight "
                             f"{tuple(w.shape)} do not match (expected (2, E) and (E,))")
        if ei.numel() and (int(ei.min()) < 0 or int(ei.max()) >= n):
            raise ValueError(f"edge type {et!r}: edge_index holds gene indices outside [0, {n})")
        ei = ei.to(dev) if dev is not None else ei
        w = w.to(device=ei.device, dtype=dtype)
        a = _csr(ei[1], ei[0], w, (n, n))
        adj[et] = a
        coo = a.to_sparse_coo()
        r, cidx = coo.indices()
        v = coo.values()
        deg = torch.bincount(r, minlength=n).clamp_(min=1).to(v.dtype)
        vn = v / deg[r]
        rows_s.append(r + c * n)
        cols_s.append(cidx)
        vals_s.append(vn)
        cols_b.append(cidx + c * n)
    cn = len(edge_types) * n
    r_all, v_all = torch.cat(rows_s), torch.cat(vals_s)
    c_stack, c_block = torch.cat(cols_s), torch.cat(cols_b)
    stacked = _csr(r_all, c_stack, v_all, (cn, n))
    stacked_t = _csr(c_stack, r_all, v_all, (n, cn))
    block = _csr(r_all, c_block, v_all, (cn, cn))
    block_t = _csr(c_block, r_all, v_all, (cn, cn))
    return GraphInputs(n, edge_types, adj, stacked, stacked_t, block, block_t)


class DangoPreTrain(nn.Module):
    """Shared gene embedding -> per channel 2 x ``SAGEConv(H, H)`` -> per channel linear head that
    reconstructs the gene's adjacency row.

    Args:
        gene_num (int): ``N``.
        edge_types: channel edge types (``("gene", "string9_1_<channel>", "gene")`` or relation names).
        hidden_channels (int): ``H``.
        activation (str): nonlinearity after each ``SAGEConv`` (any PyG activation name).
        batched (bool): run all channels as one batched graph (default; ~15 % faster on one CPU
            thread at STRING size) or one by one through the ``SAGEConv`` modules (the reference).

    Shapes:
        forward: ``GraphInputs`` or ``HeteroData`` -> dict edge type -> ``(N, H)`` (the layer-2
        embeddings, after the activation); ``forward(inputs, rows)`` -> ``(C, G, H)`` for the genes
        ``rows`` (G,) only (:meth:`forward_rows`).
    """

    def __init__(self, gene_num: int, edge_types, hidden_channels: int = 64,
                 activation: str = "relu", batched: bool = True):
        super().__init__()
        self.gene_num = int(gene_num)
        self.edge_types = normalize_edge_types(edge_types)
        self.hidden_channels = int(hidden_channels)
        self.batched = bool(batched)
        self.activation_name = activation
        self.act = resolve_activation(activation)
        self.embedding = nn.Embedding(self.gene_num, self.hidden_channels)
        h = self.hidden_channels
        self.conv1 = nn.ModuleDict({et[1]: SAGEConv(h, h, aggr="mean") for et in self.edge_types})
        self.conv2 = nn.ModuleDict({et[1]: SAGEConv(h, h, aggr="mean") for et in self.edge_types})
        self.recon = nn.ModuleDict({et[1]: nn.Linear(h, self.gene_num) for et in self.edge_types})
        self.reset_parameters()

    def reset_parameters(self):
        self.embedding.reset_parameters()
        for m in (*self.conv1.values(), *self.conv2.values(), *self.recon.values()):
            m.reset_parameters()

    def prepare(self, cell_graph) -> GraphInputs:
        """Sparse inputs for ``cell_graph`` on this module's device (call once per graph)."""
        w = self.embedding.weight
        inputs = prepare_graph(cell_graph, self.edge_types, device=w.device, dtype=w.dtype)
        if inputs.num_nodes != self.gene_num:
            raise ValueError(f"cell graph has {inputs.num_nodes} genes, model was built for {self.gene_num}")
        return inputs

    def head(self, edge_type) -> nn.Linear:
        """The reconstruction head of ``edge_type``: weight ``(N, H)``, bias ``(N,)``."""
        return self.recon[normalize_edge_types([edge_type])[0][1]]

    def forward(self, inputs, rows: Tensor | None = None):
        """All genes' embeddings (dict edge type -> ``(N, H)``), or with ``rows`` (G,) the
        ``(C, G, H)`` tensor of :meth:`forward_rows`."""
        if not isinstance(inputs, GraphInputs):
            inputs = self.prepare(inputs)
        if rows is not None:
            return self.forward_rows(inputs, rows)
        x = self._input_features(inputs)
        if self.batched:
            return self._forward_batched(x, inputs)
        return self._forward_loop(x, inputs)

    def _input_features(self, inputs: GraphInputs) -> Tensor:
        """The shared embedding table ``(N, H)``, after checking ``inputs`` fit this model."""
        if list(inputs.edge_types) != self.edge_types:
            raise ValueError(f"graph inputs were prepared for {inputs.edge_types}, model has {self.edge_types}")
        x = self.embedding.weight
        if inputs.dtype != x.dtype or inputs.device != x.device:
            raise ValueError(f"graph inputs are {inputs.dtype} on {inputs.device}, the model is {x.dtype} on "
                             f"{x.device}: prepare them again after moving the model")
        return x

    def _forward_loop(self, x: Tensor, inputs: GraphInputs) -> dict[EdgeType, Tensor]:
        out = {}
        for et in self.edge_types:
            adj_t = inputs.adj[et]
            h = self.act(self.conv1[et[1]](x, adj_t))
            out[et] = self.act(self.conv2[et[1]](h, adj_t))
        return out

    def _stack(self, convs: nn.ModuleDict) -> tuple[Tensor, Tensor, Tensor]:
        """Per channel ``lin_l`` weight^T ``(C, H, H)``, bias ``(C, 1, H)``, ``lin_r`` weight^T ``(C, H, H)``."""
        mods = [convs[et[1]] for et in self.edge_types]
        wl = torch.stack([m.lin_l.weight.t() for m in mods])
        bl = torch.stack([m.lin_l.bias for m in mods]).unsqueeze(1)
        wr = torch.stack([m.lin_r.weight.t() for m in mods])
        return wl, bl, wr

    def _forward_batched(self, x: Tensor, inputs: GraphInputs) -> dict[EdgeType, Tensor]:
        c, n, h = len(self.edge_types), self.gene_num, self.hidden_channels
        wl, bl, wr = self._stack(self.conv1)
        agg = _SpMM.apply(inputs.stacked, inputs.stacked_t, x).view(c, n, h)
        root = (x @ wr.transpose(0, 1).reshape(h, c * h)).view(n, c, h).transpose(0, 1)
        h1 = self.act(torch.baddbmm(bl, agg, wl) + root)  # (C, N, H)
        wl, bl, wr = self._stack(self.conv2)
        agg = _SpMM.apply(inputs.block, inputs.block_t, h1.reshape(c * n, h)).view(c, n, h)
        h2 = self.act(torch.baddbmm(bl, agg, wl) + torch.bmm(h1, wr))
        return dict(zip(self.edge_types, h2.unbind(0)))  # one backward node, not C selects

    def forward_rows(self, inputs: GraphInputs, rows: Tensor) -> Tensor:
        """Layer-2 embeddings ``(C, G, H)`` of the genes ``rows`` (G,) only (channel order
        ``edge_types``): the same numbers as ``stack(forward(inputs).values())[:, rows]``, at a cost
        that scales with the step instead of with ``C * N``.

        Layer 2 runs on the row slice ``block[rows]`` of the adjacency; layer 1 (the sparse product
        stays full: hub genes put nearly every edge into the 1-hop neighbourhood) applies its dense
        part (weights, activation) only to each channel's 1-hop neighbourhood of ``rows``, which is
        all that layer 2 reads. ``batched=False`` models run the full reference and index the rows.
        """
        x = self._input_features(inputs)
        rows = rows.to(device=x.device, dtype=torch.long).reshape(-1)
        if not self.batched:
            emb = self._forward_loop(x, inputs)
            return torch.stack([emb[et][rows] for et in self.edge_types])
        c, n, h = len(self.edge_types), self.gene_num, self.hidden_channels
        g = rows.numel()
        out_rows = (torch.arange(c, device=x.device).unsqueeze(1) * n + rows).reshape(-1)  # (C*G,)
        sl = gather_rows(inputs.block, out_rows)  # layer-2 rows, columns in (C*N) node space
        need = torch.zeros(c * n, dtype=torch.bool, device=x.device)
        need[sl.col] = True
        need[out_rows] = True
        sizes = need.view(c, n).sum(1).tolist()  # the one host read here: K per channel
        # sorted: channel-major, genes ascending; the known size makes nonzero sync-free on CUDA
        try:
            k_idx = torch.nonzero_static(need, size=sum(sizes)).squeeze(1)
        except (NotImplementedError, RuntimeError):  # a backend without it
            k_idx = need.nonzero().squeeze(1)
        lut = torch.full((c * n,), -1, dtype=torch.long, device=x.device)
        lut[k_idx] = torch.arange(k_idx.numel(), device=x.device)

        # layer 1 on the K (channel, gene) pairs layer 2 reads
        wl, bl, wr = self._stack(self.conv1)
        agg = _SpMMRows.apply(inputs.stacked, inputs.stacked_t, x, k_idx)  # (K, H)
        xk = x.index_select(0, k_idx.remainder(n))  # backward: index_add_, cheaper than index_put_
        h1 = torch.cat([torch.addmm(bl[i], a, wl[i]) + xs @ wr[i]
                        for i, (a, xs) in enumerate(zip(agg.split(sizes), xk.split(sizes)))])
        h1 = self.act(h1)  # (K, H)

        # layer 2 on the rows; lut is increasing, so the sliced CSR keeps its column order
        wl, bl, wr = self._stack(self.conv2)
        agg = _RowSpMM.apply(sl.crow, lut[sl.col], sl.value, h1).view(c, g, h)
        root = h1[lut[out_rows]].view(c, g, h)
        return self.act(torch.baddbmm(bl, agg, wl) + torch.bmm(root, wr))
