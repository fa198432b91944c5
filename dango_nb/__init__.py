"""dango_nb: notebook-driven DANGO, predicting yeast trigenic interactions from STRING channels.

Subpackages: :mod:`dango_nb.data` (loaders, cell graph, triplets, the synthetic benchmark),
:mod:`dango_nb.models` (the DANGO modules and their inference), :mod:`dango_nb.train` (config,
loop, callbacks, checkpoints), :mod:`dango_nb.eval` (splits, baselines, ensembles, prediction,
the evaluation runner); with :mod:`dango_nb.params`, :mod:`dango_nb.plots` and
:mod:`dango_nb.report` for the notebooks. Subpackages load on first use (``dango_nb.train``...),
so ``import dango_nb`` stays light.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = ("data", "models", "train", "eval", "params", "plots", "report", "widgets", "lambdas", "metrics",
               "schedules", "losses")
__all__ = ["__version__", *_SUBMODULES]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"dango_nb.{name}")
    raise AttributeError(f"module 'dango_nb' has no attribute {name!r}")
