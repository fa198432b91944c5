"""Callbacks of the training loop: early stopping (and the best epoch), the learning-rate
schedule, checkpoints, progress bars and the user's per-epoch function.

The loop calls, in order of ``loop.callbacks``: ``on_train_start(loop)``,
``on_epoch_start(loop, epoch)``, ``on_step_start(loop, epoch, step)``, ``on_step_end(loop, epoch, step)``, ``on_epoch_end(loop, epoch,
row)`` (a true return value stops the run after this epoch) and ``on_train_end(loop)`` (also when
the run fails). State that must survive a resume goes through ``state_dict``/``load_state_dict``.
"""

from __future__ import annotations

import logging
import math
import sys
from typing import Any, Callable, Mapping

from tqdm.auto import tqdm

from dango_nb.train.checkpoint import CheckpointManager, rng_state
from dango_nb.train.config import LR_SCHEDULES, higher_is_better

__all__ = ["Callback", "EarlyStopping", "LearningRateSchedule", "LearningRateWarmup", "ModelCheckpoint", "ProgressBar",
           "EpochCallback"]

log = logging.getLogger(__name__)


class Callback:
    def on_train_start(self, loop) -> None:
        pass

    def on_epoch_start(self, loop, epoch: int) -> None:
        pass

    def on_step_start(self, loop, epoch: int, step: int) -> None:
        pass

    def on_step_end(self, loop, epoch: int, step: int) -> None:
        pass

    def on_epoch_end(self, loop, epoch: int, row: Mapping[str, float]) -> bool | None:
        return None

    def on_train_end(self, loop) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass


