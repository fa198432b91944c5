import base64
import json

import numpy as np
import pandas as pd
import pytest

from dango_nb import widgets as Wd
from dango_nb.schedules import SCHEDULES, get_schedule


class RecordingRunner:
    """Produces a history that follows the schedule it is given (the controller's contract), and
    records the calls, so the controller's wiring is checked without training."""

    def __init__(self):
        self.calls = []

    def __call__(self, schedule, transition_epoch, epochs, progress=None):
        self.calls.append((schedule, transition_epoch, epochs))
        s = get_schedule(schedule, transition_epoch)
        rows = []
        for e in range(epochs):
            w_rec, w_int = s.weights(e)
            rows.append(dict(epoch=e, alpha=s.alpha(e), w_rec=w_rec, w_int=w_int, loss_total=1 / (e + 1),
                             loss_rec=1.0, loss_int=1 / (e + 1), loss_rec_weighted=w_rec,
                             loss_int_weighted=w_int / (e + 1), train_pearson=e / epochs))
            if progress:
                progress(e + 1, epochs)
        y = np.linspace(-1, 1, 16)
        return Wd.ScheduleRun(schedule, transition_epoch, pd.DataFrame(rows), y, y * 0.5 + 0.01 * len(self.calls))


def test_controller_alpha_curve_follows_callbacks():
    c = Wd.ScheduleController(schedule="LinearUntilFlipped", transition_epoch=40, epochs=51)
    a = c.alpha_curve
    assert list(a.alpha[[0, 10, 20, 30, 40, 50]]) == [1, .75, .5, .25, 0, 0]
    b = c.on_epoch_change(20)
    assert c.alpha_curve is b and b.transition_epoch == 20
    assert b.alpha[10] == pytest.approx(0.5) and not np.array_equal(a.alpha, b.alpha)
    u = c.on_schedule_change("LinearUntilUniform")
    assert u.schedule == "LinearUntilUniform" and u.alpha[30] == 0.5 and u.alpha[10] == pytest.approx(0.75)
    assert json.loads(json.dumps(u.to_dict()))["alpha"][10] == 0.75
    with pytest.raises(KeyError, match="unknown schedule 'Nope'"):
        c.on_schedule_change("Nope")
    with pytest.raises(ValueError, match="non-negative integer"):
        c.on_epoch_change(-1)
    assert c.schedule == "LinearUntilUniform" and c.transition_epoch == 20  # failed calls changed nothing
    assert set(c.schedule_names) == set(SCHEDULES)


def test_controller_run_uses_current_state_and_reports_progress():
    runner = RecordingRunner()
    c = Wd.ScheduleController(runner, schedule="PreThenPost", transition_epoch=5, epochs=12, synthetic=True)
    assert c.results_figure() is None and "No run yet" in c.caption()
    c.on_schedule_change("PaperTwoStage")
    c.on_epoch_change(3)
    seen = []
    run = c.run(progress=lambda done, total: seen.append((done, total)))
    assert runner.calls == [("PaperTwoStage", 3, 12)]
    assert seen[-1] == (12, 12) and len(seen) == 12
    assert c.last_run is run and c.runs["PaperTwoStage"] is run and c.n_runs == 1
    fig = c.results_figure()
    assert len(fig.axes) == 6 and "PaperTwoStage" in fig._suptitle.get_text()
    assert "synthetic" in fig._suptitle.get_text()
    assert f"r = {run.pearson:.3f}" in c.caption()
    run2 = c.run()
    assert run2 is not run and c.last_run is run2
    with pytest.raises(RuntimeError, match="no runner"):
        Wd.ScheduleController(None).run()


def test_widget_view_redraws_on_slider_dropdown_and_run():
    pytest.importorskip("ipywidgets")
    c = Wd.ScheduleController(RecordingRunner(), schedule="PreThenPost", transition_epoch=4, epochs=10)
    w = Wd.ScheduleWidget(c)
    assert (w.schedule.description, w.transition_epoch.description, w.run_button.description) == \
        ("schedule", "transition_epoch", "Run")
    assert "dango-schedule" in w.schedule._dom_classes and "dango-progress" in w.progress._dom_classes
    assert "dango-alpha-plot" in w.alpha_plot._dom_classes and "dango-results-plot" in w.results_plot._dom_classes
    assert w.alpha_data.layout.display == "none"  # a test hook, not part of the view
    png0, data0 = w.alpha_plot.value, w.alpha_data.value
    w.transition_epoch.value = 7
    assert c.transition_epoch == 7 and w.alpha_plot.value != png0 and w.alpha_data.value != data0
    assert '"transition_epoch":7' in w.alpha_data.value
    png1 = w.alpha_plot.value
    w.schedule.value = "LinearUntilFlipped"
    assert c.schedule == "LinearUntilFlipped" and w.alpha_plot.value != png1
    assert w.results_plot.value == b""
    w.run_button.click()
    assert c.n_runs == 1 and w.progress.value == w.progress.max == 10
    assert w.progress.bar_style == "success" and w.results_plot.value[:4] == b"\x89PNG"
    first = w.results_plot.value
    w.transition_epoch.value = 2
    w.run_button.click()
    assert c.n_runs == 2 and w.results_plot.value != first and "transition_epoch = 2" in w.status.value


