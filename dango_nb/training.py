"""Training engine: :func:`fit`, :func:`pretrain`, :func:`overfit_batch` and :func:`predict`.

One loop serves all three entry points. Per step the model runs exactly once (one
``Dango.forward(..., local=True)``: the GNN stage, the meta embedding and the reconstruction for the
step's genes only, with the same losses and gradients as over all genes, then the Hyper-SAGNN head
for the batch); the sparse graph inputs are built once
before the first step (``Dango.prepare``), and the reconstruction loss uses the sparse/Gram form of
:mod:`dango_nb.losses`, so no ``N x N`` tensor exists at any point. Evaluation runs under
``torch.no_grad`` and computes the embedding stage once per pass, then scores triplets in chunks.

What a history row holds (one per epoch, columns :data:`HISTORY_COLUMNS` plus ``loss_rec_<channel>``):

- losses are means over the epoch's steps weighted by the number of triplets (reconstruction
  rows in :func:`pretrain`); ``*_weighted`` are the schedule weight times the raw loss;
- a branch whose schedule weight is 0 in an epoch is not computed (reconstruction rows are not
  gathered when ``w_rec == 0``; :func:`pretrain` has no triplets): its raw loss is NaN ("not
  computed") and its weighted loss 0.0 (exactly what it added to ``loss_total``). Skipping the
  reconstruction saves 20-60% of a step on the ``kuzmin`` preset. The interaction head is always
  run when there are triplets (without a backward pass when ``w_int == 0``), so ``loss_int`` and
  the train metrics are logged in every epoch of :func:`fit`; its forward pass costs 1-4% of a step;
- ``train_*`` metrics are computed from the predictions made during the epoch's steps, each
  taken before that step's parameter update (no extra pass over the training set); ``val_*`` from
  one evaluation pass after the epoch. Both are on the tau scale, NaN targets left out.

Checkpoints (``config.checkpoint_dir``): ``last.pt`` after every epoch (model, optimiser, epoch,
history, scaler, early-stopping state and all RNG states, including the shuffling generator) and
the ``keep_top_k`` best epochs by ``early_stopping_metric`` under ``top/`` with an index
``top_k.json`` (:func:`list_checkpoints`, :func:`load_checkpoint`). All writes are atomic. A run
given a directory that holds ``last.pt`` resumes from it and, on the CPU, produces exactly the same
numbers as an uninterrupted run. Only epochs in which the interaction loss is trained (``w_int >
0``) compete for "best" and count towards early stopping, so a pre-training phase cannot trigger
either.
"""

from __future__ import annotations

import contextlib

import copy
import dataclasses
import hashlib
import inspect
import json
import logging
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from dango_nb import metrics
from dango_nb.data.graph import channel_of
from dango_nb.errors import TrainingDivergedError
from dango_nb.fileio import atomic_save_torch, atomic_write_json
from dango_nb.losses import DangoLoss, LossOutput, lookup_lambda
from dango_nb.models import Dango
from dango_nb.schedules import SCHEDULES, Schedule, get_schedule
from dango_nb.seed import seed_everything

__all__ = [
    "HISTORY_COLUMNS", "TrainConfig", "TargetScaler", "FitResult", "resolve_device", "fit", "pretrain",
    "overfit_batch", "predict", "evaluate", "list_checkpoints", "load_checkpoint",
]

log = logging.getLogger(__name__)

HISTORY_COLUMNS = (
    "epoch", "alpha", "w_rec", "w_int", "loss_total", "loss_rec", "loss_int", "loss_rec_weighted",
    "loss_int_weighted", "lr", "train_pearson", "train_spearman", "train_mse", "val_pearson",
    "val_spearman", "val_mse", "time_s",
)
# Columns an early-stopping / top-k metric may name; pearson and spearman are maximised, the rest
# (errors and losses) minimised.
_METRIC_COLUMNS = ("val_pearson", "val_spearman", "val_mse", "train_pearson", "train_spearman",
                   "train_mse", "loss_total", "loss_rec", "loss_int")
# Config keys a resumed run may change (they do not change the numbers of the epochs already run).
_RESUMABLE_KEYS = {"epochs", "progress", "checkpoint_dir", "device", "early_stopping_patience", "keep_top_k"}
_CHECKPOINT_FORMAT = 1


