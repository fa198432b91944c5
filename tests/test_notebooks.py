"""Every notebook executed through papermill (via the report runner) with params/tiny."""

import json
import re
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from dango_nb import report
from dango_nb.params import NOTEBOOKS, load_param_dir
from dango_nb.schedules import SCHEDULES

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "params" / "tiny"
CHANNELS = {"neighborhood", "fusion", "cooccurence", "coexpression", "experimental", "database"}


@pytest.mark.parametrize("stem", NOTEBOOKS)
def test_notebooks_are_committed_clean_with_a_parameters_cell(stem):
    nb = nbformat.read(ROOT / "notebooks" / f"{stem}.ipynb", as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "commit notebooks without outputs"
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and "params_file" in tagged[0].source and "report_dir" in tagged[0].source
    assert nb.cells[0].cell_type == "markdown"


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("reports")
    mp = pytest.MonkeyPatch()
    mp.setenv("DANGO_DATA_DIR", str(tmp_path_factory.mktemp("data")))  # the kernels inherit it
    mp.setenv("OMP_NUM_THREADS", "1")
    mp.setenv("MKL_NUM_THREADS", "1")
    try:
        results, summary = report.run_report(TINY, out, log=lambda *a: None)
    finally:
        mp.undo()
    return out, {r.name: r for r in results}, summary


def _outputs_text(nb) -> str:
    parts = []
    for c in nb.cells:
        for o in c.get("outputs", []):
            parts.append(o.get("text", "") if o.output_type == "stream" else
                         str(o.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


def test_all_notebooks_succeed(tiny_report):
    out, runs, summary = tiny_report
    failed = {n: r.error for n, r in runs.items() if r.status != "ok"}
    assert not failed, failed
    assert summary["ok"] and (out / "index.html").is_file() and (out / "summary.md").is_file()
    for name, r in runs.items():
        nb = nbformat.read(out / r.ipynb, as_version=4)
        text = _outputs_text(nb)
        assert re.search(r"device: (cpu|cuda)", text), f"{name} does not print the device"
        assert "SYNTHETIC" in text or "synthetic" in text.lower(), f"{name} does not say the data are synthetic"
        assert (out / r.html).stat().st_size > 10_000
        assert r.summary["synthetic"] is True


def test_lambdas_written_and_match_planted(tiny_report):
    out, runs, _ = tiny_report
    data = json.loads((out / "lambda_determination" / "lambdas.json").read_text())
    assert set(data["lambdas"]) == CHANNELS and set(data["lambdas"].values()) <= {0.1, 1.0}
    assert (data["earlier_version"], data["later_version"]) == ("9.1", "11.0")
    p = load_param_dir(TINY)["01_lambda_determination"]
    assert data["lambdas"] == p.ground_truth()["planted_lambda"]
    assert (out / "lambda_determination" / "lambda_bars.png").stat().st_size > 5_000
    assert runs["lambda_determination"].summary["numbers"]["lambdas"] == data["lambdas"]


def test_pretraining_outputs(tiny_report):
    out, runs, _ = tiny_report
    d = out / "pretraining"
    for f in ("reconstruction_loss.png", "edge_recovery_auroc.png", "meta_weights.png", "embedding_pca.png"):
        assert (d / f).stat().st_size > 5_000, f
    rec = pd.read_csv(d / "edge_recovery.tsv", sep="\t")
    assert set(rec["channel"]) == CHANNELS and rec["auroc"].between(0, 1).all()
    hist = pd.read_csv(d / "pretrain_history.tsv", sep="\t")
    assert len(hist) == load_param_dir(TINY)["02_pretraining"].train.epochs
    assert hist["loss_rec"].iloc[-1] < hist["loss_rec"].iloc[0]


def test_schedule_figures_one_per_schedule(tiny_report):
    out, runs, _ = tiny_report
    p = load_param_dir(TINY)["03_loss_schedules"]
    figs = sorted(out.glob("**/final_results.png"))
    assert len(figs) == len(p.schedules) == 4
    pattern = re.compile(rf"^({'|'.join(SCHEDULES)})_transition_epoch={p.transition_epoch}_\d{{8}}-\d{{6}}$")
    names = [f.parent.name for f in figs]
    assert all(pattern.match(n) for n in names), names
    assert sorted(n.split("_transition")[0] for n in names) == sorted(p.schedules)
    assert all(f.stat().st_size > 20_000 for f in figs)
    assert (out / "loss_schedules" / "schedule_comparison.png").is_file()
    finals = runs["loss_schedules"].summary["numbers"]["final Pearson per schedule"]
    assert set(finals) == set(p.schedules) and all(-1 <= v <= 1 for v in finals.values())
    for f in figs:
        s = json.loads((f.parent / "summary.json").read_text())
        assert s["final_pearson"] == pytest.approx(finals[s["schedule"]], abs=1e-4)
        assert len(pd.read_csv(f.parent / "history.tsv", sep="\t")) == p.train.epochs
    # the widget cell displayed a widget and did not block
    nb = nbformat.read(out / runs["loss_schedules"].ipynb, as_version=4)
    last = [c for c in nb.cells if c.cell_type == "code"][-1]
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in last.outputs)


def test_evaluation_outputs(tiny_report):
    out, runs, _ = tiny_report
    p = load_param_dir(TINY)["04_evaluation"]
    m = pd.read_csv(out / "evaluation" / "metrics.csv")
    for col in ("model", "split", "fold", "pearson", "spearman", "mse", "auroc", "auprc"):
        assert col in m.columns
    ev = p.evaluation
    assert set(ev.models) <= set(m["model"])
    assert set(m["split"]) == set(ev.splits) and set(m["fold"]) == set(ev.folds)
    assert len(m[m["model"].isin(ev.models) & (m["seed"] == 0)]) == len(ev.models) * len(ev.splits) * len(ev.folds)
    dango = m[m["model"] == "dango"]  # scored on every seed
    assert dango["pearson"].notna().all() and set(dango["seed"]) == set(range(ev.ensemble_seeds))
    ceiling = json.loads((out / "evaluation" / "ceiling.json").read_text())
    assert set(ceiling["per_split"]) == set(ev.splits)
    for f in ("pearson_by_model.png", "predicted_vs_measured.png", "pvalue_vs_prediction.png", "spread_calibration.png"):
        assert (out / "evaluation" / f).stat().st_size > 5_000, f
    table = runs["evaluation"].summary["numbers"]["evaluation table"]
    assert {"model", "split", "pearson_mean", "pearson_seed_sd", "n_seeds"} <= set(table["columns"])
    assert len(table["rows"]) >= len(ev.models)
    per_seed = runs["evaluation"].summary["numbers"]["dango pearson per seed"]
    assert set(per_seed) == set(ev.splits) and all(len(v) == ev.ensemble_seeds for v in per_seed.values())
    # the fitted DANGO models are kept as run folders (every split x fold x ensemble seed)
    from dango_nb.runs import RunFolder

    kept = sorted(p.name for p in (out / "evaluation" / "runs").iterdir())
    assert kept == sorted(f"{s}_fold{f}_seed{k}" for s in ev.splits for f in ev.folds for k in range(ev.ensemble_seeds))
    folder = RunFolder.open(out / "evaluation" / "runs" / kept[0])
    assert folder.checkpoints() and folder.info["metrics"]["test"]
    for name in ("params.yaml", "provenance.json"):
        assert (out / "evaluation" / name).is_file() and (out / "lambda_determination" / name).is_file()


def test_every_json_of_the_report_is_strict(tiny_report):
    out, _, summary = tiny_report
    assert summary["state"] == "ok"

    def reject(token):
        raise ValueError(f"{token} is not JSON")

    files = sorted(out.rglob("*.json"))
    assert {"summary.json", "ceiling.json", "lambdas.json"} <= {p.name for p in files}
    for path in files:
        json.loads(path.read_text(), parse_constant=reject)
    assert not list(out.glob(".*")) and not list(out.glob("*.failed"))  # no build folders or lock left
