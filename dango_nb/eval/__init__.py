"""Evaluation: splits, baselines, ensembles, prediction, pre-training analyses, the model registry
and the runner that puts them into one metrics table."""

from dango_nb.eval.ensemble import (EnsembleScorer, Member, checkpoint_files, combine, ensemble_contributions,
                                    ensemble_gain, member_predictions)
from dango_nb.eval.options import EvaluationOptions
from dango_nb.eval.prediction import evaluate, predict
from dango_nb.eval.registry import (DEFAULT_MODELS, MODELS, DangoVariant, FoldData, ModelOutput, get_model,
                                    model_names, register_model)
from dango_nb.eval.runner import (EvaluationResult, planted_signal, run_evaluation, seed_values,
                                  summary_table)
from dango_nb.eval.runners import graph_channels, restrict_channels
from dango_nb.eval.splits import SPLITS, Fold, make_splits

__all__ = [
    "DEFAULT_MODELS", "MODELS", "SPLITS", "DangoVariant", "EnsembleScorer", "EvaluationOptions", "EvaluationResult",
    "Fold", "FoldData", "Member", "ModelOutput", "checkpoint_files", "combine", "ensemble_contributions", "ensemble_gain", "evaluate",
    "get_model", "graph_channels", "make_splits", "member_predictions", "model_names", "planted_signal", "predict",
    "register_model", "restrict_channels", "run_evaluation", "seed_values", "summary_table",
]