# ------------------------------------------------------------------------------------------ config
@dataclass
class TrainConfig:
    """Training settings; every field is a plain type so a YAML mapping fills it directly.

    Args:
        epochs: epochs to train (a resumed run continues up to this many).
        batch_size: triplets per step (:func:`fit`); genes per step in :func:`pretrain`.
        optimizer: ``"adam"`` or ``"adamw"``.
        lr, weight_decay: optimiser settings.
        schedule, transition_epoch: loss schedule by registered name (:mod:`dango_nb.schedules`).
        interaction_loss: ``"logcosh"`` or ``"mse"``.
        grad_clip: max global gradient norm, ``None`` for no clipping.
        early_stopping_patience: stop after this many eligible epochs without improvement of
            ``early_stopping_metric`` (``None`` = never stop early).
        early_stopping_metric: a history column; also ranks the top-k checkpoints and ``best_epoch``.
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        seed: seeds Python, NumPy, torch and the shuffling generator.
        checkpoint_dir: where checkpoints go (``None`` = none); resumes from ``last.pt`` there.
        keep_top_k: best checkpoints kept (the original DANGO kept 5 for its ensemble).
        progress: tqdm progress bars.
        model: keyword arguments for :class:`~dango_nb.models.Dango` (``hidden_channels``,
            ``num_heads``, ``num_layers``, ``beta_init``, ``activation``, ``meta_embedding``...).
    """

    epochs: int = 50
    batch_size: int = 256
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "PreThenPost"
    transition_epoch: int = 10
    interaction_loss: str = "logcosh"
    grad_clip: float | None = 1.0
    early_stopping_patience: int | None = None
    early_stopping_metric: str = "val_pearson"
    device: str = "auto"
    seed: int = 0
    checkpoint_dir: str | None = None
    keep_top_k: int = 5
    progress: bool = True
    model: dict = field(default_factory=dict)

    def __post_init__(self):
        def bad(name: str, expected: str):
            return ValueError(f"TrainConfig.{name}: expected {expected}, got {getattr(self, name)!r}")

        def integer(name: str, minimum: int, allow_none: bool = False):
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
                raise bad(name, f"an integer >= {minimum}" + (" or None" if allow_none else ""))
            setattr(self, name, int(v))

        def number(name: str, minimum: float, strict: bool, allow_none: bool = False):
            v = getattr(self, name)
            if v is None and allow_none:
                return
            ok = isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool)
            if not ok or not math.isfinite(v) or v < minimum or (strict and v == minimum):
                rel = ">" if strict else ">="
                raise bad(name, f"a finite number {rel} {minimum}" + (" or None" if allow_none else ""))
            setattr(self, name, float(v))

        integer("epochs", 0)
        integer("batch_size", 1)
        if self.optimizer not in ("adam", "adamw"):
            raise bad("optimizer", "'adam' or 'adamw'")
        number("lr", 0.0, strict=False)
        number("weight_decay", 0.0, strict=False)
        if not isinstance(self.schedule, str) or self.schedule not in SCHEDULES:
            raise bad("schedule", "one of " + ", ".join(sorted(SCHEDULES)))
        integer("transition_epoch", 0)
        if self.interaction_loss not in ("logcosh", "mse"):
            raise bad("interaction_loss", "'logcosh' or 'mse'")
        number("grad_clip", 0.0, strict=True, allow_none=True)
        integer("early_stopping_patience", 1, allow_none=True)
        if self.early_stopping_metric not in _METRIC_COLUMNS:
            raise bad("early_stopping_metric", "one of " + ", ".join(_METRIC_COLUMNS))
        if not isinstance(self.device, str):
            raise bad("device", "a string such as 'auto', 'cpu' or 'cuda'")
        if self.device != "auto":
            try:
                torch.device(self.device)
            except (RuntimeError, ValueError):
                raise bad("device", "'auto', 'cpu', 'cuda' or 'cuda:<n>'") from None
        integer("seed", 0)
        if self.checkpoint_dir is not None and not isinstance(self.checkpoint_dir, (str, Path)):
            raise bad("checkpoint_dir", "a path string or None")
        if self.checkpoint_dir is not None:
            self.checkpoint_dir = str(self.checkpoint_dir)
        integer("keep_top_k", 0)
        if not isinstance(self.progress, bool):
            raise bad("progress", "true or false")
        if not isinstance(self.model, Mapping):
            raise bad("model", "a mapping of Dango keyword arguments")
        allowed = [p for p in inspect.signature(Dango.__init__).parameters
                   if p not in ("self", "gene_num", "edge_types")]
        for k in self.model:
            if k not in allowed:
                raise ValueError(f"TrainConfig.model: unknown key {k!r}; Dango takes {', '.join(allowed)}")
        self.model = dict(self.model)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "TrainConfig":
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else as ``torch.device``."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available; use 'auto' or 'cpu'")
    return dev


