"""Run folders, sweeps and their execution on Ray.

- :func:`train_run` trains one model into a run folder (:mod:`.folder`); :class:`RunFolder` reads one.
- :func:`load_sweep` expands a sweep file into :class:`RunSpec` runs (:mod:`.sweep`).
- :func:`run_many` executes specs as Ray tasks or in this process; :func:`run_sweep` adds the merged
  results table and figures (:mod:`.executor`, :mod:`.results`).
"""

from .executor import RunOutcome, SweepResult, run_many, run_sweep, sweep_specs
from .folder import MARKER, RunFolder, is_complete, train_run
from .results import metric_vs_axis, results_table, sweep_figures
from .spec import RunParams, SplitParams, load_run_params, run_params
from .sweep import RunSpec, Sweep, load_sweep, sweep_from_mapping

__all__ = ["MARKER", "RunFolder", "RunOutcome", "RunParams", "RunSpec", "SplitParams", "Sweep", "SweepResult",
           "is_complete", "load_run_params", "load_sweep", "metric_vs_axis", "results_table", "run_many",
           "run_params", "run_sweep", "sweep_figures", "sweep_from_mapping", "sweep_specs", "train_run"]
