"""Owned output folders against hostile or unusual paths: links (as the folder, as its lock file),
other names of one folder (``.``, a link), files with common names in someone else's folder, owner
records that are not files or not records; each refused in one line before any work, nothing written."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dango_nb import report
from dango_nb.__main__ import main
from dango_nb.errors import OutputFolderError
from dango_nb.fileio import (LEGACY_MARKERS, check_output_folder, folder_lock, lock_file_of, owned_output_folder,
                             read_owner, write_owner)

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "params" / "tiny"
TRAIN = ["train", str(TINY / "train.yaml"), "--no-progress"]
EVAL = ["evaluate", "--preset", "tiny", "--splits", "random", "--models", "mean", "--folds", "0", "--n-boot", "0",
        "--no-progress", "--inline"]


def _err_line(capsys, prefix: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1 and err.startswith(prefix), err
    return err


def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (os.readlink(p) if p.is_symlink() else p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


def _one_run_sweep(path: Path, lr: float) -> Path:
    path.write_text(yaml.safe_dump({"base": str(TINY / "train.yaml"), "overrides": {"train.epochs": 2, "train.lr": lr},
                                    "axes": {"train.seed": [0]}}))
    return path


def _sweep(path: Path, out: Path) -> list[str]:
    return ["sweep", str(path), "--out", str(out), "--inline", "--no-progress"]


def _hold_lock(folder: Path) -> subprocess.Popen:
    code = ("import sys, time\nfrom dango_nb.fileio import folder_lock\n"
            "with folder_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(120)\n")
    p = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.stdout.readline().strip() == "held"
    return p


# ------------------------------------------------------------------------------------- lock files
def test_a_lock_file_that_is_a_link_or_not_a_file_is_refused_and_never_followed(tmp_path, capsys):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "data.txt").write_text("someone's data\n")
    (tmp_path / "sl").mkdir()
    link = tmp_path / "sl" / ".y.lock"
    link.symlink_to(foreign / "data.txt")
    assert main(TRAIN + ["--out", str(tmp_path / "sl" / "y")]) == 2
    err = _err_line(capsys, f"dango-nb train: error: {link}: a symbolic link where the lock file of ")
    assert "remove it, or give another folder" in err
    assert (foreign / "data.txt").read_text() == "someone's data\n" and link.is_symlink()
    assert sorted(p.name for p in (tmp_path / "sl").iterdir()) == [".y.lock"]

    os.mkfifo(tmp_path / ".fifo.lock")
    with pytest.raises(OutputFolderError, match=r"\.fifo\.lock: a FIFO where the lock file of .* goes"):
        with folder_lock(tmp_path / "fifo"):
            pass


def test_releasing_a_lock_never_removes_a_file_that_is_not_the_lock(tmp_path):
    with folder_lock(tmp_path / "out") as lock:
        (tmp_path / "other").write_text("not the lock\n")
        os.replace(tmp_path / "other", lock)  # someone put another file at the lock's path
    assert lock.read_text() == "not the lock\n"


# ------------------------------------------------------------------------------ owner recognition
@pytest.mark.parametrize("files, command", [
    (["sweep.yaml", "notes.txt"], "dango-nb sweep"),
    (["index.html", "photo.txt"], "dango_nb.report"),
    (["COMPLETE", "mydata.csv"], "dango-nb train"),
    (["metrics.csv"], "dango-nb evaluate"),
    (["summary.json"], "dango_nb.report"),
])
def test_one_common_file_name_does_not_make_a_folder_ours(files, command, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    for name in files:
        (folder / name).write_text("# mine\n")
    assert read_owner(folder) is None
    with pytest.raises(OutputFolderError, match=f"exists and is not an output folder of `{command}` "
                                                r"\(it holds .*\); give a new or empty folder as --out"):
        check_output_folder(folder, command)


@pytest.mark.parametrize("command", sorted(LEGACY_MARKERS))
def test_an_older_versions_folder_is_recognised_by_its_full_set_of_files_only(command, tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    entries = LEGACY_MARKERS[command]
    for e in entries:
        (folder / e.rstrip("/")).mkdir() if e.endswith("/") else (folder / e).write_text("x")
    assert read_owner(folder) == {"command": command, "params": None}
    check_output_folder(folder, command)  # accepted when no parameters are compared
    last = folder / entries[-1].rstrip("/")
    last.rmdir() if last.is_dir() else last.unlink()
    last.mkdir() if not entries[-1].endswith("/") else last.write_text("x")  # wrong kind of entry
    assert read_owner(folder) is None


def test_a_foreign_folder_with_a_sweep_yaml_keeps_it_and_a_run_marker_gives_no_traceback(tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "sweep.yaml").write_text("# my own notes, not a sweep\naxes: {}\n")
    (folder / "results.txt").write_text("1 2 3\n")
    before = _tree(folder)
    assert main(_sweep(_one_run_sweep(tmp_path / "s.yaml", 0.01), folder)) == 2
    _err_line(capsys, f"dango-nb sweep: error: {folder}: exists and is not an output folder of `dango-nb sweep`")
    assert _tree(folder) == before
    (tmp_path / "data").mkdir()
    for name in ("COMPLETE", "mydata.csv"):
        (tmp_path / "data" / name).write_text("x\n")
    assert main(TRAIN + ["--out", str(tmp_path / "data")]) == 2
    _err_line(capsys, f"dango-nb train: error: {tmp_path / 'data'}: exists and is not an output folder of "
                      "`dango-nb train` (it holds COMPLETE, mydata.csv)")


@pytest.mark.parametrize("content", ["[1, 2]", '{"params": {}}', '{"command": 3}', "not json"])
def test_an_owner_json_that_is_not_a_record_is_refused(content, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "owner.json").write_text(content)
    for name in ("COMPLETE", "run.json", "params.yaml", "provenance.json"):  # an older run folder otherwise
        (tmp_path / "out" / name).write_text("{}")
    (tmp_path / "out" / "checkpoints").mkdir()
    with pytest.raises(OutputFolderError, match=r"owner\.json: (not an owner record|unreadable owner record)"):
        check_output_folder(tmp_path / "out", "dango-nb train")


def _train_in_subprocess(out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dango_nb", *TRAIN, "--out", str(out)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_owner_and_run_records_that_are_not_regular_files_are_refused_without_reading(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "owner.json").mkdir()
    (tmp_path / "f").mkdir()
    os.mkfifo(tmp_path / "f" / "owner.json")
    (tmp_path / "r").mkdir()  # a train folder whose run record is a FIFO
    write_owner(tmp_path / "r", "dango-nb train", {})
    (tmp_path / "r" / "COMPLETE").write_text("{}")
    os.mkfifo(tmp_path / "r" / "run.json")
    for name, expected in (("d", "owner.json: unreadable owner record (a folder, not a regular file)"),
                           ("f", "owner.json: unreadable owner record (a FIFO, not a regular file)"),
                           ("r", "run.json: unreadable run record")):
        done = _train_in_subprocess(tmp_path / name)  # a FIFO opened for reading would block: a timeout
        err = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(err) == 1 and err[0].startswith("dango-nb train: error: "), done.stderr
        assert expected in err[0], err
    assert not any(p.name.endswith((".partial", ".lock")) for p in tmp_path.iterdir())


# ------------------------------------------------------------------------------ one folder, one lock
def test_every_name_of_a_folder_has_the_same_lock(tmp_path, monkeypatch):
    (tmp_path / "swB").mkdir()
    (tmp_path / "lnB").symlink_to("swB")
    assert lock_file_of(tmp_path / "lnB") == lock_file_of(tmp_path / "swB") == tmp_path / ".swB.lock"
    monkeypatch.chdir(tmp_path / "swB")
    assert lock_file_of(".") == lock_file_of("../lnB") == tmp_path / ".swB.lock"


def test_a_sweep_cannot_bypass_the_lock_through_a_link_or_dot(tmp_path, capsys, monkeypatch):
    sweep = _one_run_sweep(tmp_path / "s.yaml", 0.01)
    real = tmp_path / "swB"
    real.mkdir()
    (tmp_path / "lnB").symlink_to("swB")
    holder = _hold_lock(real)
    try:
        for out in (tmp_path / "lnB", Path(".")):
            monkeypatch.chdir(real if out == Path(".") else tmp_path)
            assert main(_sweep(sweep, out)) == 2
            _err_line(capsys, f"dango-nb sweep: error: {real}: in use by another process (pid {holder.pid},")
            assert list(real.iterdir()) == []
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


def test_train_into_dot_of_an_empty_folder_is_train_into_that_folder(tmp_path, capsys, monkeypatch):
    (tmp_path / "e").mkdir()
    monkeypatch.chdir(tmp_path / "e")
    assert main(TRAIN + ["--out", "."]) == 0, capsys.readouterr().err
    assert (tmp_path / "e" / "COMPLETE").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e"]


# ----------------------------------------------------------------------------- links as --out
def test_a_link_to_a_folder_as_out_writes_into_its_target(tmp_path, capsys):
    (tmp_path / "target").mkdir()
    (tmp_path / "lnk").symlink_to("target")
    assert main(TRAIN + ["--out", str(tmp_path / "lnk")]) == 0, capsys.readouterr().err
    assert (tmp_path / "lnk").is_symlink() and (tmp_path / "target" / "COMPLETE").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lnk", "target"]
    assert main(TRAIN + ["--out", str(tmp_path / "lnk")]) == 0  # the same run again: skipped
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["skipped"] is True


@pytest.mark.parametrize("command", ["train", "evaluate", "sweep"])
def test_a_dangling_link_as_out_is_refused_before_any_work(command, tmp_path, capsys):
    (tmp_path / "dang").symlink_to("nowhere")
    sweep = ["sweep", str(TINY / "sweep.yaml"), "--inline", "--no-progress"]
    args = {"train": TRAIN, "evaluate": EVAL, "sweep": sweep}[command]
    assert main(args + ["--out", str(tmp_path / "dang")]) == 2
    _err_line(capsys, f"dango-nb {command}: error: {tmp_path / 'dang'}: a symbolic link to nowhere, which does not "
                      "exist; give an existing folder, a link to one, or a new folder as --out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dang"]


def test_an_evaluation_through_a_link_writes_into_its_target(tmp_path, capsys):
    (tmp_path / "target").mkdir()
    (tmp_path / "lnk").symlink_to("target")
    assert main(EVAL + ["--out", str(tmp_path / "lnk")]) == 0, capsys.readouterr().err
    assert (tmp_path / "target" / "metrics.csv").is_file() and (tmp_path / "target" / "owner.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lnk", "target"]


# ----------------------------------------------------------------------------------------- sweeps
def test_a_sweep_rerun_with_changed_parameters_is_refused_when_its_runs_are_unfinished(tmp_path, capsys):
    from dango_nb.runs.executor import sweep_specs
    from dango_nb.runs.folder import partial_path, request_of
    from dango_nb.runs.sweep import load_sweep
    from dango_nb.fileio import atomic_write_json

    out = tmp_path / "sweep"
    first = load_sweep(_one_run_sweep(tmp_path / "s.yaml", 0.01))
    for spec in sweep_specs(first, out):  # every run interrupted after it started
        partial_path(spec.out).mkdir(parents=True)
        atomic_write_json(request_of(spec.params), partial_path(spec.out) / "request.json")
    write_owner(out, "dango-nb sweep", {})
    before = _tree(out)
    assert main(_sweep(_one_run_sweep(tmp_path / "s.yaml", 0.02), out)) == 2
    err = _err_line(capsys, f"dango-nb sweep: error: {out / 'runs' / 'seed-0'}: an unfinished run of this folder "
                            "(.seed-0.partial) was started with other parameters (")
    assert "train.lr: 0.01 -> 0.02" in err
    assert _tree(out) == before


def test_compare_of_a_sweep_without_complete_runs_is_an_input_error(tmp_path, capsys):
    from dango_nb.runs.compare import compare_recipes
    from dango_nb.runs.sweep import load_sweep
    from dango_nb.fileio import to_strict_json

    sweep = load_sweep(_one_run_sweep(tmp_path / "s.yaml", 0.01))
    out = tmp_path / "sweep"
    out.mkdir()
    definition = to_strict_json({"source": sweep.source, **sweep.to_dict()})
    (out / "sweep.yaml").write_text(yaml.safe_dump(definition))
    write_owner(out, "dango-nb sweep", definition)
    with pytest.raises(OutputFolderError, match="no complete runs to compare"):
        compare_recipes(out)
    assert main(["compare", str(out)]) == 2
    _err_line(capsys, "dango-nb compare: error: ")


# --------------------------------------------------------------------------------------- messages
def test_compare_names_what_is_not_a_sweep_folder(tmp_path, capsys):
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "notes.txt").write_text("mine")
    (tmp_path / "file.txt").write_text("mine")
    (tmp_path / "ev").mkdir()
    write_owner(tmp_path / "ev", "dango-nb evaluate", {})
    for name, why in (("home", "no owner.json"), ("file.txt", "it is not a folder"), ("new", "it does not exist"),
                      ("ev", "made by `dango-nb evaluate`")):
        assert main(["compare", str(tmp_path / name)]) == 2
        assert _err_line(capsys, "dango-nb compare: error: ") == (
            f"dango-nb compare: error: {tmp_path / name}: not a sweep folder ({why}); give a folder `dango-nb sweep` made")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ev", "file.txt", "home"]


@pytest.mark.parametrize("command", ["train", "evaluate", "sweep", "report"])
def test_out_below_a_file_or_at_a_file_is_one_line_saying_not_a_folder(command, tmp_path, capsys):
    (tmp_path / "file.txt").write_text("mine")
    for out, expected in (("file.txt", "file.txt: exists and is not a folder; give a new folder (or one"),
                          ("file.txt/sub", f"file.txt/sub: {tmp_path / 'file.txt'} is not a folder; give a new folder")):
        if command == "report":
            rc = report.main(["--params", str(TINY), "--out", str(tmp_path / out), "--quiet", "--only",
                              "lambda_determination"])
            prefix = "python -m dango_nb.report: error: "
        else:
            args = {"train": TRAIN, "evaluate": EVAL, "sweep": ["sweep", str(TINY / "sweep.yaml"), "--inline",
                                                                "--no-progress"]}[command]
            rc = main(args + ["--out", str(tmp_path / out)])
            prefix = f"dango-nb {command}: error: "
        assert rc == 2
        assert expected in _err_line(capsys, prefix)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_a_rerun_keeps_the_owner_records_first_creation_time(tmp_path):
    out = tmp_path / "ev"
    with owned_output_folder(out, "dango-nb evaluate", {"seed": 0}):
        pass
    record = json.loads((out / "owner.json").read_text())
    record["created"] = "2001-02-03T04:05:06"
    (out / "owner.json").write_text(json.dumps(record))
    with owned_output_folder(out, "dango-nb evaluate", {"seed": 0}):
        pass
    assert json.loads((out / "owner.json").read_text())["created"] == "2001-02-03T04:05:06"