# ----------------------------------------------------------------------------------------- scaler
@dataclass
class TargetScaler:
    """Standardises tau: ``z = (tau - mean) / std``. Fitted on the training split only."""

    mean: float = 0.0
    std: float = 1.0

    @classmethod
    def fit(cls, targets) -> "TargetScaler":
        """Mean and (population) standard deviation of the finite values of ``targets`` (N,)."""
        y = torch.as_tensor(targets).detach().cpu().double().reshape(-1)
        y = y[torch.isfinite(y)]
        if y.numel() == 0:
            raise ValueError("cannot fit the target scaler: no finite training targets")
        mean = float(y.mean())
        std = float(y.std(unbiased=False)) if y.numel() > 1 else 0.0
        if not std > 1e-12:  # constant targets: centre only
            std = 1.0
        return cls(mean, std)

    def transform(self, tau: torch.Tensor) -> torch.Tensor:
        return (tau - self.mean) / self.std

    def inverse_transform(self, z):
        return z * self.std + self.mean

    def state_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "std": self.std}

    @classmethod
    def from_state(cls, state: Mapping[str, float]) -> "TargetScaler":
        return cls(float(state["mean"]), float(state["std"]))


# ----------------------------------------------------------------------------------------- result
@dataclass
class FitResult:
    """What a training run returns.

    Attributes:
        model: the model after the last epoch run (on ``device``, in eval mode).
        history: one row per epoch (:data:`HISTORY_COLUMNS` plus ``loss_rec_<channel>``).
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


# -------------------------------------------------------------------------------------- metrics
def _regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, float, float]:
    """Pearson, Spearman, MSE over the finite targets (NaN where undefined)."""
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    keep = np.isfinite(y)
    y, p = y[keep], p[keep]
    if len(y) == 0:
        return float("nan"), float("nan"), float("nan")
    mse = float(np.mean((y - p) ** 2))
    if not np.all(np.isfinite(p)):  # a diverging model: report, the NaN guard stops the run
        return float("nan"), float("nan"), mse
    return metrics.pearson(y, p), metrics.spearman(y, p), mse


def _higher_is_better(metric: str) -> bool:
    return metric.endswith(("pearson", "spearman"))


def _improved(value: float, best: float | None, higher: bool) -> bool:
    if not math.isfinite(value):
        return False
    if best is None:
        return True
    return value > best if higher else value < best


# -------------------------------------------------------------------------------- prediction
def _as_indices(indices) -> torch.Tensor:
    if hasattr(indices, "indices") and hasattr(indices, "targets"):  # TripletTensors
        indices = indices.indices
    idx = torch.as_tensor(np.asarray(indices) if not isinstance(indices, torch.Tensor) else indices)
    if idx.dim() != 2 or idx.size(1) != 3:
        raise ValueError(f"triplet indices must be (N, 3), got {tuple(idx.shape)}")
    return idx.long()


@torch.no_grad()
def _scores(model: Dango, graph, idx: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Standardised scores ``(N,)`` on the model's device; the embedding stage runs once."""
    was_training = model.training
    model.eval()
    try:
        _, integrated, _ = model.embed(graph)
        idx = idx.to(integrated.device)
        out = [model.hypersagnn(integrated[idx[s:s + batch_size]]) for s in range(0, idx.size(0), batch_size)]
        return torch.cat(out) if out else integrated.new_zeros(0)
    finally:
        model.train(was_training)


