"""The library functions this package drives, imported in one place (so a move of the training or
evaluation modules is a change here only)."""

from __future__ import annotations

from ..training import (
    FitResult, TrainConfig, fit, list_checkpoints, load_checkpoint, predict, resolve_device,
)
from ..ensemble import checkpoint_files
from ..metrics import evaluate as evaluate_metrics
from ..splits import SPLITS, make_splits

__all__ = ["FitResult", "TrainConfig", "fit", "list_checkpoints", "load_checkpoint", "predict", "resolve_device",
           "checkpoint_files", "evaluate_metrics", "SPLITS", "make_splits"]