def _displayed(widget, monkeypatch):
    """The (data, metadata) bundles ``display(widget)`` publishes, in order."""
    import IPython.display

    seen = []
    monkeypatch.setattr(IPython.display, "display",
                        lambda data, metadata=None, raw=False: seen.append((data, metadata or {})))
    widget._ipython_display_()
    return seen


def test_widget_display_keeps_a_static_snapshot_in_exported_html(monkeypatch):
    """nbconvert renders a widget output only through the widget JavaScript (a CDN, unreachable
    offline): the display must also carry the plots as plain images, and the HTML must show them."""
    pytest.importorskip("ipywidgets")
    nbformat = pytest.importorskip("nbformat")
    from nbconvert import HTMLExporter

    c = Wd.ScheduleController(RecordingRunner(), schedule="LinearUntilFlipped", transition_epoch=4, epochs=10)
    w = Wd.ScheduleWidget(c)
    before = _displayed(w, monkeypatch)
    assert "application/vnd.jupyter.widget-view+json" in before[0][0]
    pngs = [d["image/png"] for d, _ in before if "image/png" in d]
    assert [base64.b64decode(p) for p in pngs] == [w.alpha_plot.value]  # no run yet: alpha only
    assert "LinearUntilFlipped" in before[1][0]["text/plain"] and "transition_epoch = 4" in before[1][0]["text/plain"]
    w.run_button.click()
    after = _displayed(w, monkeypatch)
    assert [base64.b64decode(d["image/png"]) for d, _ in after if "image/png" in d] == \
        [w.alpha_plot.value, w.results_plot.value]

    outputs = [nbformat.v4.new_output("display_data", data=d, metadata=m) for d, m in after]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("widget", outputs=outputs,
                                                                   execution_count=1)])
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {
        "version_major": 2, "version_minor": 0, "state": {}}}  # as nbclient stores it
    body, _ = HTMLExporter().from_notebook_node(nb)
    for d, _ in after:
        if "image/png" in d:
            assert f'src="data:image/png;base64,{d["image/png"]}' in body
    assert "Static snapshot of the widget above" in body


def test_save_schedule_run_folder(tmp_path):
    import datetime as dt

    run = RecordingRunner()("LinearUntilUniform", 40, 5)
    run.triplets = np.array([[0, 1, 2]] * 16)
    when = dt.datetime(2024, 1, 2, 3, 4, 5)
    f1 = Wd.save_schedule_run(run, tmp_path, synthetic=True, genes=["a", "b", "c"], when=when)
    f2 = Wd.save_schedule_run(run, tmp_path, when=when)
    assert f1.name == "LinearUntilUniform_transition_epoch=40_20240102-030405"
    assert f2.name == f1.name + "-1"
    assert (f1 / "final_results.png").read_bytes()[:4] == b"\x89PNG"
    s = json.loads((f1 / "summary.json").read_text())
    assert s["final_pearson"] == pytest.approx(run.pearson) and s["synthetic"] is True
    pred = pd.read_csv(f1 / "predictions.tsv", sep="\t")
    assert list(pred.columns) == ["gene1", "gene2", "gene3", "measured_tau", "predicted_tau"]
    assert pred["gene3"].iloc[0] == "c"


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    from dango_nb.data.study import load_study

    return load_study("tiny", 0, data_dir=tmp_path_factory.mktemp("data"))


def test_overfit_runner_trains_with_progress_and_fits_the_batch(tiny_study):
    from dango_nb.train import TrainConfig

    batch = Wd.fixed_batch(tiny_study.triplets, 24, seed=0)
    assert len(batch) == 24 and np.isfinite(batch.targets.numpy()).all()
    assert torch_equal(Wd.fixed_batch(tiny_study.triplets, 24, seed=0).indices, batch.indices)
    with pytest.raises(ValueError, match="exceeds"):
        Wd.fixed_batch(tiny_study.triplets, 10 ** 6)
    lambdas = {c: 1.0 for c in ("neighborhood", "fusion", "cooccurence", "coexpression", "experimental", "database")}
    cfg = TrainConfig(epochs=3, lr=0.02, progress=False, model={"hidden_channels": 16})
    runner = Wd.OverfitRunner(tiny_study.cell_graph, batch, cfg, lambdas)
    seen = []
    run = runner("LinearUntilFlipped", 10, epochs=40, progress=lambda d, t: seen.append((d, t)))
    assert seen[0] == (1, 40) and seen[-1] == (40, 40)
    assert len(run.history) == 40 and run.history["alpha"].iloc[5] == pytest.approx(0.5)
    np.testing.assert_allclose(run.y_true, batch.targets.numpy(), rtol=1e-6)
    assert run.pearson > 0.9, run.pearson  # one batch, 40 epochs: it must overfit
    c = Wd.ScheduleController(runner, schedule="PreThenPost", transition_epoch=2, epochs=4)
    r2 = c.run()
    assert len(r2.history) == 4 and list(r2.history["alpha"]) == [1, 1, 0, 0]


def torch_equal(a, b):
    import torch

    return torch.equal(a, b)
