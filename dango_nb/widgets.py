"""The transition_epoch widget: pick a loss schedule and its transition epoch, see alpha(epoch), rerun
a short one-batch overfit.

Three layers, so the logic is tested without a browser:

- :class:`OverfitRunner` trains one schedule on one fixed batch (``train.overfit_batch``) and
  returns a :class:`ScheduleRun` (history, measured and predicted tau); the schedule notebook uses the
  same runner for its comparison, and :func:`save_schedule_run` writes the
  ``<Schedule>_transition_epoch=<T>_<timestamp>/final_results.png`` folders.
- :class:`ScheduleController` holds the state (schedule, transition epoch, the plotted
  :attr:`~ScheduleController.alpha_curve`, the last run) and has plain callback methods.
- :class:`ScheduleWidget` is the ipywidgets view bound to a controller. Its controls keep stable
  descriptions and CSS classes for UI tests: Dropdown "schedule" (``dango-schedule``), IntSlider
  "transition_epoch" (``dango-transition-epoch``), Button "Run" (``dango-run``), IntProgress
  (``dango-progress``), Image widgets ``dango-alpha-plot`` and ``dango-results-plot``, an HTML
  caption ``dango-status``, and a hidden (``display: none``) HTML element ``dango-alpha-data``
  holding the plotted alpha values as JSON, for tests to read.

Displaying the widget never trains or blocks: under papermill the cell just shows it. The display
also carries a static PNG snapshot of the plots (alpha and, after a run, the results figure),
because an exported notebook (nbconvert HTML) has no kernel and, offline, no widget JavaScript.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import html
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from . import plots
from .fileio import atomic_write_json, atomic_write_table, to_strict_json
from .schedules import SCHEDULES, get_schedule

__all__ = ["AlphaCurve", "ScheduleRun", "fixed_batch", "OverfitRunner", "save_schedule_run", "ScheduleController",
           "ScheduleWidget", "schedule_folder_name"]

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class AlphaCurve:
    """The plotted alpha(epoch): ``epoch``, ``alpha`` and ``w_int`` arrays of equal length."""

    schedule: str
    transition_epoch: int
    epoch: np.ndarray
    alpha: np.ndarray
    w_int: np.ndarray

    def to_dict(self) -> dict:
        return {"schedule": self.schedule, "transition_epoch": self.transition_epoch,
                "epoch": self.epoch.tolist(), "alpha": [round(float(a), 6) for a in self.alpha],
                "w_int": [round(float(w), 6) for w in self.w_int]}


def alpha_curve(schedule: str, transition_epoch: int, epochs: int) -> AlphaCurve:
    ep, a, w = plots.schedule_alpha(get_schedule(schedule, transition_epoch), epochs)
    return AlphaCurve(schedule, int(transition_epoch), ep, a, w)


@dataclass
class ScheduleRun:
    """One schedule's overfit of one batch: ``history`` (training history columns), ``y_true`` and
    ``y_pred`` (measured and final predicted tau of the batch's triplets), ``triplets`` (N, 3) gene
    indices, ``device`` used."""

    schedule: str
    transition_epoch: int
    history: pd.DataFrame
    y_true: np.ndarray
    y_pred: np.ndarray
    triplets: np.ndarray | None = None
    device: str = "cpu"
    seconds: float = float("nan")

    @property
    def pearson(self) -> float:
        return plots.pearson(self.y_true, self.y_pred)

    @property
    def mse(self) -> float:
        ok = np.isfinite(self.y_true) & np.isfinite(self.y_pred)
        return float(np.mean((self.y_pred[ok] - self.y_true[ok]) ** 2)) if ok.any() else float("nan")

    def figure(self, synthetic: bool = False):
        return plots.final_results(self.history, self.y_true, self.y_pred, self.schedule,
                                   self.transition_epoch, synthetic=synthetic)


def fixed_batch(triplets, size: int, seed: int = 0):
    """``size`` triplets drawn without replacement with a seeded generator (finite targets only): the
    one batch every schedule overfits."""
    import torch

    finite = torch.nonzero(torch.isfinite(triplets.targets), as_tuple=False).flatten()
    if size > len(finite):
        raise ValueError(f"batch_size {size} exceeds the {len(finite)} triplets with a measured tau")
    gen = torch.Generator().manual_seed(int(seed))
    rows = finite[torch.randperm(len(finite), generator=gen)[:size]].sort().values
    return triplets.subset(rows)


class OverfitRunner:
    """Overfit one fixed batch of triplets under a named schedule.

    Args:
        cell_graph (HeteroData): the study's graph.
        batch (TripletTensors): the fixed batch (the same for every schedule, so runs compare).
        config (TrainConfig): training settings; ``schedule``, ``transition_epoch`` and ``epochs`` are
            replaced per call, ``progress`` is turned off when a progress function is given.
        lambdas (dict[str, float]): channel -> lambda for the reconstruction loss.
    """

    def __init__(self, cell_graph, batch, config, lambdas: Mapping[str, float]):
        self.cell_graph, self.batch, self.config, self.lambdas = cell_graph, batch, config, dict(lambdas)

    def __call__(self, schedule: str, transition_epoch: int, epochs: int | None = None,
                 progress: ProgressFn | None = None) -> ScheduleRun:
        from . import train as training  # torch-heavy; the controller works without it
        from .eval.prediction import predict

        if schedule not in SCHEDULES:
            raise KeyError(f"unknown schedule {schedule!r}; known schedules: {', '.join(SCHEDULES)}")
        epochs = int(self.config.epochs if epochs is None else epochs)
        cfg = dataclasses.replace(self.config, schedule=schedule, transition_epoch=int(transition_epoch),
                                  epochs=epochs, progress=self.config.progress and progress is None)
        callback = None if progress is None else (lambda epoch, row: progress(int(epoch) + 1, epochs))
        t0 = _dt.datetime.now()
        result = training.overfit_batch(self.cell_graph, self.batch, cfg, self.lambdas, callback=callback)
        seconds = (_dt.datetime.now() - t0).total_seconds()
        if progress is not None:
            progress(epochs, epochs)
        y_pred = np.asarray(predict(result.model, self.cell_graph, self.batch.indices,
                                    result.scaler), dtype=float)
        y_true = self.batch.targets.detach().cpu().numpy().astype(float)
        return ScheduleRun(schedule, int(transition_epoch), result.history.copy(), y_true, y_pred,
                           self.batch.indices.detach().cpu().numpy(), str(result.device), seconds)


def schedule_folder_name(schedule: str, transition_epoch: int, when: _dt.datetime | None = None) -> str:
    """``<Schedule>_transition_epoch=<T>_<YYYYmmdd-HHMMSS>``."""
    when = when or _dt.datetime.now()
    return f"{schedule}_transition_epoch={int(transition_epoch)}_{when:%Y%m%d-%H%M%S}"


def save_schedule_run(run: ScheduleRun, out_dir: str | os.PathLike, synthetic: bool = False,
                      genes: Sequence[str] | None = None, when: _dt.datetime | None = None) -> Path:
    """Write ``final_results.png``, ``history.tsv``, ``predictions.tsv`` and ``summary.json`` into a new
    ``<Schedule>_transition_epoch=<T>_<timestamp>/`` folder under ``out_dir``; returns the folder."""
    base = schedule_folder_name(run.schedule, run.transition_epoch, when)
    folder = Path(out_dir) / base
    k = 1
    while folder.exists():  # two runs of one schedule within a second keep both
        folder = Path(out_dir) / f"{base}-{k}"
        k += 1
    folder.mkdir(parents=True)
    fig = run.figure(synthetic=synthetic)
    plots.save_figure(fig, folder / "final_results.png")
    atomic_write_table(run.history, folder / "history.tsv")
    pred = pd.DataFrame({"measured_tau": run.y_true, "predicted_tau": run.y_pred})
    if run.triplets is not None:
        for j in range(3):
            col = run.triplets[:, j]
            pred.insert(j, f"gene{j + 1}", [genes[i] for i in col] if genes is not None else col)
    atomic_write_table(pred, folder / "predictions.tsv")
    atomic_write_json({"schedule": run.schedule, "transition_epoch": run.transition_epoch,
                       "epochs": int(len(run.history)), "final_pearson": run.pearson, "final_mse": run.mse,
                       "n_triplets": int(len(run.y_true)), "device": run.device, "seconds": run.seconds,
                       "synthetic": bool(synthetic)}, folder / "summary.json")
    return folder


class ScheduleController:
    """State and callbacks of the widget, free of any UI.

    Args:
        runner: ``runner(schedule, transition_epoch, epochs, progress) -> ScheduleRun`` (an
            :class:`OverfitRunner`); ``None`` leaves :meth:`run` unavailable (alpha exploration only).
        schedule (str): initial schedule name (a key of ``SCHEDULES``).
        transition_epoch (int): initial T.
        epochs (int): epochs shown in the alpha plot and trained by :meth:`run`.
        schedules: names offered (default: every registered schedule).
        synthetic (bool): label figures as synthetic.
        runs: earlier runs keyed by schedule name; the one of the initial schedule is shown as the
            current result until :meth:`run` is called.
    """

    def __init__(self, runner: Callable[..., ScheduleRun] | None = None, schedule: str = "PreThenPost",
                 transition_epoch: int = 40, epochs: int = 80, schedules: Sequence[str] | None = None,
                 synthetic: bool = False, runs: Mapping[str, ScheduleRun] | None = None):
        self.schedule_names = list(schedules) if schedules is not None else list(SCHEDULES)
        unknown = [s for s in self.schedule_names if s not in SCHEDULES]
        if unknown:
            raise KeyError(f"unknown schedule(s) {unknown}; known schedules: {', '.join(SCHEDULES)}")
        self._check_schedule(schedule)
        if int(epochs) < 1:
            raise ValueError(f"epochs must be at least 1, got {epochs}")
        self.runner = runner
        self.epochs = int(epochs)
        self.synthetic = bool(synthetic)
        self.schedule = schedule
        self.transition_epoch = self._check_epoch(transition_epoch)
        self.runs: dict[str, ScheduleRun] = dict(runs or {})
        self.last_run: ScheduleRun | None = self.runs.get(schedule)
        self.n_runs = 0
        self.alpha_curve = alpha_curve(self.schedule, self.transition_epoch, self.epochs)

    # -- validation
    def _check_schedule(self, name: str) -> None:
        if name not in self.schedule_names:
            raise KeyError(f"unknown schedule {name!r}; choose one of {', '.join(self.schedule_names)}")

    @property
    def max_transition_epoch(self) -> int:
        return max(self.epochs, getattr(self, "transition_epoch", 0))

    def _check_epoch(self, value) -> int:
        if isinstance(value, bool) or int(value) != value or value < 0:
            raise ValueError(f"transition_epoch must be a non-negative integer, got {value!r}")
        return int(value)

    # -- callbacks
    def on_schedule_change(self, name: str) -> AlphaCurve:
        """Switch schedule; returns the new alpha curve."""
        self._check_schedule(name)
        self.schedule = name
        self.alpha_curve = alpha_curve(self.schedule, self.transition_epoch, self.epochs)
        return self.alpha_curve

    def on_epoch_change(self, transition_epoch: int) -> AlphaCurve:
        """Move T; returns the new alpha curve."""
        self.transition_epoch = self._check_epoch(transition_epoch)
        self.alpha_curve = alpha_curve(self.schedule, self.transition_epoch, self.epochs)
        return self.alpha_curve

    def run(self, progress: ProgressFn | None = None) -> ScheduleRun:
        """Overfit with the current schedule and T for :attr:`epochs`; becomes :attr:`last_run`."""
        if self.runner is None:
            raise RuntimeError("this controller has no runner; build it with ScheduleController(runner=...)")
        result = self.runner(self.schedule, self.transition_epoch, self.epochs, progress)
        self.last_run = result
        self.runs[self.schedule] = result
        self.n_runs += 1
        return result

    # -- figures
    def alpha_figure(self):
        from matplotlib.figure import Figure

        c = self.alpha_curve
        fig = Figure(figsize=(6.5, 2.8), layout="constrained")
        ax = fig.add_subplot()
        plots.plot_alpha(c.epoch, c.alpha, c.w_int, c.transition_epoch, ax=ax)
        title = f"{c.schedule}, transition_epoch = {c.transition_epoch}"
        ax.set_title(title + (f"  [{plots.SYNTHETIC_LABEL}]" if self.synthetic else ""), fontsize=10)
        return fig

    def results_figure(self):
        """The 3x2 final_results figure of :attr:`last_run` (``None`` before any run)."""
        return None if self.last_run is None else self.last_run.figure(synthetic=self.synthetic)

    def caption(self) -> str:
        r = self.last_run
        if r is None:
            return "No run yet: press Run to overfit one batch with the chosen schedule."
        return (f"Last run: {r.schedule}, transition_epoch = {r.transition_epoch}, {len(r.history)} epochs, "
                f"final Pearson r = {r.pearson:.3f}, MSE = {r.mse:.3g} on {len(r.y_true)} triplets "
                f"({r.device})" + (f" [{plots.SYNTHETIC_LABEL}]" if self.synthetic else ""))


class ScheduleWidget:
    """ipywidgets view of a :class:`ScheduleController` (display it, or its :attr:`box`)."""

    def __init__(self, controller: ScheduleController, alpha_dpi: int = 80, results_dpi: int = 60):
        import ipywidgets as W

        self.controller = controller
        self.alpha_dpi, self.results_dpi = alpha_dpi, results_dpi
        c = controller
        self.schedule = W.Dropdown(options=c.schedule_names, value=c.schedule, description="schedule")
        self.transition_epoch = W.IntSlider(value=c.transition_epoch, min=0, max=c.max_transition_epoch,
                                            step=1, description="transition_epoch", continuous_update=False,
                                            style={"description_width": "initial"})
        self.run_button = W.Button(description="Run", button_style="primary", disabled=c.runner is None,
                                   tooltip=f"overfit one batch for {c.epochs} epochs")
        self.progress = W.IntProgress(value=0, min=0, max=c.epochs, description="epochs")
        self.alpha_plot = W.Image(format="png", layout=W.Layout(width="560px"))
        self.alpha_data = W.HTML(layout=W.Layout(display="none"))  # test hook, out of sight
        self.results_plot = W.Image(format="png", layout=W.Layout(width="620px"))
        self.status = W.HTML()
        for w, cls in ((self.schedule, "dango-schedule"), (self.transition_epoch, "dango-transition-epoch"),
                       (self.run_button, "dango-run"), (self.progress, "dango-progress"),
                       (self.alpha_plot, "dango-alpha-plot"), (self.alpha_data, "dango-alpha-data"),
                       (self.results_plot, "dango-results-plot"), (self.status, "dango-status")):
            w.add_class(cls)
        self.schedule.observe(self._on_schedule, names="value")
        self.transition_epoch.observe(self._on_epoch, names="value")
        self.run_button.on_click(self._on_run)
        self.box = W.VBox([W.HBox([self.schedule, self.transition_epoch]), self.alpha_plot, self.alpha_data,
                           W.HBox([self.run_button, self.progress]), self.status, self.results_plot])
        self.draw_alpha()
        self.draw_results()

    # -- drawing
    def draw_alpha(self) -> None:
        self.alpha_plot.value = plots.figure_png(self.controller.alpha_figure(), dpi=self.alpha_dpi)
        data = json.dumps(to_strict_json(self.controller.alpha_curve.to_dict()), separators=(",", ":"), allow_nan=False)
        self.alpha_data.value = f"<code>{html.escape(data, quote=False)}</code>"

    def draw_results(self) -> None:
        fig = self.controller.results_figure()
        if fig is not None:
            self.results_plot.value = plots.figure_png(fig, dpi=self.results_dpi)
        self.status.value = html.escape(self.controller.caption())

    # -- callbacks (ipywidgets -> controller)
    def _on_schedule(self, change) -> None:
        self.controller.on_schedule_change(change["new"])
        self.draw_alpha()

    def _on_epoch(self, change) -> None:
        self.controller.on_epoch_change(change["new"])
        self.draw_alpha()

    def _set_progress(self, done: int, total: int) -> None:
        self.progress.max = max(1, int(total))
        self.progress.value = min(int(done), self.progress.max)

    def _on_run(self, _button=None) -> None:
        self.run_button.disabled = True
        self.progress.bar_style = ""
        self._set_progress(0, self.controller.epochs)
        self.status.value = html.escape(f"Running {self.controller.schedule} for {self.controller.epochs} epochs ...")
        try:
            self.controller.run(progress=self._set_progress)
            self.progress.bar_style = "success"
        except Exception as err:  # shown in the widget; a callback has nowhere else to report
            self.progress.bar_style = "danger"
            self.status.value = html.escape(f"Run failed: {type(err).__name__}: {err}")
            raise
        finally:
            self.run_button.disabled = False
        self.draw_results()

    # -- display
    def _repr_mimebundle_(self, **kwargs):
        """The box's widget view; the plain-text fallback (static HTML, papermill) says what it is."""
        data = self.box._repr_mimebundle_(**kwargs)
        c = self.controller
        data["text/plain"] = (f"transition_epoch widget (interactive in JupyterLab): schedule {c.schedule}, "
                              f"transition_epoch {c.transition_epoch}, {c.epochs} epochs per Run. {c.caption()}")
        return data

    def snapshot_outputs(self) -> list[tuple[dict, dict]]:
        """(data, metadata) bundles of a static copy of the current view: a caption, then the PNG the
        alpha plot shows and, once there is a run, the results figure's (``image/png``, which
        nbconvert keeps)."""
        c = self.controller
        caption = (f"Static snapshot of the widget above (schedule {c.schedule}, transition_epoch = "
                   f"{c.transition_epoch}), for viewers without a live kernel. {c.caption()}")
        out = [({"text/plain": caption, "text/markdown": f"*{html.escape(caption, quote=False)}*"}, {})]
        for label, view in (("alpha(epoch)", self.alpha_plot), ("final results", self.results_plot)):
            if not view.value:
                continue
            out.append(({"image/png": base64.b64encode(view.value).decode("ascii"),
                         "text/plain": f"<{label} figure: {c.schedule}, transition_epoch = {c.transition_epoch}>"},
                        {"image/png": {"width": int(view.layout.width.removesuffix("px"))}}))
        return out

    def _ipython_display_(self) -> None:
        """The live widget, then :meth:`snapshot_outputs` (what an exported HTML report shows)."""
        from IPython.display import display

        display(self._repr_mimebundle_(), raw=True)
        for data, metadata in self.snapshot_outputs():
            display(data, metadata=metadata, raw=True)
