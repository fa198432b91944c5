"""Live training curves: a callback that mirrors each history row into TensorBoard event files.

``history.csv`` (the loop's rows) stays the source of truth; :class:`TensorBoardLogger` only copies
every row, one point per column at global step = epoch, so ``tensorboard --logdir runs/`` shows a
run while it trains. Tags (:func:`tag_of`):

- ``loss/<name>``: every ``loss_*`` column without its prefix (``loss/total``, ``loss/rec``,
  ``loss/int``, ``loss/rec_weighted``, ``loss/int_weighted``, ``loss/rec_<channel>``);
- ``train/<metric>`` and ``val/<metric>``: ``pearson``, ``spearman``, ``mse``;
- ``schedule/<name>``: ``lr``, ``alpha``, ``w_rec``, ``w_int``;
- ``time/epoch_s``: ``time_s``; any other column ``other/<column>``.

A NaN value (a branch not computed in that epoch, no validation set) is not written. Events are
flushed at the end of every epoch and the writer is closed when training ends, also when it fails.

Resume: a run resumed after epoch ``k`` (its checkpoint holds the rows of epochs ``0..k``) opens
the writer with ``purge_step=k`` and writes row ``k`` again from the checkpoint, then the new
epochs: TensorBoard drops the older events at or after the purge step, so each tag holds exactly
one point per epoch, the checkpoint's, even when the previous attempt died after checkpointing
epoch ``k`` but before logging it, or logged epochs the checkpoint does not hold. A fresh run
purges from step 0 (stale events of an attempt that never checkpointed are hidden).

``torch.utils.tensorboard`` (and so the ``tensorboard`` package) is imported when a logger is
made, never by ``import dango_nb.train``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping

from dango_nb.train.callbacks import Callback

__all__ = ["TensorBoardLogger", "summary_writer_class", "tag_of"]

_SCHEDULE = ("lr", "alpha", "w_rec", "w_int")


def tag_of(column: str) -> str:
    """The TensorBoard tag of a history column (``epoch`` is the step, not a tag)."""
    if column.startswith("loss_"):
        return f"loss/{column[len('loss_'):]}"
    for part in ("train", "val"):
        if column.startswith(f"{part}_"):
            return f"{part}/{column[len(part) + 1:]}"
    if column in _SCHEDULE:
        return f"schedule/{column}"
    if column == "time_s":
        return "time/epoch_s"
    return f"other/{column}"


def summary_writer_class():
    """``torch.utils.tensorboard.SummaryWriter``; an :class:`ImportError` that says how to install
    TensorBoard when it is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise ImportError(f"TensorBoard logging needs the tensorboard package ({err}); install it with "
                          "`pip install tensorboard`") from err
    return SummaryWriter


class TensorBoardLogger(Callback):
    """Writes every history row to TensorBoard event files in ``log_dir`` (global step = epoch).

    Pass it to :func:`~dango_nb.train.fit` (or :class:`~dango_nb.train.TrainingLoop`) as
    ``callbacks=[TensorBoardLogger(log_dir)]``; run folders (:func:`dango_nb.runs.train_run`) use
    ``<run folder>/tensorboard/``. Checks on construction that TensorBoard can be imported.
    """

    def __init__(self, log_dir: str | os.PathLike):
        self.log_dir = Path(log_dir)
        self._writer_class = summary_writer_class()
        self.writer = None

    def on_train_start(self, loop) -> None:
        start = max(int(loop.epoch) - 1, 0)  # resumed after epoch loop.epoch - 1: rewrite that row
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.writer = self._writer_class(log_dir=str(self.log_dir), purge_step=start)
        for row in loop.rows[start:]:
            self.write_row(int(row["epoch"]), row)
        self.writer.flush()

    def write_row(self, epoch: int, row: Mapping[str, Any]) -> None:
        """One point per column of ``row`` at step ``epoch``; NaN and missing values are skipped."""
        for column, value in row.items():
            if column == "epoch" or value is None:
                continue
            value = float(value)
            if math.isnan(value):
                continue
            self.writer.add_scalar(tag_of(column), value, global_step=epoch)

    def on_epoch_end(self, loop, epoch: int, row: Mapping[str, float]) -> bool:
        self.write_row(epoch, row)
        self.writer.flush()
        return False

    def on_train_end(self, loop) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
