"""The training loop: one class for every kind of run, driven by a batch source and callbacks.

Per step the model runs exactly once (one ``Dango.forward(..., local=True)``: the GNN stage, the
meta embedding and the reconstruction for the step's genes only, with the same losses and
gradients as over all genes, then the Hyper-SAGNN head for the batch); the sparse graph inputs are
built once before the first step (``Dango.prepare``), and the reconstruction loss uses the
sparse/Gram form of :mod:`dango_nb.losses`, so no ``N x N`` tensor exists at any point. The
validation pass after each epoch is ``Dango.predict`` (embedding stage once, head in chunks).

What a history row holds (one per epoch, columns :data:`~dango_nb.train.config.HISTORY_COLUMNS`
plus ``loss_rec_<channel>``):

- losses are means over the epoch's steps weighted by the number of triplets (reconstruction
  rows without triplets); ``*_weighted`` are the schedule weight times the raw loss;
- a branch whose schedule weight is 0 in an epoch is not computed (reconstruction rows are not
  gathered when ``w_rec == 0``; a gene source has no triplets): its raw loss is NaN ("not
  computed") and its weighted loss 0.0 (exactly what it added to ``loss_total``). Skipping the
  reconstruction saves 20-60% of a step on the ``kuzmin`` preset. The interaction head is always
  run when there are triplets (without a backward pass when ``w_int == 0``), so ``loss_int`` and
  the train metrics are logged in every epoch; its forward pass costs 1-4% of a step;
- ``lr`` is the rate the epoch's steps ran at (their mean in the epochs a warm-up scales it);
- ``train_*`` metrics come from the predictions made during the epoch's steps, each taken before
  that step's parameter update (no extra pass over the training set); ``val_*`` from one
  evaluation pass after the epoch. Both are on the tau scale, NaN targets left out.

Only epochs in which the interaction loss is trained (``w_int > 0``, triplet sources) compete for
"best" and count towards early stopping, so a pre-training phase cannot trigger either. A run
whose checkpoint directory holds ``last.pt`` resumes from it and, on the CPU, produces exactly the
same numbers as an uninterrupted run.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from dango_nb import metrics
from dango_nb.data.graph import channel_of
from dango_nb.errors import TrainingDivergedError
from dango_nb.lambdas import check_lambdas
from dango_nb.losses import DangoLoss, lookup_lambda
from dango_nb.models import Dango
from dango_nb.schedules import Schedule
from dango_nb.seed import seed_everything
from dango_nb.train.callbacks import (Callback, EarlyStopping, EpochCallback, LearningRateSchedule,
                                      LearningRateWarmup, ModelCheckpoint, ProgressBar)
from dango_nb.train.checkpoint import CheckpointManager, fingerprint, set_rng_state
from dango_nb.train.config import HISTORY_COLUMNS, TrainConfig
from dango_nb.train.device import deterministic_kernels, resolve_device
from dango_nb.train.scaler import TargetScaler
from dango_nb.train.sources import BatchSource, check_edge_weights, check_triplets

__all__ = ["FitResult", "TrainingLoop", "regression_metrics"]

log = logging.getLogger(__name__)
VAL_BATCH_SIZE = 4096
#: Triplets per Hyper-SAGNN chunk of the validation pass on CUDA (memory is bounded by the chunk;
#: a 9k-triplet validation set is then one chunk).
CUDA_VAL_BATCH_SIZE = 65536
DIVERGENCE_FLOOR = 1e-3  # references below this count as this (a run starting near zero loss)
#: Steps between two reads of the device-side divergence flags on an accelerator (and once at the
#: end of every epoch); on the CPU every step is checked.
GUARD_EVERY = 64


@dataclass
class FitResult:
    """What a training run returns.

    Attributes:
        model: the model after the last epoch run (on ``device``, in eval mode).
        history: one row per epoch (:data:`~dango_nb.train.config.HISTORY_COLUMNS` plus
            ``loss_rec_<channel>``).
        scaler: the target scaler (fitted on the training triplets only).
        best_epoch: epoch with the best ``early_stopping_metric`` among epochs that trained the
            interaction loss, else the last epoch (``None`` when no epoch ran).
        checkpoint_dir: where checkpoints were written (``None`` without).
        device: the device trained on.
        stopped_early: whether early stopping ended the run.
        best_state: CPU copy of the model parameters at ``best_epoch`` (see :meth:`best_model`).
        config: the configuration used.
    """

    model: Dango
    history: pd.DataFrame
    scaler: TargetScaler
    best_epoch: int | None
    checkpoint_dir: Path | None
    device: torch.device
    stopped_early: bool = False
    best_state: dict[str, torch.Tensor] | None = None
    config: TrainConfig | None = None

    def best_model(self) -> Dango:
        """A copy of the model with the parameters of ``best_epoch`` (the final model if unknown)."""
        model = copy.deepcopy(self.model)
        if self.best_state is not None:
            model.load_state_dict(self.best_state)
        return model.eval()


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, float, float]:
    """Pearson, Spearman, MSE over the finite targets; all NaN when a prediction is not finite
    (a diverging model: the NaN guard stops the run)."""
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    keep = np.isfinite(y)
    y, p = y[keep], p[keep]
    if len(y) == 0 or not np.all(np.isfinite(p)):
        return float("nan"), float("nan"), float("nan")
    return metrics.pearson(y, p), metrics.spearman(y, p), metrics.mse(y, p)


def _lambdas(lambdas) -> dict[str, float]:
    if hasattr(lambdas, "lambdas") and not isinstance(lambdas, Mapping):  # LambdaResult
        lambdas = lambdas.lambdas
    if not isinstance(lambdas, Mapping):
        raise TypeError(f"lambdas must be a mapping channel -> lambda, got {type(lambdas).__name__}")
    return check_lambdas(lambdas)


class DeviceGuard:
    """The divergence check of :meth:`TrainingLoop.check_divergence` without a host sync per step.

    Each step's verdict is folded into device tensors (:meth:`update`): the first step whose
    total loss or gradient norm is not finite, or whose raw ``loss_rec``/``loss_int`` exceeds
    ``factor`` x its reference (the first finite value in the run, floored at
    :data:`DIVERGENCE_FLOOR`), and that step's value. :meth:`check` reads them in one transfer and
    raises the same :class:`~dango_nb.errors.TrainingDivergedError` the per-step check would, naming
    the same step; by then later steps of the window have updated the parameters, but nothing is
    checkpointed before a check passes, so ``last.pt`` stays the last good epoch.
    """

    NAMES = ("loss", "loss_rec", "loss_int", "gradient norm")

    def __init__(self, device: torch.device, factor: float | None, reference: Mapping[str, float]):
        self.factor = factor
        nan = float("nan")
        self.ref = torch.tensor([reference.get("loss_rec", nan), reference.get("loss_int", nan)],
                                dtype=torch.float32, device=device)
        self.first = torch.full((), -1, dtype=torch.long, device=device)  # first bad step (-1: none)
        self.what = torch.zeros((), dtype=torch.long, device=device)  # index into NAMES
        self.value = torch.zeros((), dtype=torch.float32, device=device)
        self.epoch_of_first = -1

    def update(self, lo, step: int, norm: Tensor | None = None) -> None:
        comp = torch.stack([lo.rec.detach(), lo.int.detach()]).float()
        fin = torch.isfinite(comp)
        self.ref = torch.where(torch.isnan(self.ref) & fin, comp, self.ref)
        total = lo.total.detach().float()
        checks = [~torch.isfinite(total)]
        values = [total]
        if self.factor is not None:
            over = fin & (comp > self.factor * self.ref.clamp(min=DIVERGENCE_FLOOR))
            checks += [over[0], over[1]]
        else:
            checks += [total.new_zeros((), dtype=torch.bool)] * 2
        values += [comp[0], comp[1]]
        if norm is not None:
            checks.append(~torch.isfinite(norm.detach().float()))
            values.append(norm.detach().float())
        bad = torch.stack(checks)
        any_bad = bad.any()
        which = torch.argmax(bad.to(torch.uint8))  # first failing check, as the per-step order
        new = any_bad & (self.first < 0)
        self.first = torch.where(new, torch.full_like(self.first, step), self.first)
        self.what = torch.where(new, which, self.what)
        picked = torch.stack(values).index_select(0, which.view(1)).squeeze(0)  # no 0-d tensor index: that syncs
        self.value = torch.where(new, picked, self.value)

    def reference(self) -> dict[str, float]:
        rec, inter = self.ref.tolist()
        return {k: v for k, v in (("loss_rec", rec), ("loss_int", inter)) if math.isfinite(v)}

    def check(self, loop: "TrainingLoop", epoch: int) -> None:
        """One host read; raises when a step since the last check diverged."""
        first, what, value = torch.stack([self.first.double(), self.what.double(), self.value.double()]).tolist()
        loop.loss_reference = self.reference()
        if first < 0:
            return
        name = self.NAMES[int(what)]
        ref = loop.loss_reference.get(name) if name in ("loss_rec", "loss_int") else None
        raise loop._diverged(epoch, int(first), value, name, reference=ref)


class TrainingLoop:
    """One training run.

    Args:
        cell_graph: ``HeteroData`` with the STRING channels.
        source: a :class:`~dango_nb.train.sources.BatchSource`.
        val: validation :class:`~dango_nb.data.TripletTensors` or ``None``.
        config: :class:`TrainConfig`.
        lambdas: channel -> lambda (or a ``LambdaResult``).
        schedule: the loss :class:`~dango_nb.schedules.Schedule`.
        model: start from this model instead of a fresh seeded ``Dango``.
        callback: ``callback(epoch, row)`` after every epoch.
        callbacks: further :class:`~dango_nb.train.callbacks.Callback` objects (run last).

    On an accelerator a step does not wait for the device: losses are summed on the device and
    read once per epoch, and the divergence check folds each step into device flags
    (:class:`DeviceGuard`) read every :data:`GUARD_EVERY` steps and at the end of every epoch.
    On the CPU (no device to wait for) every step is checked as it happens. ``guard_every`` (0 =
    per step) may be set after construction.
    """

    def __init__(self, cell_graph, source: BatchSource, val, config: TrainConfig, lambdas, schedule: Schedule,
                 model: Dango | None = None, callback: Callable[[int, dict], None] | None = None,
                 callbacks: list[Callback] | None = None):
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        self.config, self.source, self.cell_graph = config, source, cell_graph
        if source.trains_interaction:
            config.check_trains_interaction(schedule)
        check_edge_weights(cell_graph)
        self.device = resolve_device(config.device)
        log.info("dango_nb.train: %s on %s", source.name, self.device)
        metric = config.early_stopping_metric
        has_val = val is not None and len(val) > 0
        if config.early_stopping_patience is not None and metric.startswith("val_") and not has_val:
            raise ValueError(f"TrainConfig.early_stopping_patience is set but there is no validation set "
                             f"for early_stopping_metric={metric!r}")
        self.val = val if has_val else None
        if self.val is not None:
            check_triplets(self.val, int(cell_graph["gene"].num_nodes), "validation")

        self.generator = seed_everything(config.seed)
        edge_types = list(cell_graph.edge_types) if model is None else list(model.edge_types)
        gene_num = int(cell_graph["gene"].num_nodes)
        self.lambdas = _lambdas(lambdas)
        for et in edge_types:  # fail before any work: every channel needs a lambda
            lookup_lambda(self.lambdas, et)
        if model is None:
            model = Dango(gene_num, edge_types, **config.model)
        elif model.gene_num != gene_num:
            raise ValueError(f"model was built for {model.gene_num} genes, the cell graph has {gene_num}")
        self.model = model.to(self.device)
        self.autocast = _autocast(self.device, config.precision)
        self.channels = [channel_of(et) for et in self.model.edge_types]
        self.graph = self.model.prepare(cell_graph)  # sparse inputs, built once for the whole run
        self.schedule = schedule
        self.loss_fn = DangoLoss(self.lambdas, schedule, interaction=config.interaction_loss)
        opt_cls = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
        self.optimizer = opt_cls(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.scaler = source.bind(self.device, config.batch_size, gene_num)
        if self.val is not None:
            self.val_idx = self.val.indices.to(self.device, torch.long)
            self.val_y = self.val.targets.detach().cpu().numpy()
        train = source.triplets
        data_fp = fingerprint(None if train is None else train.indices, None if train is None else train.targets,
                              None if self.val is None else self.val.indices,
                              None if self.val is None else self.val.targets)
        self.epoch = 0  # epochs completed
        self.loss_reference: dict[str, float] = {}  # first finite raw loss per component (divergence check)
        self.rows: list[dict[str, float]] = []
        self.early_stopping = EarlyStopping(metric, config.early_stopping_patience)
        self.callbacks: list[Callback] = [self.early_stopping]
        self.lr_schedule: LearningRateSchedule | None = None
        if config.lr_schedule is not None:
            self.lr_schedule = LearningRateSchedule(
                self.optimizer, config.lr_schedule, config.lr, config.epochs, lr_min=config.lr_min,
                factor=config.lr_factor, patience=config.lr_patience, higher=self.early_stopping.higher)
            self.callbacks.append(self.lr_schedule)
        if config.lr_warmup_epochs > 0 and source.trains_interaction:
            start = config.interaction_epochs(schedule)[0]
            self.callbacks.append(LearningRateWarmup(self.optimizer, config.lr_warmup_epochs, start,
                                                     source.steps_per_epoch()))
        self.ckpt_dir = Path(config.checkpoint_dir) if config.checkpoint_dir is not None else None
        if self.ckpt_dir is not None:
            manager = CheckpointManager(self.ckpt_dir, config, source.name, data_fp)
            self._resume(manager)
            self.callbacks.append(ModelCheckpoint(manager, self.early_stopping))
        if config.progress:
            self.callbacks.append(ProgressBar(source.name))
        if callback is not None:
            self.callbacks.append(EpochCallback(callback))
        self.callbacks.extend(callbacks or [])
        self.guard_every = 0 if self.device.type == "cpu" else GUARD_EVERY
        self.guard: DeviceGuard | None = None

    def _resume(self, manager: CheckpointManager) -> None:
        ckpt = manager.read_last(self.device)
        if ckpt is None:
            return
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler = TargetScaler.from_state(ckpt["scaler"])
        state = ckpt["state"]
        self.epoch, self.rows = int(state["epoch"]), [dict(r) for r in state["rows"]]
        self.early_stopping.load_state_dict(state)
        if self.lr_schedule is not None:
            self.lr_schedule.load_state_dict(state.get("lr_schedule", {}))
        self.early_stopping.best_state = ckpt.get("best_state")
        self.loss_reference = {k: float(v) for k, v in state.get("loss_reference", {}).items()}
        set_rng_state(ckpt["rng"], self.generator)
        log.info("resumed from %s after epoch %d", manager.dir / "last.pt", self.epoch - 1)

    def eligible(self, row: Mapping[str, float]) -> bool:
        """Whether an epoch competes for "best" (it trained the interaction loss)."""
        return self.source.trains_interaction and row["w_int"] > 0

    def _diverged(self, epoch: int, step: int, value: float, what: str = "loss", reference: float | None = None
                  ) -> TrainingDivergedError:
        last = self.ckpt_dir / "last.pt" if self.ckpt_dir is not None else None
        kept = str(last) if last is not None and last.is_file() else None
        return TrainingDivergedError(epoch, step, value, kept, what=what, reference=reference,
                                     factor=self.config.divergence_factor if reference is not None else None)

    def check_divergence(self, lo, epoch: int, step: int) -> None:
        """Stop on a non-finite total loss, or on a raw component above ``divergence_factor`` x
        its first value in the run (that first value, floored at 1e-3, is the reference; it is
        kept in the checkpoint so a resumed run checks against the same one)."""
        total, rec, inter = torch.stack([lo.total.detach(), lo.rec.detach(), lo.int.detach()]).tolist()  # one sync
        if not math.isfinite(total):
            raise self._diverged(epoch, step, total)
        factor = self.config.divergence_factor
        for name, value in (("loss_rec", rec), ("loss_int", inter)):
            if not math.isfinite(value):  # not computed in this step
                continue
            ref = self.loss_reference.setdefault(name, value)
            if factor is not None and value > factor * max(ref, DIVERGENCE_FLOOR):
                raise self._diverged(epoch, step, value, name, reference=ref)

    def forward_loss(self, batch, epoch: int, w_rec: float):
        """The model output and :class:`~dango_nb.losses.LossOutput` of one batch (under the
        configured precision)."""
        idx, z, _, rows = batch
        if idx is not None and w_rec == 0:
            rows = idx.new_empty(0)  # reconstruction not needed: gather no target rows
        with self.autocast():
            out = self.model(self.graph, idx, recon_rows=rows, local=True)  # cost scales with the batch
            lo = self.loss_fn(out, z, epoch)
        return out, lo

    def step(self, batch, epoch: int, step: int, w_rec: float, timer=None):
        """One optimisation step; returns the step's :class:`~dango_nb.losses.LossOutput` and
        the model output. With the device guard (``guard_every > 0``) nothing here reads a device
        value on the host. ``timer(name)``, if given, is called after the forward pass, the backward
        pass and the optimiser step (the benchmark's time split)."""
        batched = self.guard_every > 0
        out, lo = self.forward_loss(batch, epoch, w_rec)
        if timer is not None:
            timer("forward")
        if not batched:
            self.check_divergence(lo, epoch, step)
        self.optimizer.zero_grad(set_to_none=True)
        lo.total.backward()
        norm = None
        if self.config.grad_clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(list(self.model.parameters()), self.config.grad_clip)
            if not batched and not torch.isfinite(norm):
                raise self._diverged(epoch, step, float(norm), "gradient norm")
        if timer is not None:
            timer("backward")
        if batched:
            self.guard.update(lo, step, norm)
        self.optimizer.step()
        if timer is not None:
            timer("optimizer")
        return lo, out

    def run_epoch(self, epoch: int) -> dict[str, float]:
        t0 = time.perf_counter()
        w_rec, w_int = self.schedule.weights(epoch)
        self.model.train()
        sums: dict[str, torch.Tensor] = {}
        total_w = 0
        preds, targets = [], []
        rates: list[float] = []  # the rate each step ran at (a warm-up scales it per step)
        n_steps = 0
        if self.guard_every > 0:
            self.guard = DeviceGuard(self.device, self.config.divergence_factor, self.loss_reference)
        for step, batch in enumerate(self.source.batches(self.generator)):
            for cb in self.callbacks:
                cb.on_step_start(self, epoch, step)
            rates.append(self.optimizer.param_groups[0]["lr"])
            lo, out = self.step(batch, epoch, step, w_rec)
            if self.guard_every > 0 and (step + 1) % self.guard_every == 0:
                self.guard.check(self, epoch)
            weight = batch.indices.size(0) if batch.indices is not None else batch.rows.numel()
            total_w += weight
            for k, v in lo.as_dict(tensors=True).items():
                if k.startswith("loss_"):
                    sums[k] = sums[k] + v * weight if k in sums else v * weight
            if out.scores is not None:
                preds.append(out.scores.detach())
                targets.append(batch.y)
            n_steps += 1
            for cb in self.callbacks:
                cb.on_step_end(self, epoch, step)

        if self.guard_every > 0:
            self.guard.check(self, epoch)
        nan = float("nan")
        keys = list(sums)
        means = dict(zip(keys, (v / total_w for v in torch.stack([sums[k] for k in keys]).double().tolist())))
        row: dict[str, float] = {"epoch": epoch, "alpha": float(self.schedule.alpha(epoch)),
                                 "w_rec": float(w_rec), "w_int": float(w_int)}
        row["loss_total"] = means["loss_total"]
        row["loss_rec"] = means.get("loss_rec", nan) if w_rec != 0 else nan
        row["loss_int"] = means.get("loss_int", nan)
        row["loss_rec_weighted"] = w_rec * row["loss_rec"] if w_rec != 0 else 0.0
        row["loss_int_weighted"] = w_int * row["loss_int"] if w_int != 0 else 0.0
        if rates and min(rates) != max(rates):
            row["lr"] = math.fsum(rates) / len(rates)
        else:
            row["lr"] = float(rates[0] if rates else self.optimizer.param_groups[0]["lr"])
        if preds:
            p = self.scaler.inverse_transform(torch.cat(preds).double()).cpu().numpy()
            row["train_pearson"], row["train_spearman"], row["train_mse"] = regression_metrics(
                torch.cat(targets).cpu().numpy(), p)
        else:
            row["train_pearson"] = row["train_spearman"] = row["train_mse"] = nan
        if not all(torch.isfinite(p).all() for p in self.model.parameters()):  # never checkpoint a poisoned model
            raise self._diverged(epoch, n_steps - 1, nan, "a model parameter")
        if self.val is not None:
            chunk = VAL_BATCH_SIZE if self.device.type == "cpu" else CUDA_VAL_BATCH_SIZE
            zv = self.model.predict(self.graph, self.val_idx, chunk)
            pv = self.scaler.inverse_transform(zv.double()).cpu().numpy()
            if not np.all(np.isfinite(pv)):
                raise self._diverged(epoch, n_steps - 1, nan, "a validation prediction")
            row["val_pearson"], row["val_spearman"], row["val_mse"] = regression_metrics(self.val_y, pv)
        else:
            row["val_pearson"] = row["val_spearman"] = row["val_mse"] = nan
        for ch in self.channels:
            row[f"loss_rec_{ch}"] = means.get(f"loss_rec_{ch}", nan) if w_rec != 0 else nan
        row["time_s"] = time.perf_counter() - t0
        return row

    def run(self) -> FitResult:
        with deterministic_kernels(self.device):
            try:
                for cb in self.callbacks:
                    cb.on_train_start(self)
                epochs = range(0) if self.early_stopping.stopped_early else range(self.epoch, self.config.epochs)
                for epoch in epochs:
                    for cb in self.callbacks:
                        cb.on_epoch_start(self, epoch)
                    row = self.run_epoch(epoch)
                    self.rows.append(row)
                    self.epoch = epoch + 1
                    stop = False
                    for cb in self.callbacks:
                        stop = bool(cb.on_epoch_end(self, epoch, row)) or stop
                    if stop:
                        break
            finally:
                for cb in self.callbacks:
                    cb.on_train_end(self)
        self.model.eval()
        es = self.early_stopping
        best = es.best_epoch if es.best_epoch is not None else (self.epoch - 1 if self.epoch else None)
        return FitResult(model=self.model, history=self.history(), scaler=self.scaler, best_epoch=best,
                         checkpoint_dir=self.ckpt_dir, device=self.device, stopped_early=es.stopped_early,
                         best_state=es.best_state, config=self.config)

    def history(self) -> pd.DataFrame:
        cols = list(HISTORY_COLUMNS) + [f"loss_rec_{ch}" for ch in self.channels]
        df = pd.DataFrame(self.rows, columns=cols)
        df["epoch"] = df["epoch"].astype("int64")
        return df



def _autocast(device: torch.device, precision: str):
    """A context-manager factory for the configured precision: bfloat16 autocast on CUDA, nothing
    for ``"fp32"``. bf16 is refused elsewhere: CPU autocast does not cover the model's sparse
    products (they would mix bfloat16 and float32 operands) and gives no speed-up on the CPU."""
    import contextlib

    if precision == "fp32":
        return contextlib.nullcontext
    if device.type != "cuda":
        raise ValueError(f"TrainConfig.precision: 'bf16' needs a CUDA device, the run is on {device}; "
                         f"use precision 'fp32' there")
    return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
