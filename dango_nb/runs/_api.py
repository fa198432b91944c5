"""The library functions this package drives, imported in one place (so a move of the training or
evaluation modules is a change here only)."""

from __future__ import annotations

from ..eval.ensemble import checkpoint_files
from ..eval.prediction import predict
from ..eval.splits import SPLITS, make_splits
from ..metrics import evaluate as evaluate_metrics
from ..train import FitResult, TrainConfig, fit, list_checkpoints, load_checkpoint, resolve_device
from ..train.checkpoint import load_intact
from ..train.device import check_device
from ..train.tensorboard import TensorBoardLogger, summary_writer_class

__all__ = ["SPLITS", "FitResult", "TrainConfig", "check_device", "checkpoint_files", "evaluate_metrics", "fit", "list_checkpoints",
           "load_checkpoint", "load_intact", "make_splits", "predict", "resolve_device",
           "summary_writer_class", "TensorBoardLogger"]
