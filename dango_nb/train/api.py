"""The three kinds of run, each one :class:`~dango_nb.train.loop.TrainingLoop` with its batch source."""

from __future__ import annotations

from typing import Callable

from dango_nb.models import Dango
from dango_nb.schedules import Schedule, get_schedule
from dango_nb.train.config import TrainConfig
from dango_nb.train.loop import FitResult, TrainingLoop
from dango_nb.train.sources import FixedBatch, GeneEpochs, TripletEpochs

__all__ = ["fit", "overfit_batch", "pretrain"]

EpochFn = Callable[[int, dict], None]


class ReconstructionOnly(Schedule):
    """alpha = 1 at every epoch (:func:`pretrain`); not registered, it is not a training schedule."""

    def alpha(self, epoch: int) -> float:
        return 1.0


def _schedule(config: TrainConfig) -> Schedule:
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    return get_schedule(config.schedule, config.transition_epoch)


def fit(cell_graph, train, val, config: TrainConfig, lambdas, model: Dango | None = None,
        callback: EpochFn | None = None, callbacks=None) -> FitResult:
    """Train DANGO on ``train`` triplets, tracking ``val`` (may be ``None``).

    Args:
        cell_graph: ``HeteroData`` with the STRING channels (``["gene"].num_nodes``).
        train, val: :class:`~dango_nb.data.TripletTensors` (targets on the tau scale; NaN = missing).
        config: :class:`~dango_nb.train.TrainConfig`.
        lambdas: channel -> lambda (or a ``LambdaResult``); every channel of the graph needs one.
        model: start from this model (e.g. a pre-trained one) instead of a fresh seeded ``Dango``;
            a checkpoint in ``config.checkpoint_dir`` still takes precedence.
        callback: called as ``callback(epoch, row)`` after every epoch with that history row.
        callbacks: further :class:`~dango_nb.train.callbacks.Callback` objects.
    """
    return TrainingLoop(cell_graph, TripletEpochs(train), val, config, lambdas, _schedule(config), model,
                        callback, callbacks).run()


def overfit_batch(cell_graph, batch, config: TrainConfig, lambdas, model: Dango | None = None,
                  callback: EpochFn | None = None, callbacks=None) -> FitResult:
    """Train on one fixed batch (all of ``batch``, one step per epoch) for ``config.epochs`` epochs.

    The train metrics of a row are those of the whole batch, from the predictions made just before
    that epoch's update. ``config.batch_size`` is not used.
    """
    return TrainingLoop(cell_graph, FixedBatch(batch), None, config, lambdas, _schedule(config), model,
                        callback, callbacks).run()


def pretrain(cell_graph, config: TrainConfig, lambdas, model: Dango | None = None,
             callback: EpochFn | None = None, callbacks=None) -> FitResult:
    """Reconstruction-only training over all genes: each epoch visits every gene's adjacency rows
    once, ``config.batch_size`` genes per step, in a seeded shuffled order.

    ``config.schedule`` is not used (the weight on reconstruction is 1). History rows hold the
    reconstruction loss and ``loss_rec_<channel>``; interaction columns are NaN. The returned
    ``model`` is a full :class:`~dango_nb.models.Dango` whose ``pretrain`` part is trained; pass it
    to :func:`fit` as ``model`` to continue, or reconstruct rows with ``model(graph, None, rows)``
    (``DangoOutput.reconstructions()``) for held-out edge scoring.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    return TrainingLoop(cell_graph, GeneEpochs(), None, config, lambdas, ReconstructionOnly(), model,
                        callback, callbacks).run()
