"""Training: configuration, target scaler, checkpoints, the loop with its batch sources and
callbacks, and the three entry points :func:`fit`, :func:`overfit_batch` and :func:`pretrain`.

Names load on first use, so ``from dango_nb.train import TrainConfig`` (params files, the command
line) does not import torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "fit": "api", "overfit_batch": "api", "pretrain": "api",
    "Callback": "callbacks", "EarlyStopping": "callbacks", "EpochCallback": "callbacks",
    "ModelCheckpoint": "callbacks", "ProgressBar": "callbacks",
    "CheckpointManager": "checkpoint", "list_checkpoints": "checkpoint", "load_checkpoint": "checkpoint",
    "HISTORY_COLUMNS": "config", "METRIC_COLUMNS": "config", "TrainConfig": "config",
    "resolve_device": "device",
    "FitResult": "loop", "TrainingLoop": "loop",
    "TargetScaler": "scaler",
    "TensorBoardLogger": "tensorboard",
    "Batch": "sources", "BatchSource": "sources", "FixedBatch": "sources", "GeneEpochs": "sources",
    "TripletEpochs": "sources",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"dango_nb.train.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dango_nb.train' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
