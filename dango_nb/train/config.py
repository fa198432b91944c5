"""Training settings: :class:`TrainConfig`, validated on construction without importing torch.

Every field is a plain type so a YAML mapping fills it directly (params files validate ``train.*``
by building this class). ``model`` holds :class:`~dango_nb.models.Dango` keyword arguments and is
checked against ``Dango.__init__``'s signature and annotated types
(:meth:`~dango_nb.models.Dango.check_hyperparameters`), so a bad value fails here, naming the key,
instead of minutes later inside torch. That check imports the model (torch) only when ``model`` is
not empty.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from dango_nb.argtypes import MAX_SEED
from dango_nb.errors import shown
from dango_nb.schedules import SCHEDULES

#: Learning-rate schedules (``TrainConfig.lr_schedule``); :mod:`dango_nb.train.callbacks` implements them.
LR_SCHEDULES = ("cosine", "plateau")

__all__ = ["HISTORY_COLUMNS", "LR_SCHEDULES", "METRIC_COLUMNS", "RESUMABLE_KEYS", "TrainConfig", "higher_is_better"]

HISTORY_COLUMNS = (
    "epoch", "alpha", "w_rec", "w_int", "loss_total", "loss_rec", "loss_int", "loss_rec_weighted",
    "loss_int_weighted", "lr", "train_pearson", "train_spearman", "train_mse", "val_pearson",
    "val_spearman", "val_mse", "time_s",
)
#: Columns an early-stopping / top-k metric may name; pearson and spearman are maximised, the rest
#: (errors and losses) minimised.
METRIC_COLUMNS = ("val_pearson", "val_spearman", "val_mse", "train_pearson", "train_spearman",
                  "train_mse", "loss_total", "loss_rec", "loss_int")
#: Config keys a resumed run may change (they do not change the numbers of the epochs already run).
RESUMABLE_KEYS = frozenset({"epochs", "progress", "checkpoint_dir", "device", "early_stopping_patience",
                            "keep_top_k", "divergence_factor"})
PRECISIONS = ("fp32", "bf16")
#: Most epochs (and the largest transition epoch) a config may ask for: per-epoch tables and
#: schedules are built epoch by epoch, so a larger count would only hang.
MAX_EPOCHS = 100_000

_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def higher_is_better(metric: str) -> bool:
    return metric.endswith(("pearson", "spearman"))


@dataclass
class TrainConfig:
    """Training settings.

    Args:
        epochs: epochs to train (a resumed run continues up to this many).
        batch_size: triplets per step (:func:`~dango_nb.train.fit`); genes per step in
            :func:`~dango_nb.train.pretrain`.
        optimizer: ``"adam"`` or ``"adamw"``.
        lr, weight_decay: optimiser settings (``weight_decay`` with ``"adamw"`` is decoupled weight
            decay, Loshchilov & Hutter; with ``"adam"`` it is an L2 term in the gradient). The
            original DANGO code uses Adam without weight decay (the default here); TorchCell's
            DANGO uses AdamW with weight decay 1e-6.
        lr_schedule: ``None`` (a constant rate, as in the original DANGO code and the spec),
            ``"cosine"`` or ``"plateau"`` (:class:`~dango_nb.train.callbacks.LearningRateSchedule`;
            TorchCell's DANGO reduces on a plateau: factor 0.2, patience 3).
        lr_min: the floor of either schedule.
        lr_factor, lr_patience: ``"plateau"``: multiply the rate by ``lr_factor`` after
            ``lr_patience`` eligible epochs without improvement of ``early_stopping_metric``.
        lr_warmup_epochs: ramp the rate linearly, step by step, from ``lr / n`` to ``lr`` over the
            first ``n`` steps of the interaction stage, ``n`` = this many epochs' steps (may be a
            fraction; 0 = no warm-up). The usual companion of a large batch with a scaled rate
            (Goyal et al. 2017): the interaction head starts from random weights and fresh Adam
            moments there. Reconstruction-only epochs before it run at the full rate.
        schedule, transition_epoch: loss schedule by registered name (:mod:`dango_nb.schedules`).
        interaction_loss: ``"logcosh"`` or ``"mse"``.
        grad_clip: max global gradient norm, ``None`` for no clipping.
        divergence_factor: stop with :class:`~dango_nb.errors.TrainingDivergedError` when a step's
            raw reconstruction or interaction loss exceeds this many times its value at the first
            step of the run that computed it (values below 1e-3 count as 1e-3); ``None`` turns
            the check off (a NaN or infinite loss always stops the run).
        early_stopping_patience: stop after this many eligible epochs without improvement of
            ``early_stopping_metric`` (``None`` = never stop early; the original DANGO code stops
            after 10).
        early_stopping_metric: a history column; also ranks the top-k checkpoints and ``best_epoch``.
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.
        seed: seeds Python, NumPy, torch and the shuffling generator.
        checkpoint_dir: where checkpoints go (``None`` = none); resumes from ``last.pt`` there.
        keep_top_k: best checkpoints kept (the original DANGO kept 5 for its ensemble).
        progress: tqdm progress bars.
        precision: ``"fp32"`` or ``"bf16"`` (bfloat16 autocast of the forward pass and the losses,
            CUDA only: a CPU run with ``"bf16"`` is refused when it starts).
        model: keyword arguments for :class:`~dango_nb.models.Dango` (``hidden_channels``,
            ``num_heads``, ``num_layers``, ``beta_init``, ``activation``, ``meta_embedding``, ``batched``).
    """

    epochs: int = 50
    batch_size: int = 256
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_schedule: str | None = None
    lr_min: float = 0.0
    lr_factor: float = 0.5
    lr_patience: int = 2
    lr_warmup_epochs: float = 0.0
    schedule: str = "PreThenPost"
    transition_epoch: int = 10
    interaction_loss: str = "logcosh"
    grad_clip: float | None = 1.0
    divergence_factor: float | None = 1000.0
    early_stopping_patience: int | None = None
    early_stopping_metric: str = "val_pearson"
    device: str = "auto"
    seed: int = 0
    checkpoint_dir: str | None = None
    keep_top_k: int = 5
    progress: bool = True
    precision: str = "fp32"
    model: dict = field(default_factory=dict)

    def __post_init__(self):
        def bad(name: str, expected: str):
            return ValueError(f"TrainConfig.{name}: expected {expected}, got {shown(getattr(self, name))}")

        def integer(name: str, minimum: int, allow_none: bool = False, maximum: int | None = None):
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if isinstance(v, bool) or not _is_int(v) or v < minimum or (maximum is not None and v > maximum):
                within = f"an integer >= {minimum}" if maximum is None else f"an integer from {minimum} to {maximum}"
                raise bad(name, within + (" or None" if allow_none else ""))
            setattr(self, name, int(v))

        def number(name: str, minimum: float, strict: bool, allow_none: bool = False):
            v = getattr(self, name)
            if v is None and allow_none:
                return
            ok = (_is_int(v) or _is_float(v)) and not isinstance(v, bool)
            if not ok or not math.isfinite(v) or v < minimum or (strict and v == minimum):
                rel = ">" if strict else ">="
                raise bad(name, f"a finite number {rel} {minimum}" + (" or None" if allow_none else ""))
            setattr(self, name, float(v))

        integer("epochs", 1, maximum=MAX_EPOCHS)
        integer("batch_size", 1)
        if self.optimizer not in ("adam", "adamw"):
            raise bad("optimizer", "'adam' or 'adamw'")
        number("lr", 0.0, strict=True)
        number("weight_decay", 0.0, strict=False)
        if self.lr_schedule is not None and self.lr_schedule not in LR_SCHEDULES:
            raise bad("lr_schedule", "null, " + " or ".join(f"'{k}'" for k in LR_SCHEDULES))
        number("lr_min", 0.0, strict=False)
        if self.lr_min >= self.lr:
            raise bad("lr_min", f"a number below lr ({self.lr})")
        number("lr_factor", 0.0, strict=True)
        if self.lr_factor >= 1.0:
            raise bad("lr_factor", "a number in (0, 1)")
        integer("lr_patience", 0)
        number("lr_warmup_epochs", 0.0, strict=False)
        if self.lr_warmup_epochs > MAX_EPOCHS:
            raise bad("lr_warmup_epochs", f"a number from 0 to {MAX_EPOCHS}")
        if not isinstance(self.schedule, str) or self.schedule not in SCHEDULES:
            raise bad("schedule", "one of " + ", ".join(sorted(SCHEDULES)))
        integer("transition_epoch", 0, maximum=MAX_EPOCHS)
        if self.interaction_loss not in ("logcosh", "mse"):
            raise bad("interaction_loss", "'logcosh' or 'mse'")
        number("grad_clip", 0.0, strict=True, allow_none=True)
        number("divergence_factor", 1.0, strict=True, allow_none=True)
        integer("early_stopping_patience", 1, allow_none=True)
        if self.early_stopping_metric not in METRIC_COLUMNS:
            raise bad("early_stopping_metric", "one of " + ", ".join(METRIC_COLUMNS))
        if not isinstance(self.device, str) or not _DEVICE.fullmatch(self.device):
            raise bad("device", "'auto', 'cpu', 'cuda', 'cuda:<n>' or 'mps'")
        integer("seed", 0, maximum=MAX_SEED)
        if self.checkpoint_dir is not None and not isinstance(self.checkpoint_dir, (str, Path)):
            raise bad("checkpoint_dir", "a path string or None")
        if self.checkpoint_dir is not None:
            self.checkpoint_dir = str(self.checkpoint_dir)
        integer("keep_top_k", 0)
        if not isinstance(self.progress, bool):
            raise bad("progress", "true or false")
        if self.precision not in PRECISIONS:
            raise bad("precision", "'fp32' or 'bf16'")
        if not isinstance(self.model, Mapping):
            raise bad("model", "a mapping of Dango keyword arguments")
        self.model = dict(self.model)
        if self.model:
            from dango_nb.models.dango import Dango  # torch: only when there is something to check

            try:
                Dango.check_hyperparameters(self.model)
            except ValueError as err:
                raise ValueError(f"TrainConfig.model.{err}") from None

    def check_warmup(self, schedule=None) -> None:
        """``ValueError`` naming ``lr_warmup_epochs`` when the warm-up outlasts the epochs that
        train the interaction loss: the rate would never reach ``lr``."""
        if self.lr_warmup_epochs <= 0:
            return
        n = len(self.interaction_epochs(schedule))
        if n and self.lr_warmup_epochs > n:
            raise ValueError(f"TrainConfig.lr_warmup_epochs: expected at most the {n} epoch(s) that train the "
                             f"interaction loss (epochs={self.epochs}, transition_epoch={self.transition_epoch}), "
                             f"got {self.lr_warmup_epochs:g}: the rate would never reach lr")

    def interaction_epochs(self, schedule=None) -> list[int]:
        """The epochs in which ``schedule`` (default: the configured one) gives the interaction
        loss a weight above 0 (torch-free; :func:`~dango_nb.train.fit` refuses a run with none)."""
        if schedule is None:
            schedule = SCHEDULES[self.schedule](self.transition_epoch)
        return [e for e in range(self.epochs) if schedule.weights(e)[1] > 0]

    def check_trains_interaction(self, schedule=None) -> None:
        """``ValueError`` naming ``transition_epoch`` when ``schedule`` (default: the configured one)
        never gives the interaction loss a weight in ``epochs`` epochs: a triplet fit would train no
        interaction head and pick an untrained model as its best epoch. Parameter schemas that
        train on triplets call this when validating, so the error comes before any work."""
        if schedule is None:
            schedule = SCHEDULES[self.schedule](self.transition_epoch)
        self.check_warmup(schedule)
        if not self.interaction_epochs(schedule):
            raise ValueError(
                f"TrainConfig.transition_epoch: schedule {schedule.name!r} with transition_epoch="
                f"{schedule.transition_epoch} gives the interaction loss weight 0 in all {self.epochs} epochs, "
                f"so the interaction head would never be trained and best_epoch would be an untrained model; "
                f"set epochs > transition_epoch, or train reconstruction only with dango_nb.train.pretrain")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "TrainConfig":
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral)  # numpy integers register as Integral


def _is_float(v) -> bool:
    return isinstance(v, numbers.Real)
