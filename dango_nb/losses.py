"""DANGO's losses: weighted reconstruction MSE (dense reference and exact sparse/Gram form), a stable
log-cosh interaction loss with NaN masking, and :class:`DangoLoss` which combines them by schedule.

The reconstruction target of a gene is its row of the weighted adjacency (length ``N`` = genes).
With a linear head ``pred = Z W^T + b`` the loss over all ``R x N`` entries is computed without any
``R x N`` (let alone ``N x N``) tensor: the square is expanded into Gram-matrix terms plus
corrections on the non-zero targets, which come from the sparse edge table (:class:`~dango_nb.models.sparse.SparseRows`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from dango_nb.data.graph import channel_of
from dango_nb.models.sparse import SparseRows, quiet_sparse

__all__ = [
    "lookup_lambda", "weighted_mse",
    "weighted_mse_linear", "log_cosh", "finite_mask", "interaction_loss", "LossOutput", "DangoLoss",
]

_LOG2 = math.log(2.0)


# --------------------------------------------------------------------------------------------------
# lambda lookup
# --------------------------------------------------------------------------------------------------
def lookup_lambda(lambdas: Mapping[str, float], edge_type) -> float:
    """The lambda for ``edge_type``'s channel. Keys of ``lambdas`` may be channel names or full edge
    type names of any STRING version. Unknown channel -> ``KeyError`` naming it and the known ones."""
    ch = channel_of(edge_type)
    by_channel = {channel_of(k): float(v) for k, v in lambdas.items()}
    if ch not in by_channel:
        raise KeyError(f"no lambda for channel {ch!r} (edge type {edge_type!r}); "
                       f"lambdas are known for: {', '.join(sorted(by_channel)) or 'none'}")
    return by_channel[ch]


# --------------------------------------------------------------------------------------------------
# reconstruction loss
# --------------------------------------------------------------------------------------------------
def weighted_mse(pred: Tensor, target: Tensor, lam: float) -> Tensor:
    """Dense reference: ``mean((pred - target)^2 * where(target != 0, 1, lam))`` over all entries.

    Args:
        pred, target: ``(R, N)``.
        lam: weight of the zero-target entries.
    """
    w = torch.where(target != 0, torch.ones_like(target), torch.full_like(target, lam))
    return ((pred - target) ** 2 * w).mean()


# Sparse products run in float32 under CUDA autocast (bf16 runs): cuSPARSE takes no mixed
# bfloat16/float32 operands; backward runs in the forward's autocast state.
_FP32_FWD = torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)
_BWD = torch.amp.custom_bwd(device_type="cuda")


class _SampledDot(torch.autograd.Function):
    """``(z @ w.T)`` at a CSR pattern (SDDMM) with a sparse-times-dense backward (~2x faster on CPU
    than the built-in backward of ``sampled_addmm``)."""

    @staticmethod
    @_FP32_FWD
    def forward(ctx, crow: Tensor, col: Tensor, z: Tensor, w: Tensor) -> Tensor:
        shape = (z.size(0), w.size(0))
        with quiet_sparse():
            pattern = torch.sparse_csr_tensor(crow, col, z.new_zeros(col.numel()), shape)
            p = torch.sparse.sampled_addmm(pattern, z, w.t(), beta=0.0).values()
        ctx.save_for_backward(crow, col, z, w)
        return p

    @staticmethod
    @_BWD
    def backward(ctx, grad: Tensor):
        crow, col, z, w = ctx.saved_tensors
        with quiet_sparse():
            g = torch.sparse_csr_tensor(crow, col, grad.contiguous(), (z.size(0), w.size(0)))
            gz = torch.sparse.mm(g, w) if ctx.needs_input_grad[2] else None
            gw = None
            if ctx.needs_input_grad[3]:
                try:
                    gw = torch.sparse.mm(g.t(), z)  # CSC view of the transpose
                except (RuntimeError, NotImplementedError):  # backends without CSC products
                    row = torch.repeat_interleave(torch.arange(z.size(0), device=z.device), crow.diff(),
                                                  output_size=col.numel())
                    gw = z.new_zeros(w.shape).index_add_(0, col, grad.unsqueeze(-1) * z[row])
        return None, None, gz, gw


def _sampled_dot(z: Tensor, weight: Tensor, target: SparseRows) -> Tensor:
    """``(z @ weight.T)[row, col]`` at the target's non-zeros, ``(nnz,)`` in CSR order: a sampled
    dense-dense product (SDDMM), else (devices/dtypes without it) a gather of rows."""
    if target.nnz == 0:
        return z.new_zeros(0)
    try:
        return _SampledDot.apply(target.crow, target.col, z, weight)
    except (RuntimeError, NotImplementedError):
        return (z[target.row] * weight[target.col]).sum(-1)


class _GramQuadratic(torch.autograd.Function):
    """``sum((z @ w.T) ** 2) = <z^T z, w^T w>`` with its analytic gradient ``2 w (z^T z)``, ``2 z (w^T w)``:
    two ``N x H x H`` products per call where autograd through ``w.T @ w`` needs three."""

    @staticmethod
    def forward(ctx, z: Tensor, w: Tensor) -> Tensor:
        zz, ww = z.t() @ z, w.t() @ w  # (H, H) each
        ctx.save_for_backward(z, w, zz, ww)
        return (zz * ww).sum()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        z, w, zz, ww = ctx.saved_tensors
        gz = (z @ ww).mul_(2 * grad) if ctx.needs_input_grad[0] else None
        gw = (w @ zz).mul_(2 * grad) if ctx.needs_input_grad[1] else None
        return gz, gw


def weighted_mse_linear(z: Tensor, weight: Tensor, bias: Tensor | None, target: SparseRows,
                        lam: float) -> Tensor:
    """Exactly :func:`weighted_mse` of ``pred = z @ weight.T + bias`` against ``target.to_dense()``,
    without forming ``pred``.

    With ``S`` the non-zero target entries::

        sum_all w (p - t)^2 = lam * sum_all p^2 + sum_S [(p - t)^2 - lam * p^2]
        sum_all p^2 = sum((z @ (W^T W)) * z) + 2 * sum(z @ (W^T b)) + R * (b . b)

    Args:
        z: ``(R, H)`` layer-2 embeddings of the rows.
        weight: ``(N, H)`` head weight; bias: ``(N,)`` or ``None``.
        target: :class:`SparseRows` with ``num_rows == R`` and ``num_cols == N``.
    Returns:
        scalar, mean over the ``R * N`` entries.
    """
    R, N = z.size(0), weight.size(0)
    if target.num_rows != R or target.num_cols != N:
        raise ValueError(f"target is {target.num_rows}x{target.num_cols}, predictions are {R}x{N}")
    sq_all = _GramQuadratic.apply(z, weight)
    if bias is not None:
        sq_all = sq_all + 2.0 * (z @ (weight.t() @ bias)).sum() + R * (bias * bias).sum()
    p = _sampled_dot(z, weight, target)  # (nnz,) pred - bias at the non-zero targets
    if bias is not None:
        p = p + bias[target.col]
    t = target.value.to(p.dtype)
    corr = ((p - t) ** 2 - lam * p * p).sum()
    return (lam * sq_all + corr) / (R * N)


# --------------------------------------------------------------------------------------------------
# interaction loss
# --------------------------------------------------------------------------------------------------
def log_cosh(x: Tensor) -> Tensor:
    """``log(cosh(x))`` as ``|x| + softplus(-2|x|) - log 2``: no overflow for large ``|x|`` and a
    gradient of ``tanh(x)``."""
    a = x.abs()
    return a + F.softplus(-2.0 * a) - _LOG2


def finite_mask(target: Tensor) -> Tensor:
    """Boolean mask of usable targets (not NaN, not inf); metrics use the same rule."""
    return torch.isfinite(target)


def interaction_loss(pred: Tensor, target: Tensor, kind: str = "logcosh") -> Tensor:
    """Mean log-cosh (``kind="logcosh"``) or squared (``"mse"``) error over finite targets.

    Args:
        pred, target: ``(B,)``. NaN targets are ignored; an all-NaN batch gives 0 with zero gradient.
    """
    mask = finite_mask(target)
    # masked by value, not by boolean indexing: fixed shapes, so no host sync on CUDA
    diff = pred - torch.where(mask, target, torch.zeros_like(target))
    if kind == "logcosh":
        err = log_cosh(diff)
    elif kind == "mse":
        err = diff * diff
    else:
        raise ValueError(f"unknown interaction loss {kind!r}; expected 'logcosh' or 'mse'")
    err = torch.where(mask, err, torch.zeros_like(err))  # masked entries add exactly 0 and get 0 gradient
    # no host sync: an all-NaN batch gives 0 / 1 = 0 and a zero gradient
    return err.sum() / mask.sum().clamp(min=1).to(err.dtype)


# --------------------------------------------------------------------------------------------------
# combined loss
# --------------------------------------------------------------------------------------------------
@dataclass
class LossOutput:
    """What one step's loss is made of (tensors are 0-d).

    ``total`` is the only one that carries gradients for the optimiser. ``rec`` is the raw
    reconstruction loss (``rec_reduction`` over channels, default the sum), ``int`` the raw
    interaction loss; ``*_weighted`` are those times ``w_rec`` / ``w_int``. A component whose weight
    is 0 this epoch is still computed for logging, but without gradient (unless
    ``DangoLoss(log_inactive=False)``); one the model output lacks (no triplets/targets, or no
    reconstruction rows: ``reconstruction=False`` or an empty ``recon_rows``) is NaN.
    """

    total: Tensor
    rec: Tensor
    int: Tensor
    rec_weighted: Tensor
    int_weighted: Tensor
    alpha: float
    w_rec: float
    w_int: float
    rec_per_channel: dict[str, Tensor] = field(default_factory=dict)

    def as_dict(self, tensors: bool = False) -> dict[str, float]:
        """The terms of a history row (``loss_rec_<channel>`` per channel): plain floats, or with
        ``tensors=True`` detached 0-d tensors (the training loop sums those over an epoch without a
        host sync per step); ``alpha``, ``w_rec``, ``w_int`` are floats either way."""
        terms = {"loss_total": self.total.detach(), "loss_rec": self.rec, "loss_int": self.int,
                 "loss_rec_weighted": self.rec_weighted, "loss_int_weighted": self.int_weighted}
        terms.update({f"loss_rec_{ch}": v for ch, v in self.rec_per_channel.items()})
        if not tensors:
            terms = {k: float(v) for k, v in terms.items()}
        return {"alpha": self.alpha, "w_rec": self.w_rec, "w_int": self.w_int, **terms}


class DangoLoss(torch.nn.Module):
    """``total = w_rec * L_rec + w_int * L_int`` with ``(w_rec, w_int) = schedule.weights(epoch)``.

    Args:
        lambdas: channel (or edge type name) -> lambda, e.g. ``LambdaResult.lambdas``. Every channel of
            the model must have one (``KeyError`` otherwise).
        schedule: a :class:`~dango_nb.schedules.Schedule` or a registered name (then
            ``transition_epoch`` is used).
        interaction: ``"logcosh"`` or ``"mse"``.
        rec_reduction: ``"sum"`` (default; the original DANGO and TorchCell add the channels' losses)
            or ``"mean"`` over channels.
        log_inactive: compute a component whose weight is 0 this epoch anyway, without gradient, so
            the history shows it (cheap: no backward, the model output is already there). ``False``
            skips it and reports NaN.
    """

    def __init__(self, lambdas: Mapping[str, float], schedule, interaction: str = "logcosh",
                 rec_reduction: str = "sum", transition_epoch: int = 10, log_inactive: bool = True):
        super().__init__()
        from dango_nb.schedules import get_schedule

        if interaction not in ("logcosh", "mse"):
            raise ValueError(f"unknown interaction loss {interaction!r}; expected 'logcosh' or 'mse'")
        if rec_reduction not in ("sum", "mean"):
            raise ValueError(f"rec_reduction must be 'sum' or 'mean', got {rec_reduction!r}")
        self.lambdas = dict(lambdas)
        self.schedule = get_schedule(schedule, transition_epoch)
        self.interaction = interaction
        self.rec_reduction = rec_reduction
        self.log_inactive = bool(log_inactive)

    def reconstruction(self, output) -> tuple[Tensor, dict[str, Tensor]]:
        """Raw reconstruction loss and per-channel values for a :class:`~dango_nb.models.DangoOutput`."""
        per = {}
        for et, z in output.recon_embeddings.items():
            head = output.recon_heads[et]
            lam = lookup_lambda(self.lambdas, et)
            per[channel_of(et)] = weighted_mse_linear(z, head.weight, head.bias,
                                                        output.recon_targets[et], lam)
        if not per:
            raise ValueError("model output holds no reconstruction rows")
        stacked = torch.stack(list(per.values()))
        rec = stacked.sum() if self.rec_reduction == "sum" else stacked.mean()
        return rec, per

    def forward(self, output, target: Tensor | None, epoch: int) -> LossOutput:
        """Args:
            output: :class:`~dango_nb.models.DangoOutput` of one forward pass.
            target: ``(B,)`` interaction targets (already scaled; NaN = missing) or ``None``.
            epoch: 0-based epoch for the schedule.
        """
        w_rec, w_int = (float(w) for w in self.schedule.weights(epoch))
        alpha = float(self.schedule.alpha(epoch))
        ref = output.integrated
        nan = ref.new_full((), float("nan"))
        grad = torch.is_grad_enabled()

        has_rec = bool(output.recon_embeddings) and output.recon_rows.numel() > 0
        has_int = output.scores is not None and target is not None
        if w_rec != 0 and not has_rec:
            raise ValueError(f"schedule gives reconstruction weight {w_rec} at epoch {epoch} "
                             "but the model output has no reconstruction rows")
        if w_int != 0 and not has_int:
            raise ValueError(f"schedule gives interaction weight {w_int} at epoch {epoch} "
                             "but no scores/targets were given")

        rec, per = nan, {}
        if has_rec and (w_rec != 0 or self.log_inactive):
            with torch.set_grad_enabled(grad and w_rec != 0):
                rec, per = self.reconstruction(output)
        inter = nan
        if has_int and (w_int != 0 or self.log_inactive):
            with torch.set_grad_enabled(grad and w_int != 0):
                inter = interaction_loss(output.scores, target.to(output.scores.dtype), self.interaction)

        total = ref.new_zeros(())
        if w_rec != 0:
            total = total + w_rec * rec
        if w_int != 0:
            total = total + w_int * inter
        return LossOutput(total=total, rec=rec.detach(), int=inter.detach(),
                          rec_weighted=(w_rec * rec).detach(), int_weighted=(w_int * inter).detach(),
                          alpha=alpha, w_rec=w_rec, w_int=w_int,
                          rec_per_channel={k: v.detach() for k, v in per.items()})
