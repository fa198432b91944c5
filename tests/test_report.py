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


@pytest.mark.parametrize("stem, train, message", [
    ("04_evaluation", {"epochs": 3, "transition_epoch": 3},
     "TrainConfig.transition_epoch: schedule 'PreThenPost' with transition_epoch=3 gives the interaction loss "
     "weight 0 in all 3 epochs"),
    ("02_pretraining", {"precision": "bf16", "device": "cpu"}, "TrainConfig.precision: 'bf16' needs a CUDA device"),
])
def test_schedule_and_device_checked_before_the_first_notebook(tmp_path, capsys, stem, train, message):
    import yaml

    bad = tmp_path / "params"
    bad.mkdir()
    for s in NOTEBOOKS:
        (bad / f"{s}.yaml").write_text((TINY / f"{s}.yaml").read_text())
    raw = yaml.safe_load((bad / f"{stem}.yaml").read_text())
    raw.setdefault("train", {}).update(train)
    (bad / f"{stem}.yaml").write_text(yaml.safe_dump(raw))
    out = tmp_path / "reports"
    assert report.main(["--params", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{bad / stem}.yaml: " in err and message in err and "Traceback" not in err
    assert not out.exists()


def test_pick_kernel_falls_back_to_python3():
    assert report.pick_kernel("no-such-kernel-xyz") == "python3"


def test_table_helper():
    import pandas as pd

    t = report.table(pd.DataFrame({"a": ["x"], "b": [0.123456789], "c": [3]}))
    assert t == {"columns": ["a", "b", "c"], "rows": [["x", 0.1235, 3]]}
    assert report.table(pd.DataFrame({"v": [7.3e-06]}))["rows"] == [[7.3e-06]]
    json.dumps(t)


LATE_FAIL = """
from pathlib import Path
(Path(report_dir) / "partial.tsv").write_text("half of a result")
raise ValueError("fails in a late cell")
"""
SLOW = """
import time
from pathlib import Path
(Path(report_dir) / "started").write_text("yes")
time.sleep(120)
"""
SCHEDULE_LIKE = """
import time
from pathlib import Path
from dango_nb import report
(Path(report_dir) / time.strftime("PaperTwoStage_%Y%m%d-%H%M%S")).mkdir()
report.write_summary(report_dir, {{"answer": 2}})
"""
SLOW_KERNEL_INFO = """
import time
from dango_nb import report
_kernel = get_ipython().kernel
_orig = _kernel.kernel_info_request
async def _slow_kernel_info(*args):
    await _orig(*args)  # the reply goes out here, then the handler is still busy, as in a loaded kernel
    time.sleep(2)
_kernel.shell_handlers["kernel_info_request"] = _slow_kernel_info
report.write_summary(report_dir, {{"answer": 0}})
"""
INTERRUPTED_IN_KERNEL = """
import sys
from dango_nb import report
report.write_summary(report_dir, {{"answer": 0}})
print("[IPKernelApp] ERROR | KeyboardInterrupt caught in kernel.", file=sys.__stderr__, flush=True)
"""


def _quiet(*a):
    return None


def test_a_failed_run_keeps_the_previous_output_and_says_where_the_attempt_is(tmp_path):
    out = tmp_path / "reports"
    ok = make_notebooks(tmp_path / "ok", {})
    report.run_report(TINY, out, only=["lambda_determination"], nb_dir=ok, log=_quiet)
    before = {p.relative_to(out): p.read_bytes() for p in (out / "lambda_determination").rglob("*") if p.is_file()}
    bad = make_notebooks(tmp_path / "bad", {"01_lambda_determination": LATE_FAIL})
    results, summary = report.run_report(TINY, out, only=["lambda_determination"], nb_dir=bad, log=_quiet)
    r = results[0]
    assert r.status == "failed" and summary["state"] == "failed"
    after = {p.relative_to(out): p.read_bytes() for p in (out / "lambda_determination").rglob("*") if p.is_file()}
    assert after == before  # the earlier report is untouched
    failed = out / "lambda_determination.failed"
    assert (failed / "partial.tsv").is_file() and r.folder == "lambda_determination.failed"
    assert r.ipynb == "lambda_determination.failed/01_lambda_determination.ipynb" and (out / r.html).is_file()
    assert f"this attempt is kept in {failed}" in r.error and "previous output in" in r.error
    assert r.previous == "lambda_determination"
    assert "lambda_determination/ (kept)" in (out / "index.html").read_text()
    assert not list(out.glob(".*.run-*")) and not (out / report.LOCK_NAME).exists()
    # the next success replaces both the old output and the out-of-date failed attempt
    report.run_report(TINY, out, only=["lambda_determination"], nb_dir=ok, log=_quiet)
    assert not failed.exists() and (out / "lambda_determination" / "sub" / "figure.png").is_file()


def test_unwritable_report_folder_is_a_clear_error(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert report.main(["--params", str(TINY), "--out", str(blocker / "reports"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"python -m dango_nb.report: error: {blocker / 'reports'}: {blocker} is not a folder")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_sequential_runs_replace_per_run_subfolders(tmp_path):
    nbs = make_notebooks(tmp_path / "nb", {"01_lambda_determination": SCHEDULE_LIKE})
    out = tmp_path / "reports"
    for _ in range(2):
        report.run_report(TINY, out, only=["lambda_determination"], nb_dir=nbs, log=_quiet)
    assert len(list((out / "lambda_determination").glob("PaperTwoStage_*"))) == 1


def test_a_folder_in_use_is_refused_and_a_killed_holder_leaves_no_stale_lock(tmp_path, capsys):
    import os
    import signal
    import subprocess
    import sys

    nbs = make_notebooks(tmp_path / "nb", {})
    out = tmp_path / "reports"
    out.mkdir()
    lock = out / report.LOCK_NAME
    code = ("import sys, time\nfrom dango_nb.fileio import folder_lock\n"
            "with folder_lock(sys.argv[2], sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(lock), str(out)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "held"
        assert report.main(["--params", str(TINY), "--out", str(out), "--notebooks", str(nbs), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert f"{out}: in use by another process (pid {holder.pid}," in err and "Traceback" not in err
        assert not (out / "summary.json").exists() and lock.is_file()
    finally:
        holder.send_signal(signal.SIGKILL)  # killed: the system releases its lock, the file stays
        holder.wait()
    results, _ = report.run_report(TINY, out, only=["lambda_determination"], nb_dir=nbs, log=_quiet)
    assert results[0].status == "ok"
    assert not lock.exists()


@pytest.mark.parametrize("sig, code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_interrupted_report_tells_the_truth(tmp_path, sig, code):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "reports"
    ok = make_notebooks(tmp_path / "ok", {})
    report.run_report(TINY, out, only=["pretraining", "lambda_determination"], nb_dir=ok, log=_quiet)
    kept = (out / "pretraining" / "summary.json").read_bytes()
    nbs = make_notebooks(tmp_path / "nb", {"02_pretraining": SLOW})
    proc = subprocess.Popen([sys.executable, "-m", "dango_nb.report", "--params", str(TINY), "--out", str(out),
                             "--notebooks", str(nbs)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 120
    while not list(out.glob(".pretraining.run-*/started")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    s = json.loads((out / "summary.json").read_text())
    assert s["state"] == "running" and [r["status"] for r in s["runs"]] == ["ok", "running", "pending", "pending"]
    assert "RUNNING (pid" in (out / "index.html").read_text()
    proc.send_signal(getattr(signal, sig))
    stdout, stderr = proc.communicate(timeout=240)  # generous: on a loaded 2-core machine shutdown is slow
    assert proc.returncode == code, stderr
    assert f"interrupted by {sig}" in stderr and "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["state"] == "interrupted" and s["ok"] is False
    assert [r["status"] for r in s["runs"]] == ["ok", "interrupted", "not run", "not run"]
    assert (out / "pretraining" / "summary.json").read_bytes() == kept  # earlier output kept
    assert (out / "pretraining.failed" / "started").is_file()
    index = (out / "index.html").read_text()
    assert "INTERRUPTED" in index
    import re

    for href in re.findall(r"(?:href|src)='([^'#]+)'", index):
        assert (out / href).exists(), href
    assert not (out / report.LOCK_NAME).exists() and not list(out.glob(".*.run-*"))


def test_kernel_shutdown_does_not_interrupt_the_kernel(tmp_path, capfd):
    nbs = make_notebooks(tmp_path / "nb", {"01_lambda_determination": SLOW_KERNEL_INFO})
    out = tmp_path / "reports"
    results, _ = report.run_report(TINY, out, only=["lambda_determination"], nb_dir=nbs, log=_quiet)
    assert results[0].status == "ok", results[0].error
    log = (out / "lambda_determination" / report.KERNEL_LOG).read_text()
    assert "KeyboardInterrupt" not in log and "KeyboardInterrupt" not in capfd.readouterr().err


def test_an_interrupt_logged_by_the_kernel_fails_the_run(tmp_path):
    nbs = make_notebooks(tmp_path / "nb", {"01_lambda_determination": INTERRUPTED_IN_KERNEL})
    out = tmp_path / "reports"
    results, summary = report.run_report(TINY, out, only=["lambda_determination"], nb_dir=nbs, log=_quiet)
    assert results[0].status == "failed" and summary["state"] == "failed"
    assert "the kernel was interrupted while the notebook ran" in results[0].error
    assert not (out / "lambda_determination").exists()


def test_summaries_are_strict_json_with_null_for_undefined(tmp_path):
    from dango_nb.fileio import read_json

    nbs = make_notebooks(tmp_path / "nb", {"01_lambda_determination": OK.replace("{n}", "float('nan')")})
    out = tmp_path / "reports"
    results, _ = report.run_report(TINY, out, only=["lambda_determination"], nb_dir=nbs, log=_quiet)
    assert results[0].status == "ok"
    for path in (out / "summary.json", out / "lambda_determination" / "summary.json"):
        text = path.read_text()
        assert "NaN" not in text
        read_json(path)
    assert read_json(out / "summary.json")["runs"][0]["summary"]["numbers"]["answer"] is None
    assert "<h3>answer</h3>n/a" in (out / "index.html").read_text()


def test_every_run_folder_records_its_resolved_params_and_provenance(tmp_path):
    import yaml

    from dango_nb.fileio import read_json
    from dango_nb.params import load_params, params_to_dict

    nbs = make_notebooks(tmp_path / "nb", {})
    out = tmp_path / "reports"
    results, summary = report.run_report(TINY, out, only=["lambda_determination", "evaluation"], nb_dir=nbs,
                                         log=_quiet)
    assert [r.status for r in results] == ["ok", "ok"]
    for r, stem in zip(results, ("01_lambda_determination", "04_evaluation")):
        folder = out / r.name
        assert (r.params, r.provenance) == (f"{r.name}/params.yaml", f"{r.name}/provenance.json")
        resolved = yaml.safe_load((folder / "params.yaml").read_text())
        expected = params_to_dict(load_params(TINY / f"{stem}.yaml", stem))
        # every value, defaults included: each key of the schema, not only those the tiny file sets
        assert set(resolved) == set(expected)
        for section in expected:
            if isinstance(expected[section], dict):
                assert set(expected[section]) <= set(resolved[section]), section
        prov = json.loads((folder / "provenance.json").read_text(), parse_constant=lambda t: 1 / 0)
        assert prov["notebook"] == f"{stem}.ipynb" and prov["versions"]["torch"] and "commit" in prov["git"]
        assert any(f["name"] == f"{stem}.yaml" and f["sha256"] for f in prov["data_files"])
        read_json(folder / "provenance.json")
    ev = yaml.safe_load((out / "evaluation" / "params.yaml").read_text())
    assert ev["evaluation"]["gpus_per_run"] == 0 and ev["evaluation"]["address"] is None  # defaults the file omits
    assert "num_heads" in ev["train"]["model"]  # DANGO's keyword defaults
    assert ev["evaluation"]["n_balanced_repeats"] == 2  # and the file's own values
    # the top-level summary links them
    md, index = (out / "summary.md").read_text(), (out / "index.html").read_text()
    for name in ("lambda_determination", "evaluation"):
        assert f"({name}/params.yaml)" in md and f"({name}/provenance.json)" in md
        assert f"href='{name}/params.yaml'" in index and f"href='{name}/provenance.json'" in index
    runs = json.loads((out / "summary.json").read_text())["runs"]
    assert [r["params"] for r in runs] == ["lambda_determination/params.yaml", "evaluation/params.yaml"]


def test_relative_out_folder_works(tmp_path, monkeypatch):
    """``make report`` passes ``--out reports``: a relative folder, while papermill changes the working
    directory to the notebooks' folder during a run."""
    monkeypatch.chdir(tmp_path)
    results, summary = report.run_report(TINY, "reports", only=["lambda_determination"], log=_quiet)
    assert results[0].status == "ok", results[0].error
    assert (tmp_path / "reports" / "lambda_determination" / "summary.json").is_file()
    assert (tmp_path / "reports" / "lambda_determination" / report.KERNEL_LOG).is_file()


def test_a_list_of_numbers_per_key_is_written_as_numbers():
    """Per-seed values (``{"gene2": [0.361, 0.018]}``) read as numbers in summary.md, not as a
    Python list with every digit."""
    per_seed = {"gene2": [0.36123456, 0.01812345, None]}
    assert report._md_value("dango pearson per seed", per_seed) == \
        "**dango pearson per seed**\n\n- gene2: 0.3612, 0.01812, n/a\n"
    assert "0.3612, 0.01812, n/a" in report._html_value(per_seed)
