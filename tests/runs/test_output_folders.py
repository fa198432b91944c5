"""Owned output folders: a command writes only into a new or empty folder, or one it made itself with
the same parameters; one process at a time holds a folder's lock; checks come before any write."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from dango_nb import report
from dango_nb.__main__ import main
from dango_nb.errors import ParamsError
from dango_nb.params import NOTEBOOKS

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "params" / "tiny"
EVAL = ["evaluate", "--preset", "tiny", "--splits", "random", "--models", "mean", "additive", "--folds", "0",
        "--n-boot", "0", "--no-progress"]


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _hold_lock(folder: Path) -> subprocess.Popen:
    """Another process holding ``folder``'s lock (prints a line once it holds it)."""
    code = ("import sys, time\nfrom dango_nb.fileio import folder_lock\n"
            "with folder_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(120)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True, env=env)
    assert p.stdout.readline().strip() == "held"
    return p


def test_evaluate_needs_out_and_refuses_a_folder_made_with_other_parameters(tmp_path, capsys):
    assert main(EVAL) == 2  # no default folder that another command (the report) owns
    assert "--out" in capsys.readouterr().err
    out = tmp_path / "ev"
    assert main(EVAL + ["--out", str(out)]) == 0
    owner = json.loads((out / "owner.json").read_text())
    assert owner["command"] == "dango-nb evaluate" and owner["params"]["seed"] == 0
    assert owner["params"]["data"]["preset"] == "tiny" and "workers" not in owner["params"]["evaluation"]
    before = _snapshot(out)
    capsys.readouterr()
    assert main(EVAL + ["--out", str(out), "--seed", "1", "--epochs", "5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dango-nb evaluate: error: {out}: made by `dango-nb evaluate` with other parameters")
    assert "seed: 0 -> 1" in err and "train.epochs: 50 -> 5" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert _snapshot(out) == before
    assert main(EVAL + ["--out", str(out), "--workers", "1"]) == 0  # same numbers: the folder is reused


def test_evaluate_refuses_a_report_folder(tmp_path, capsys):
    folder = tmp_path / "reports" / "evaluation"
    folder.mkdir(parents=True)
    report.write_summary(folder, {"pearson": 0.5})
    for name in ("index.html", "summary.md"):  # the rest of what an older report wrote
        (folder / name).write_text("report\n")
    before = _snapshot(folder)
    assert main(EVAL + ["--out", str(folder)]) == 2
    err = capsys.readouterr().err
    assert f"error: {folder}: belongs to `dango_nb.report`, not to `dango-nb evaluate`" in err
    assert _snapshot(folder) == before and not (folder.parent / ".evaluation.lock").exists()


@pytest.mark.parametrize("command", ["train", "evaluate", "sweep", "compare", "report"])
def test_out_naming_a_foreign_folder_or_a_file_is_refused(command, tmp_path, capsys):
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    a_file = tmp_path / "file.txt"
    a_file.write_text("mine too")
    for out, expected in ((foreign, "exists and is not an output folder of"), (a_file, "is not a folder")):
        if command == "compare":
            expected = "not a sweep folder"
        if command == "report":
            rc = report.main(["--params", str(TINY), "--out", str(out), "--quiet", "--only", "lambda_determination"])
            prefix = "python -m dango_nb.report: error: "
        else:
            args = {"train": ["train", str(TINY / "train.yaml"), "--no-progress"],
                    "evaluate": EVAL, "sweep": ["sweep", str(TINY / "sweep.yaml"), "--inline", "--no-progress"]}
            rc = main(["compare", str(out)] if command == "compare" else args[command] + ["--out", str(out)])
            prefix = f"dango-nb {command}: error: "
        err = capsys.readouterr().err
        assert rc == 2, err
        last = err.strip()
        assert last.startswith(prefix) and expected in last, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "home"]
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"] and a_file.read_text() == "mine too"


def test_a_folder_of_another_command_is_refused(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    (sweep / "runs").mkdir(parents=True)  # what an older sweep wrote
    (sweep / "sweep.yaml").write_text("axes: {}\n")
    (sweep / "provenance.json").write_text("{}\n")
    assert main(["train", str(TINY / "train.yaml"), "--out", str(sweep), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{sweep}: belongs to `dango-nb sweep`, not to `dango-nb train`" in err
    from dango_nb.fileio import check_output_folder

    check_output_folder(sweep, "dango-nb sweep")
    check_output_folder(tmp_path / "new", "dango-nb train")
    (tmp_path / "empty").mkdir()
    check_output_folder(tmp_path / "empty", "dango-nb train")


def test_a_second_train_into_the_same_folder_fails_at_once_naming_the_holder(tmp_path, capsys):
    out = tmp_path / "run"
    holder = _hold_lock(out)
    try:
        assert main(["train", str(TINY / "train.yaml"), "--out", str(out), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"dango-nb train: error: {out}: in use by another process (pid {holder.pid},")
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert not out.exists() and not (tmp_path / ".run.partial").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    from dango_nb.fileio import folder_lock

    with folder_lock(out) as lock:  # a killed holder leaves no stale lock
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        with folder_lock(out):  # nested in the same process
            pass
    assert not lock.exists()


def test_the_report_uses_the_shared_lock(tmp_path, capsys):
    out = tmp_path / "reports"
    out.mkdir()
    holder = _hold_lock_file(out / report.LOCK_NAME, out)
    try:
        assert report.main(["--params", str(TINY), "--out", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert f"in use by another process (pid {holder.pid}," in err and "Traceback" not in err
        assert not (out / "summary.json").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


def _hold_lock_file(lock: Path, folder: Path) -> subprocess.Popen:
    code = ("import sys, time\nfrom dango_nb.fileio import folder_lock\n"
            "with folder_lock(sys.argv[2], sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(120)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.Popen([sys.executable, "-c", code, str(lock), str(folder)], stdout=subprocess.PIPE, text=True,
                         env=env)
    assert p.stdout.readline().strip() == "held"
    return p


def _one_run_sweep(path: Path, lr: float) -> Path:
    path.write_text(yaml.safe_dump({"base": str(TINY / "train.yaml"),
                                    "overrides": {"train.epochs": 2, "train.lr": lr},
                                    "axes": {"train.seed": [0]}}))
    return path


def test_a_sweep_rerun_with_changed_parameters_writes_nothing(tmp_path, capsys):
    from dango_nb.runs.executor import run_sweep

    out = tmp_path / "sweep"
    assert main(["sweep", str(_one_run_sweep(tmp_path / "s.yaml", 0.01)), "--out", str(out), "--inline",
                 "--no-progress"]) == 0
    before = {name: (out / name).read_bytes() for name in ("sweep.yaml", "provenance.json")}
    capsys.readouterr()
    changed = _one_run_sweep(tmp_path / "s.yaml", 0.05)
    assert main(["sweep", str(changed), "--out", str(out), "--inline", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "train.lr: 0.01 -> 0.05" in err and "Traceback" not in err
    with pytest.raises(ParamsError):
        run_sweep(changed, out, backend="inline", progress=False)
    assert {name: (out / name).read_bytes() for name in before} == before


# ------------------------------------------------------------------------------ make report: reuse
EVALUATION_BODY = '''
from dango_nb import eval as evaluation, params, report
from dango_nb.lambdas import determine_lambdas
p = params.load_params(params_file, "04_evaluation")
study = p.data.load_study()
lambdas = determine_lambdas(study.read_release("9.1"), study.read_release("11.0")).lambdas
options = p.evaluation.replace(splits=["random"], models=["dango"], n_boot=0)
evaluation.run_evaluation(study, options, config=p.train, lambdas=lambdas, seed=p.data.seed, out_dir=report_dir,
                          data=p.data, progress=False)
report.write_summary(report_dir, {"done": 1})
'''


def _stand_in_notebooks(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for stem in NOTEBOOKS:
        nb = nbformat.v4.new_notebook()
        cell = nbformat.v4.new_code_cell('params_file = "unset"\nreport_dir = "unset"')
        cell.metadata["tags"] = ["parameters"]
        body = EVALUATION_BODY if stem == "04_evaluation" else "from dango_nb import report\n" \
            "report.write_summary(report_dir, {'done': 1})"
        nb.cells = [cell, nbformat.v4.new_code_cell(body)]
        nbformat.write(nb, folder / f"{stem}.ipynb")
    return folder


def _run_state(run: Path) -> tuple:
    info = json.loads((run / "run.json").read_text())
    return info["finished"], info["request"]["train"]["epochs"], (run / "COMPLETE").stat().st_ino


def test_a_report_rerun_reuses_complete_run_folders_and_retrains_changed_ones(tmp_path):
    nbs = _stand_in_notebooks(tmp_path / "nb")
    params_dir = tmp_path / "params"
    params_dir.mkdir()
    for f in TINY.glob("*.yaml"):
        (params_dir / f.name).write_text(f.read_text())
    out = tmp_path / "reports"
    run = out / "evaluation" / "runs" / "random_fold0_seed0"

    def report_once():
        results, _ = report.run_report(params_dir, out, only=["lambda_determination", "evaluation"], nb_dir=nbs,
                                       log=lambda *a: None)
        assert [r.status for r in results] == ["ok", "ok"], [r.error for r in results]

    report_once()
    first = _run_state(run)
    report_once()  # same parameters: nothing is trained again
    assert _run_state(run) == first
    ev = yaml.safe_load((params_dir / "04_evaluation.yaml").read_text())
    ev["train"]["epochs"] = 2
    (params_dir / "04_evaluation.yaml").write_text(yaml.safe_dump(ev))
    report_once()  # a changed parameter: trained again
    finished, epochs, _ = _run_state(run)
    assert epochs == 2 and finished != first[0]
    assert not list((out / "evaluation" / "runs").glob(".*"))  # no aside or partial folders left


def test_a_new_report_build_links_the_complete_run_folders_of_earlier_attempts(tmp_path):
    final, failed, build = tmp_path / "evaluation", tmp_path / "evaluation.failed", tmp_path / ".evaluation.run-1"
    for folder, names in ((final, ["a", "b"]), (failed, ["b", "c"])):
        for name in names:
            (folder / "runs" / name).mkdir(parents=True)
            (folder / "runs" / name / "COMPLETE").write_text(folder.name)
    (final / "runs" / "unfinished").mkdir()
    build.mkdir()
    report._carry_runs([final, failed], build)
    assert sorted(p.name for p in (build / "runs").iterdir()) == ["a", "b", "c"]
    assert (build / "runs" / "b" / "COMPLETE").read_text() == "evaluation"  # the newer output wins
    assert (build / "runs" / "c" / "COMPLETE").stat().st_ino == (failed / "runs" / "c" / "COMPLETE").stat().st_ino


def test_other_make_targets_outputs_do_not_block_a_report(tmp_path):
    import re

    from dango_nb.errors import OutputFolderError
    from dango_nb.fileio import check_output_folder
    from dango_nb.report import REPORT_COMMAND, SHARED_REPORT_ENTRIES

    root = Path(__file__).resolve().parents[2]
    written = set(re.findall(r"reports/([\w.]+)", (root / "Makefile").read_text()))
    assert written - {"ui"} <= SHARED_REPORT_ENTRIES, written  # every make target writing into reports/
    assert "ui" in written and "ui" in SHARED_REPORT_ENTRIES  # make test-ui's screenshots
    out = tmp_path / "reports"
    (out / "ui").mkdir(parents=True)
    for name in ("bench.json", "bench_fit.json", "bench_fit.md", ".gitkeep"):
        (out / name).write_text("{}")
    assert check_output_folder(out, REPORT_COMMAND, shared=SHARED_REPORT_ENTRIES) == out.resolve()
    with pytest.raises(OutputFolderError, match="it holds bench.json"):
        check_output_folder(out, REPORT_COMMAND)  # without the allowance they are someone else's
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputFolderError, match=r"it holds notes.txt\)"):
        check_output_folder(out, REPORT_COMMAND, shared=SHARED_REPORT_ENTRIES)
