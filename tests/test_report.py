"""The papermill runner on small stand-in notebooks (the real notebooks: tests/test_notebooks.py)."""

import json
from pathlib import Path

import nbformat
import pytest

from dango_nb import report
from dango_nb.errors import ParamsError
from dango_nb.params import NOTEBOOKS

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "params" / "tiny"

OK = """
from pathlib import Path
from dango_nb import report
(Path(report_dir) / "sub").mkdir()
(Path(report_dir) / "sub" / "figure.png").write_bytes(b"\\x89PNG stand-in")
assert Path(params_file).is_file()
print("device: cpu")
report.write_summary(report_dir, {{"answer": {n}, "per channel": {{"a": 0.5}},
                     "table": {{"columns": ["x", "y"], "rows": [[1, 2.0]]}}}}, synthetic=True)
"""
FAIL = """
raise ValueError("planted failure in {stem}")
"""
NO_SUMMARY = """
print("forgot the summary")
"""


def make_notebooks(folder: Path, bodies: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, stem in enumerate(NOTEBOOKS):
        nb = nbformat.v4.new_notebook()
        params = nbformat.v4.new_code_cell('params_file = "unset"\nreport_dir = "unset"')
        params.metadata["tags"] = ["parameters"]
        body = bodies.get(stem, OK).format(n=i, stem=stem)
        nb.cells = [nbformat.v4.new_markdown_cell(f"# {stem}"), params, nbformat.v4.new_code_cell(body)]
        nbformat.write(nb, folder / f"{stem}.ipynb")
    return folder


def test_failures_are_reported_and_independent_runs_continue(tmp_path, monkeypatch):
    nbs = make_notebooks(tmp_path / "nb", {"02_pretraining": NO_SUMMARY, "03_loss_schedules": FAIL})
    out = tmp_path / "reports"
    results, summary = report.run_report(TINY, out, nb_dir=nbs, log=lambda *a: None)
    status = {r.name: r.status for r in results}
    assert status == {"lambda_determination": "ok", "pretraining": "failed", "loss_schedules": "failed",
                      "evaluation": "ok"}
    by = {r.name: r for r in results}
    assert "finished without writing summary.json" in by["pretraining"].error
    err = by["loss_schedules"].error
    assert "ValueError: planted failure in 03_loss_schedules" in err and "cell" in err and "\x1b[" not in err
    # executed notebooks, HTML and figures of every run are there (the failed one shows its error)
    for r in results:
        assert (out / r.ipynb).is_file() and (out / r.html).is_file()
    assert by["lambda_determination"].figures == ["lambda_determination/sub/figure.png"]
    assert "planted failure" in (out / by["loss_schedules"].html).read_text()
    # the parameters cell got absolute paths
    executed = nbformat.read(out / by["evaluation"].ipynb, 4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])][0].source
    assert str((TINY / "04_evaluation.yaml").resolve()) in injected and str((out / "evaluation").resolve()) in injected
    # summaries and index
    s = json.loads((out / "summary.json").read_text())
    assert s == json.loads(json.dumps(summary)) and s["ok"] is False
    assert s["runs"][3]["summary"]["numbers"]["answer"] == 3
    index = (out / "index.html").read_text()
    for r in results:
        assert f"href='{r.html}'" in index
    assert "<h3>answer</h3>3" in index and "<td>a</td>" not in index and "<th>a</th><td>0.5</td>" in index
    assert "planted failure" in index and "SYNTHETIC benchmark" in index
    md = (out / "summary.md").read_text()
    assert "## loss_schedules: failed" in md and "| x | y |" in md and "SOME NOTEBOOKS FAILED" in md

    # a second run replaces a run's folder (no stale figures) and keeps the others
    stale = out / "evaluation" / "stale.png"
    stale.write_bytes(b"x")
    monkeypatch.setattr(report, "notebook_dir", lambda: nbs)
    assert report.main(["--params", str(TINY), "--out", str(out), "--only", "evaluation"]) == 0
    assert not stale.exists() and (out / "evaluation" / "summary.json").is_file()
    assert (out / "lambda_determination" / "summary.json").is_file()
    assert [r["name"] for r in json.loads((out / "summary.json").read_text())["runs"]] == ["evaluation"]


def test_lambda_failure_skips_dependents_and_main_exit_codes(tmp_path, monkeypatch):
    nbs = make_notebooks(tmp_path / "nb", {"01_lambda_determination": FAIL})
    out = tmp_path / "reports"
    results, summary = report.run_report(TINY, out, nb_dir=nbs, log=lambda *a: None)
    assert [r.status for r in results] == ["failed", "skipped", "skipped", "skipped"]
    assert all("needs lambda_determination" in r.error for r in results[1:])
    assert not (out / "pretraining").exists()

    monkeypatch.setattr(report, "notebook_dir", lambda: nbs)
    assert report.main(["--params", str(TINY), "--out", str(out), "--only", "lambda_determination"]) == 1


def test_bad_parameters_stop_before_anything_runs(tmp_path, capsys):
    bad = tmp_path / "params"
    bad.mkdir()
    for stem in NOTEBOOKS:
        (bad / f"{stem}.yaml").write_text((TINY / f"{stem}.yaml").read_text())
    (bad / "03_loss_schedules.yaml").write_text("transition_epochs: 3\n")
    out = tmp_path / "reports"
    (out / "lambda_determination").mkdir(parents=True)
    keep = out / "lambda_determination" / "summary.json"
    keep.write_text("{}")
    with pytest.raises(ParamsError, match=r"03_loss_schedules.yaml: unknown key 'transition_epochs'; allowed keys"):
        report.run_report(bad, out, log=lambda *a: None)
    assert keep.read_text() == "{}" and not (out / "index.html").exists()
    assert report.main(["--params", str(bad), "--out", str(out)]) == 2
    assert "transition_epochs" in capsys.readouterr().err
    with pytest.raises(ParamsError, match="--only: unknown notebook"):
        report.run_report(TINY, out, only=["nope"])


def test_pick_kernel_falls_back_to_python3():
    assert report.pick_kernel("no-such-kernel-xyz") == "python3"


def test_table_helper():
    import pandas as pd

    t = report.table(pd.DataFrame({"a": ["x"], "b": [0.123456789], "c": [3]}))
    assert t == {"columns": ["a", "b", "c"], "rows": [["x", 0.1235, 3]]}
    assert report.table(pd.DataFrame({"v": [7.3e-06]}))["rows"] == [[7.3e-06]]
    json.dumps(t)