def predict(model: Dango, cell_graph, indices, scaler: TargetScaler | None, batch_size: int = 4096) -> np.ndarray:
    """Predicted tau for triplets ``indices`` (N, 3) (tensor, array or ``TripletTensors``).

    Runs under ``torch.no_grad`` with the model in eval mode; the GNN and meta embedding run once,
    the Hyper-SAGNN head over chunks of ``batch_size`` triplets. ``scaler=None`` returns the raw
    (standardised) scores.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    z = _scores(model, cell_graph, _as_indices(indices), batch_size).double().cpu().numpy()
    return scaler.inverse_transform(z) if scaler is not None else z


def evaluate(model: Dango, cell_graph, triplets, scaler: TargetScaler, batch_size: int = 4096) -> dict[str, float]:
    """``{"pearson", "spearman", "mse"}`` of :func:`predict` against ``triplets.targets`` (tau scale)."""
    pred = predict(model, cell_graph, triplets, scaler, batch_size)
    r, rho, mse = _regression_metrics(triplets.targets.cpu().numpy(), pred)
    return {"pearson": r, "spearman": rho, "mse": mse}


# -------------------------------------------------------------------------------- checkpoints
def _rng_state(generator: torch.Generator) -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])),
        "python": random.getstate(),
        "generator": generator.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(_tuplify(state["python"]))
    generator.set_state(state["generator"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuplify(x):
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x


def _fingerprint(*tensors: torch.Tensor | None) -> str:
    h = hashlib.sha1()
    for t in tensors:
        if t is None:
            h.update(b"none")
        else:
            a = t.detach().cpu().contiguous()
            h.update(str(tuple(a.shape)).encode())
            h.update(a.numpy().tobytes())
    return h.hexdigest()


def _model_init(model: Dango, config: TrainConfig) -> dict[str, Any]:
    return {"gene_num": model.gene_num, "edge_types": [tuple(et) for et in model.edge_types],
            "kwargs": dict(config.model)}


@contextlib.contextmanager
def _deterministic():
    """Deterministic kernels for the duration of a run, then the caller's setting again.

    Measured on this 2-core CPU: with 2 threads, two identical ``fit`` calls drifted apart from
    epoch 1 (1e-6 in val Pearson, 1e-3 in predictions) until deterministic kernels were required.
    ``warn_only`` keeps a CUDA op without a deterministic kernel usable (it warns instead)."""
    was, was_warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was, warn_only=was_warn)


def _graph_record(cell_graph) -> dict[str, Any]:
    """Gene names (so predictions can check names, not only counts) and the data source of the
    cell graph when it carries one (``dango_source``, set by the study loaders)."""
    rec: dict[str, Any] = {}
    node_ids = getattr(cell_graph["gene"], "node_ids", None)
    if node_ids is not None:
        rec["genes"] = [str(g) for g in node_ids]
    source = getattr(cell_graph, "dango_source", None)
    if isinstance(source, dict):
        rec["source"] = source
    return rec


def _load(path: Path, device) -> dict[str, Any]:
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise ValueError(f"{path}: not a readable dango_nb checkpoint ({type(err).__name__}: {err})") from err


def load_checkpoint(path, device: str | torch.device = "cpu") -> tuple[Dango, TargetScaler]:
    """Rebuild the model (eval mode) and target scaler saved in a checkpoint (``last.pt`` or a
    top-k file)."""
    path = Path(path)
    ckpt = _load(path, resolve_device(device))
    if "model_init" not in ckpt or "model" not in ckpt:
        raise ValueError(f"{path}: not a dango_nb checkpoint (no 'model_init'/'model' entries)")
    init = ckpt["model_init"]
    model = Dango(init["gene_num"], [tuple(et) for et in init["edge_types"]], **init["kwargs"])
    model.load_state_dict(ckpt["model"])
    return model.to(resolve_device(device)).eval(), TargetScaler.from_state(ckpt["scaler"])


def list_checkpoints(checkpoint_dir) -> pd.DataFrame:
    """The kept top-k checkpoints, best first: columns ``path, epoch, metric, value``."""
    checkpoint_dir = Path(checkpoint_dir)
    index = checkpoint_dir / "top_k.json"
    cols = ["path", "epoch", "metric", "value"]
    if not index.is_file():
        return pd.DataFrame(columns=cols)
    try:
        entries = json.loads(index.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{index}:{err.lineno}: not valid JSON: {err.msg}") from None
    rows = [{"path": checkpoint_dir / e["file"], "epoch": int(e["epoch"]), "metric": e["metric"],
             "value": float(e["value"])} for e in entries]
    return pd.DataFrame(rows, columns=cols)


# ------------------------------------------------------------------------------------- engine
class _ReconstructionOnly(Schedule):
    """alpha = 1 at every epoch (:func:`pretrain`); not registered, it is not a training schedule."""

    def alpha(self, epoch: int) -> float:
        return 1.0


def _lambdas(lambdas) -> dict[str, float]:
    if hasattr(lambdas, "lambdas") and not isinstance(lambdas, Mapping):  # LambdaResult
        lambdas = lambdas.lambdas
    if not isinstance(lambdas, Mapping):
        raise TypeError(f"lambdas must be a mapping channel -> lambda, got {type(lambdas).__name__}")
    return dict(lambdas)


@dataclass
class _State:
    """Mutable run state saved in ``last.pt``."""

    epoch: int = 0  # epochs completed
    rows: list[dict[str, float]] = field(default_factory=list)
    best_value: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0
    stopped_early: bool = False
    top: list[dict[str, Any]] = field(default_factory=list)  # {"file", "epoch", "metric", "value"}


class _Engine:
    """One training run (mode ``"fit"``, ``"overfit"`` or ``"pretrain"``)."""

    def __init__(self, mode: str, cell_graph, train, val, config: TrainConfig, lambdas,
                 model: Dango | None, callback: Callable[[int, dict], None] | None):
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        self.mode, self.config, self.callback = mode, config, callback
        self.device = resolve_device(config.device)
        log.info("dango_nb.training: %s on %s", mode, self.device)
        if config.progress:
            tqdm.write(f"dango_nb: {mode} on {self.device}", file=sys.stderr)
        self.metric = config.early_stopping_metric
        self.higher = _higher_is_better(self.metric)
        has_val = val is not None and len(val) > 0
        if config.early_stopping_patience is not None and self.metric.startswith("val_") and not has_val:
            raise ValueError(f"TrainConfig.early_stopping_patience is set but there is no validation set "
                             f"for early_stopping_metric={self.metric!r}")
        self.val = val if has_val else None

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
        self.channels = [channel_of(et) for et in self.model.edge_types]
        self.graph = self.model.prepare(cell_graph)  # sparse inputs, built once for the whole run
        self.cell_graph = cell_graph

        schedule = _ReconstructionOnly() if mode == "pretrain" else get_schedule(config.schedule,
                                                                                config.transition_epoch)
        self.loss_fn = DangoLoss(self.lambdas, schedule, interaction=config.interaction_loss)
        self.schedule = schedule
        opt_cls = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
        self.optimizer = opt_cls(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)

        if mode == "pretrain":
            self.scaler = TargetScaler()
            self.train_idx = self.train_y = self.train_z = None
            self.n_items = gene_num
        else:
            if train is None or len(train) == 0:
                raise ValueError("no training triplets")
            self.scaler = TargetScaler.fit(train.targets)  # training split only
            self.train_idx = train.indices.to(self.device, torch.long)
            self.train_y = train.targets.to(self.device, torch.float32)
            self.train_z = self.scaler.transform(self.train_y.double()).float()  # NaN stays NaN
            self.n_items = len(train)
        if self.val is not None:
            self.val_idx = self.val.indices.to(self.device, torch.long)
            self.val_y = self.val.targets.detach().cpu().numpy()
        self.fingerprint = _fingerprint(None if train is None else train.indices,
                                        None if train is None else train.targets,
                                        None if self.val is None else self.val.indices,
                                        None if self.val is None else self.val.targets)
        self.state = _State()
        self.best_state: dict[str, torch.Tensor] | None = None
        self.ckpt_dir = Path(config.checkpoint_dir) if config.checkpoint_dir is not None else None
        if self.ckpt_dir is not None:
            self._maybe_resume()

    # ------------------------------------------------------------------ checkpoints
    def _config_for_check(self) -> dict[str, Any]:
        return {k: v for k, v in self.config.to_dict().items() if k not in _RESUMABLE_KEYS}

    def _maybe_resume(self) -> None:
        path = self.ckpt_dir / "last.pt"
        if not path.is_file():
            return
        ckpt = _load(path, self.device)
        if ckpt.get("format") != _CHECKPOINT_FORMAT or ckpt.get("mode") != self.mode:
            raise ValueError(f"{path}: checkpoint of a {ckpt.get('mode')!r} run (format {ckpt.get('format')}); "
                             f"cannot resume a {self.mode!r} run from it; use another checkpoint_dir")
        saved = ckpt["config"]
        now = self._config_for_check()
        diff = sorted(k for k in now if saved.get(k) != now[k])
        if diff:
            detail = ", ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in diff)
            raise ValueError(f"{path}: cannot resume, TrainConfig differs from the checkpointed run ({detail}); "
                             f"use another checkpoint_dir")
        if ckpt["fingerprint"] != self.fingerprint:
            raise ValueError(f"{path}: cannot resume, the training/validation triplets differ from the "
                             f"checkpointed run; use another checkpoint_dir")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler = TargetScaler.from_state(ckpt["scaler"])
        s = ckpt["state"]
        self.state = _State(epoch=int(s["epoch"]), rows=[dict(r) for r in s["rows"]],
                            best_value=s["best_value"], best_epoch=s["best_epoch"],
                            bad_epochs=int(s["bad_epochs"]), stopped_early=bool(s["stopped_early"]),
                            top=[dict(t) for t in s["top"]])
        self.best_state = ckpt.get("best_state")
        _set_rng_state(ckpt["rng"], self.generator)
        self._prune_top_files()
        log.info("resumed from %s after epoch %d", path, self.state.epoch - 1)

    def _payload(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "model_init": _model_init(self.model, self.config),
                "scaler": self.scaler.state_dict(), "config": self.config.to_dict(),
                **_graph_record(self.cell_graph)}

    def _save(self) -> None:
        """Top-k file (if this epoch qualifies), then ``last.pt``, then the index, then evictions;
        a crash at any point leaves a consistent ``last.pt``."""
        d = self.ckpt_dir
        st = self.state
        epoch = st.epoch - 1
        value = st.rows[-1].get(self.metric, float("nan"))
        evicted: list[str] = []
        if self.config.keep_top_k > 0 and self._eligible(st.rows[-1]) and math.isfinite(value):
            entry = {"file": f"top/epoch_{epoch:04d}.pt", "epoch": epoch, "metric": self.metric,
                     "value": float(value)}
            ranked = sorted(st.top + [entry], key=lambda e: (-e["value"] if self.higher else e["value"], e["epoch"]))
            keep, evicted = ranked[:self.config.keep_top_k], [e["file"] for e in ranked[self.config.keep_top_k:]]
            if entry in keep:
                atomic_save_torch({**self._payload(), "epoch": epoch, "metric": self.metric,
                                   "value": float(value)}, d / entry["file"])
            else:
                evicted.remove(entry["file"])
            st.top = keep
        atomic_save_torch({
            **self._payload(), "format": _CHECKPOINT_FORMAT, "mode": self.mode,
            "config": self._config_for_check(), "optimizer": self.optimizer.state_dict(),
            "fingerprint": self.fingerprint, "rng": _rng_state(self.generator),
            "state": dataclasses.asdict(st), "best_state": self.best_state,
        }, d / "last.pt")
        atomic_write_json(st.top, d / "top_k.json")
        for f in evicted:
            (d / f).unlink(missing_ok=True)

    def _prune_top_files(self) -> None:
        keep = {t["file"] for t in self.state.top}
        for f in (self.ckpt_dir / "top").glob("epoch_*.pt"):
            if f"top/{f.name}" not in keep:
                f.unlink(missing_ok=True)
        atomic_write_json(self.state.top, self.ckpt_dir / "top_k.json")

    # ------------------------------------------------------------------ steps
    def _diverged(self, epoch: int, step: int, value: float, what: str = "loss") -> TrainingDivergedError:
        last = self.ckpt_dir / "last.pt" if self.ckpt_dir is not None else None
        kept = str(last) if last is not None and last.is_file() else None
        err = TrainingDivergedError(epoch, step, value, kept)
        if what != "loss":
            err.args = (str(err).replace("loss is", f"{what} is", 1),)
        return err

    def _eligible(self, row: Mapping[str, float]) -> bool:
        return self.mode != "pretrain" and row["w_int"] > 0

    def _batches(self, epoch: int):
        """Yields ``(triplet indices or None, scaled targets or None, raw targets or None, rows)``."""
        if self.mode == "pretrain":
            order = torch.randperm(self.n_items, generator=self.generator).to(self.device)
            for s in range(0, self.n_items, self.config.batch_size):
                yield None, None, None, order[s:s + self.config.batch_size]
        elif self.mode == "overfit":
            yield self.train_idx, self.train_z, self.train_y, None
        else:
            order = torch.randperm(self.n_items, generator=self.generator).to(self.device)
            for s in range(0, self.n_items, self.config.batch_size):
                sel = order[s:s + self.config.batch_size]
                yield self.train_idx[sel], self.train_z[sel], self.train_y[sel], None

    def _run_epoch(self, epoch: int, bar) -> dict[str, float]:
        t0 = time.perf_counter()
        w_rec, w_int = self.schedule.weights(epoch)
        model, opt, params = self.model, self.optimizer, [p for p in self.model.parameters()]
        model.train()
        sums: dict[str, torch.Tensor] = {}
        total_w = 0
        preds, targets = [], []
        n_steps = 0
        for step, (idx, z, y, rows) in enumerate(self._batches(epoch)):
            if idx is not None and w_rec == 0:
                rows = idx.new_empty(0)  # reconstruction not needed: gather no target rows
            out = model(self.graph, idx, recon_rows=rows, local=True)  # cost scales with the batch
            lo: LossOutput = self.loss_fn(out, z, epoch)
            loss_value = float(lo.total.detach())
            if not math.isfinite(loss_value):
                raise self._diverged(epoch, step, loss_value)
            opt.zero_grad(set_to_none=True)
            lo.total.backward()
            if self.config.grad_clip is not None:
                norm = torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
                if not torch.isfinite(norm):
                    raise self._diverged(epoch, step, float(norm), "gradient norm")
            opt.step()

            weight = idx.size(0) if idx is not None else rows.numel()
            total_w += weight
            parts = {"loss_total": lo.total.detach(), "loss_rec": lo.rec, "loss_int": lo.int}
            parts.update({f"loss_rec_{ch}": v for ch, v in lo.rec_per_channel.items()})
            for k, v in parts.items():
                sums[k] = sums[k] + v * weight if k in sums else v * weight
            if out.scores is not None:
                preds.append(out.scores.detach())
                targets.append(y)
            n_steps += 1
            if bar is not None:
                bar.update(1)

        row: dict[str, float] = {"epoch": epoch, "alpha": float(self.schedule.alpha(epoch)),
                                 "w_rec": float(w_rec), "w_int": float(w_int)}
        means = {k: float(v) / total_w for k, v in sums.items()}
        nan = float("nan")
        row["loss_total"] = means["loss_total"]
        row["loss_rec"] = means.get("loss_rec", nan) if w_rec != 0 else nan
        row["loss_int"] = means.get("loss_int", nan) if self.mode != "pretrain" else nan
        row["loss_rec_weighted"] = w_rec * row["loss_rec"] if w_rec != 0 else 0.0
        row["loss_int_weighted"] = w_int * row["loss_int"] if w_int != 0 else 0.0
        row["lr"] = float(opt.param_groups[0]["lr"])
        if preds:
            p = self.scaler.inverse_transform(torch.cat(preds).double()).cpu().numpy()
            row["train_pearson"], row["train_spearman"], row["train_mse"] = _regression_metrics(
                torch.cat(targets).cpu().numpy(), p)
        else:
            row["train_pearson"] = row["train_spearman"] = row["train_mse"] = nan
        if not all(torch.isfinite(p).all() for p in params):  # never checkpoint a poisoned model
            raise self._diverged(epoch, n_steps - 1, nan, "a model parameter")
        if self.val is not None:
            zv = _scores(model, self.graph, self.val_idx, 4096)
            pv = self.scaler.inverse_transform(zv.double()).cpu().numpy()
            if not np.all(np.isfinite(pv)):
                raise self._diverged(epoch, n_steps - 1, nan, "a validation prediction")
            row["val_pearson"], row["val_spearman"], row["val_mse"] = _regression_metrics(self.val_y, pv)
        else:
            row["val_pearson"] = row["val_spearman"] = row["val_mse"] = nan
        for ch in self.channels:
            row[f"loss_rec_{ch}"] = means.get(f"loss_rec_{ch}", nan) if w_rec != 0 else nan
        row["time_s"] = time.perf_counter() - t0
        return row

    def _steps_per_epoch(self) -> int:
        if self.mode == "overfit":
            return 1
        return -(-self.n_items // self.config.batch_size)

    # ------------------------------------------------------------------ loop
    def run(self) -> FitResult:
        with _deterministic():
            return self._run()

    def _run(self) -> FitResult:
        cfg, st = self.config, self.state
        epochs = range(st.epoch, cfg.epochs) if not st.stopped_early else range(0)
        ebar = tqdm(total=cfg.epochs, initial=st.epoch, desc=self.mode, unit="epoch",
                    disable=not cfg.progress, dynamic_ncols=True)
        try:
            for epoch in epochs:
                sbar = (tqdm(total=self._steps_per_epoch(), desc=f"epoch {epoch}", unit="step", leave=False,
                             dynamic_ncols=True) if cfg.progress and self._steps_per_epoch() > 1 else None)
                try:
                    row = self._run_epoch(epoch, sbar)
                finally:
                    if sbar is not None:
                        sbar.close()
                st.rows.append(row)
                st.epoch = epoch + 1
                stop = False
                if self._eligible(row):
                    value = row[self.metric]
                    if _improved(value, st.best_value, self.higher):
                        st.best_value, st.best_epoch, st.bad_epochs = float(value), epoch, 0
                        self.best_state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
                    else:
                        st.bad_epochs += 1
                        if cfg.early_stopping_patience is not None and st.bad_epochs >= cfg.early_stopping_patience:
                            st.stopped_early = stop = True
                if self.ckpt_dir is not None:
                    self._save()
                ebar.update(1)
                ebar.set_postfix({k: f"{row[k]:.4g}" for k in ("loss_total", "val_pearson")
                                  if math.isfinite(row[k])}, refresh=False)
                if self.callback is not None:
                    self.callback(epoch, dict(row))
                if stop:
                    log.info("early stopping after epoch %d: %s did not improve for %d epochs",
                             epoch, self.metric, st.bad_epochs)
                    break
        finally:
            ebar.close()
        self.model.eval()
        history = self._history()
        best = st.best_epoch if st.best_epoch is not None else (st.epoch - 1 if st.epoch else None)
        return FitResult(model=self.model, history=history, scaler=self.scaler, best_epoch=best,
                         checkpoint_dir=self.ckpt_dir, device=self.device, stopped_early=st.stopped_early,
                         best_state=self.best_state, config=self.config)

    def _history(self) -> pd.DataFrame:
        cols = list(HISTORY_COLUMNS) + [f"loss_rec_{ch}" for ch in self.channels]
        df = pd.DataFrame(self.state.rows, columns=cols)
        df["epoch"] = df["epoch"].astype("int64")
        return df


# ---------------------------------------------------------------------------------- entry points
def fit(cell_graph, train, val, config: TrainConfig, lambdas, model: Dango | None = None,
        callback: Callable[[int, dict], None] | None = None) -> FitResult:
    """Train DANGO on ``train`` triplets, tracking ``val`` (may be ``None``).

    Args:
        cell_graph: ``HeteroData`` with the STRING channels (``["gene"].num_nodes``).
        train, val: :class:`~dango_nb.data.TripletTensors` (targets on the tau scale; NaN = missing).
        config: :class:`TrainConfig`.
        lambdas: channel -> lambda (or a ``LambdaResult``); every channel of the graph needs one.
        model: start from this model (e.g. a pre-trained one) instead of a fresh seeded ``Dango``;
            a checkpoint in ``config.checkpoint_dir`` still takes precedence.
        callback: called as ``callback(epoch, row)`` after every epoch with that history row.
    """
    return _Engine("fit", cell_graph, train, val, config, lambdas, model, callback).run()


def overfit_batch(cell_graph, batch, config: TrainConfig, lambdas, model: Dango | None = None,
                  callback: Callable[[int, dict], None] | None = None) -> FitResult:
    """Train on one fixed batch (all of ``batch``, one step per epoch) for ``config.epochs`` epochs.

    The train metrics of a row are those of the whole batch, from the predictions made just before
    that epoch's update. ``config.batch_size`` is not used.
    """
    return _Engine("overfit", cell_graph, batch, None, config, lambdas, model, callback).run()


def pretrain(cell_graph, config: TrainConfig, lambdas, model: Dango | None = None,
             callback: Callable[[int, dict], None] | None = None) -> FitResult:
    """Reconstruction-only training over all genes: each epoch visits every gene's adjacency rows
    once, ``config.batch_size`` genes per step, in a seeded shuffled order.

    ``config.schedule`` is not used (the weight on reconstruction is 1). History rows hold the
    reconstruction loss and ``loss_rec_<channel>``; interaction columns are NaN. The returned
    ``model`` is a full :class:`~dango_nb.models.Dango` whose ``pretrain`` part is trained; pass it
    to :func:`fit` as ``model`` to continue, or reconstruct rows with ``model(graph, None, rows)``
    (``DangoOutput.reconstructions()``) for held-out edge scoring.
    """
    return _Engine("pretrain", cell_graph, None, None, config, lambdas, model, callback).run()