class EarlyStopping(Callback):
    """Tracks the best eligible epoch by ``metric`` (and a CPU copy of its parameters,
    ``best_state``); with ``patience`` stops after that many eligible epochs without improvement."""

    def __init__(self, metric: str, patience: int | None = None):
        self.metric, self.patience, self.higher = metric, patience, higher_is_better(metric)
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.bad_epochs = 0
        self.stopped_early = False
        self.best_state = None

    def _improved(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.best_value is None:
            return True
        return value > self.best_value if self.higher else value < self.best_value

    def on_epoch_end(self, loop, epoch, row):
        if not loop.eligible(row):
            return False
        value = row[self.metric]
        if self._improved(value):
            self.best_value, self.best_epoch, self.bad_epochs = float(value), epoch, 0
            self.best_state = {k: v.detach().cpu().clone() for k, v in loop.model.state_dict().items()}
            return False
        self.bad_epochs += 1
        if self.patience is not None and self.bad_epochs >= self.patience:
            self.stopped_early = True
            log.info("early stopping after epoch %d: %s did not improve for %d epochs",
                     epoch, self.metric, self.bad_epochs)
        return self.stopped_early

    def state_dict(self):
        return {"best_value": self.best_value, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs,
                "stopped_early": self.stopped_early}

    def load_state_dict(self, state):
        self.best_value, self.best_epoch = state["best_value"], state["best_epoch"]
        self.bad_epochs, self.stopped_early = int(state["bad_epochs"]), bool(state["stopped_early"])


class LearningRateSchedule(Callback):
    """The learning rate per epoch (``TrainConfig.lr_schedule``). Off by default: the original DANGO
    code and the summary spec keep Adam's rate fixed; TorchCell's DANGO reduces it on a plateau.

    - ``"cosine"``: ``lr_e = lr_min + (lr - lr_min) * (1 + cos(pi * e / epochs)) / 2`` for epoch
      ``e`` of ``epochs`` (set before each epoch; a closed form of the epoch, so a resumed run
      gets the same rates; its horizon is ``epochs``, which a resume therefore may not change).
    - ``"plateau"``: multiply the rate by ``factor`` (not below ``lr_min``) after ``patience``
      eligible epochs in a row without improvement of the early-stopping metric
      (:class:`torch.optim.lr_scheduler.ReduceLROnPlateau`; pre-training epochs do not count).

    Runs after :class:`EarlyStopping` and before :class:`ModelCheckpoint`, so a checkpoint holds
    the rate and the plateau counter after this epoch's decision.
    """

    def __init__(self, optimizer, kind: str, lr: float, epochs: int, lr_min: float = 0.0,
                 factor: float = 0.5, patience: int = 2, higher: bool = True):
        if kind not in LR_SCHEDULES:
            raise ValueError(f"unknown learning-rate schedule {kind!r}; known: {', '.join(LR_SCHEDULES)}")
        self.optimizer, self.kind, self.lr, self.epochs, self.lr_min = optimizer, kind, lr, epochs, lr_min
        self.plateau = None
        if kind == "plateau":
            from torch.optim.lr_scheduler import ReduceLROnPlateau

            self.plateau = ReduceLROnPlateau(optimizer, mode="max" if higher else "min", factor=factor,
                                             patience=patience, threshold=0.0, min_lr=lr_min)

    def rate(self, epoch: int) -> float:
        """The cosine rate of ``epoch``."""
        return self.lr_min + (self.lr - self.lr_min) * (1.0 + math.cos(math.pi * epoch / self.epochs)) / 2.0

    def on_epoch_start(self, loop, epoch):
        if self.kind == "cosine":
            for group in self.optimizer.param_groups:
                group["lr"] = self.rate(epoch)

    def on_epoch_end(self, loop, epoch, row):
        if self.plateau is not None and loop.eligible(row) and math.isfinite(row[loop.early_stopping.metric]):
            before = self.optimizer.param_groups[0]["lr"]
            self.plateau.step(row[loop.early_stopping.metric])
            after = self.optimizer.param_groups[0]["lr"]
            if after < before:
                log.info("epoch %d: learning rate %.3g -> %.3g (%s on a plateau)", epoch, before, after,
                         loop.early_stopping.metric)
        return False

    def state_dict(self):
        if self.plateau is not None:
            return {"plateau": self.plateau.state_dict()}
        return {"epochs": self.epochs}  # the cosine horizon, checked when a run resumes

    def load_state_dict(self, state):
        if self.plateau is not None and state.get("plateau") is not None:
            self.plateau.load_state_dict(state["plateau"])


class LearningRateWarmup(Callback):
    """Linear warm-up of the interaction stage (``TrainConfig.lr_warmup_epochs``).

    Step ``s`` (counted from the first epoch that trains the interaction loss, ``start_epoch``) of
    ``n = round(warmup_epochs * steps_per_epoch)`` warm-up steps runs at ``lr * (s + 1) / n``; the
    rate is scaled just for that step and put back after it, so a learning-rate schedule (cosine,
    plateau) keeps seeing and setting the base rate. The factor is a closed form of (epoch, step):
    a resumed run warms up exactly as an uninterrupted one.
    """

    def __init__(self, optimizer, warmup_epochs: float, start_epoch: int, steps_per_epoch: int):
        self.optimizer, self.start_epoch = optimizer, int(start_epoch)
        self.steps_per_epoch = max(int(steps_per_epoch), 1)
        self.n = max(int(round(float(warmup_epochs) * self.steps_per_epoch)), 1) if warmup_epochs > 0 else 0
        self.base: list[float] | None = None

    def factor(self, epoch: int, step: int) -> float:
        s = (epoch - self.start_epoch) * self.steps_per_epoch + step
        if self.n == 0 or s < 0 or s >= self.n:
            return 1.0
        return (s + 1) / self.n

    def on_step_start(self, loop, epoch, step):
        f = self.factor(epoch, step)
        if f != 1.0:
            self.base = [g["lr"] for g in self.optimizer.param_groups]
            for g, lr in zip(self.optimizer.param_groups, self.base):
                g["lr"] = lr * f

    def on_step_end(self, loop, epoch, step):
        if self.base is not None:
            for g, lr in zip(self.optimizer.param_groups, self.base):
                g["lr"] = lr
            self.base = None


class ModelCheckpoint(Callback):
    """``last.pt`` after every epoch, ``best.pt`` for the best epoch and the top-k eligible epochs
    (:class:`CheckpointManager`); runs after :class:`EarlyStopping`, which decides the best epoch."""

    def __init__(self, manager: CheckpointManager, early_stopping: EarlyStopping):
        self.manager, self.early_stopping = manager, early_stopping

    def on_train_start(self, loop):
        es = self.early_stopping  # resumed: best.pt must hold the best epoch the run goes on from
        if es.best_epoch is not None and es.best_state is not None:
            self.manager.restore_best(self.manager.payload(loop.model, loop.scaler, loop.cell_graph), es.best_state,
                                      es.best_epoch, es.best_value)

    def on_epoch_end(self, loop, epoch, row):
        es = self.early_stopping
        state = {"epoch": loop.epoch, "rows": [dict(r) for r in loop.rows], **es.state_dict(),
                 "loss_reference": dict(loop.loss_reference)}
        if loop.lr_schedule is not None:
            state["lr_schedule"] = loop.lr_schedule.state_dict()
        last = {"optimizer": loop.optimizer.state_dict(), "rng": rng_state(loop.generator),
                "state": state, "best_state": es.best_state}
        self.manager.save(self.manager.payload(loop.model, loop.scaler, loop.cell_graph), epoch,
                          row.get(es.metric, float("nan")), loop.eligible(row), es.higher, last,
                          best=es.best_epoch == epoch)


class ProgressBar(Callback):
    """An epoch bar and, for sources with several steps, a step bar per epoch (tqdm)."""

    def __init__(self, desc: str):
        self.desc, self.ebar, self.sbar = desc, None, None

    def on_train_start(self, loop):
        tqdm.write(f"dango_nb: {self.desc} on {loop.device}", file=sys.stderr)
        self.ebar = tqdm(total=loop.config.epochs, initial=loop.epoch, desc=self.desc, unit="epoch",
                         dynamic_ncols=True)

    def on_epoch_start(self, loop, epoch):
        steps = loop.source.steps_per_epoch()
        if steps > 1:
            self.sbar = tqdm(total=steps, desc=f"epoch {epoch}", unit="step", leave=False, dynamic_ncols=True)

    def on_step_end(self, loop, epoch, step):
        if self.sbar is not None:
            self.sbar.update(1)

    def _close_step_bar(self):
        if self.sbar is not None:
            self.sbar.close()
            self.sbar = None

    def on_epoch_end(self, loop, epoch, row):
        self._close_step_bar()
        self.ebar.update(1)
        self.ebar.set_postfix({k: f"{row[k]:.4g}" for k in ("loss_total", "val_pearson") if math.isfinite(row[k])},
                              refresh=False)

    def on_train_end(self, loop):
        self._close_step_bar()
        if self.ebar is not None:
            self.ebar.close()


class EpochCallback(Callback):
    """Calls ``fn(epoch, row)`` after every epoch with a copy of that history row."""

    def __init__(self, fn: Callable[[int, dict], None]):
        self.fn = fn

    def on_epoch_end(self, loop, epoch, row):
        self.fn(epoch, dict(row))
