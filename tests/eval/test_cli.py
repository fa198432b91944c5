"""Command line: every bad input exits 2 with one ``dango-nb <command>: error: ...`` line, before any
work where it can be seen early; a checkpoint's recorded data source is never followed by itself."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dango_nb.__main__ import COMMANDS, main


def _err_line(capsys) -> str:
    """The last stderr line (argparse prints the usage above it)."""
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.fixture
def setup(trained_run, tmp_path):
    study, ckpt, data_dir = trained_run
    gfile = tmp_path / "genes.txt"
    gfile.write_text("\n".join(study.genes[:6]) + "\n")
    src = ["--preset", "tiny", "--data-seed", "0", "--data-dir", str(data_dir)]
    return study, ckpt, gfile, src


@pytest.fixture
def unwritable_dir(tmp_path):
    """A folder nobody here may create files in (root ignores modes: use a sysfs folder then)."""
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        yield ro
        ro.chmod(0o755)
    elif Path("/sys/kernel").is_dir():
        yield Path("/sys/kernel")
    else:
        pytest.skip("no folder that root cannot write to")


def _best(ckpt) -> Path:
    from dango_nb.train import list_checkpoints

    return Path(list_checkpoints(ckpt)["path"].iloc[0])


# ------------------------------------------------------------------------------------ predict
@pytest.mark.parametrize("value", ["-1", "0", "two"])
def test_top_k_must_be_positive(setup, tmp_path, capsys, value):
    _, ckpt, gfile, src = setup
    out = tmp_path / "p.tsv"
    rc = main(["predict", "--checkpoint", str(ckpt), "--genes", str(gfile), "--out", str(out), "--all",
               "--top-k", value, "--no-progress", *src])
    assert rc == 2 and not out.exists()
    assert _err_line(capsys) == f"dango-nb predict: error: argument --top-k: expected an integer >= 1, got '{value}'"


def test_top_k_keeps_the_best_members(setup, tmp_path, capsys):
    _, ckpt, gfile, src = setup
    out = tmp_path / "p.tsv"
    assert main(["predict", "--checkpoint", str(ckpt), "--genes", str(gfile), "--out", str(out), "--all",
                 "--top-k", "1", "--no-progress", *src]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["members"] == 1


def test_library_refuses_non_positive_counts(setup):
    from dango_nb.eval.ensemble import EnsembleScorer, checkpoint_files
    from dango_nb.eval.options import EvaluationOptions
    from dango_nb.eval.prediction import BaselineScorer, score_triplets

    study, ckpt, _, _ = setup
    assert len(checkpoint_files([ckpt], None)) == 2
    for k in (-1, 0):
        with pytest.raises(ValueError, match="top_k must be an integer >= 1"):
            checkpoint_files([ckpt], k)
        with pytest.raises(ValueError, match="ensemble_top_k: expected an integer >= 1 or null"):
            EvaluationOptions(ensemble_top_k=k)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        EnsembleScorer.from_checkpoints([ckpt], study.cell_graph, batch_size=0)

    class Zero:
        def predict(self, idx):
            return [0.0] * len(idx)

    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        score_triplets(BaselineScorer(Zero(), study.genes), [study.genes[:3]], batch_size=0)


@pytest.mark.parametrize("flag", ["--batch-size", "--chunk-size"])
def test_batch_and_chunk_size_must_be_positive(setup, tmp_path, capsys, flag):
    _, ckpt, gfile, src = setup
    out = tmp_path / "p.tsv"
    assert main(["predict", "--checkpoint", str(ckpt), "--genes", str(gfile), "--out", str(out), "--all",
                 flag, "0", "--no-progress", *src]) == 2
    assert _err_line(capsys) == f"dango-nb predict: error: argument {flag}: expected an integer from 1 to 100000000, got '0'"
    assert not out.exists()


def test_missing_inputs_and_bad_output_are_argument_errors(setup, tmp_path, capsys, unwritable_dir):
    _, ckpt, gfile, src = setup
    base = ["predict", "--checkpoint", str(ckpt), "--no-progress", *src]
    assert main([*base, "--genes", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "p.tsv")]) == 2
    assert _err_line(capsys) == f"dango-nb predict: error: argument --genes: {tmp_path / 'nope.txt'}: no such file"
    assert main([*base, "--genes", str(gfile), "--out", str(tmp_path / "p.xlsx")]) == 2
    assert "argument --out: " in (line := _err_line(capsys)) and "unsupported table suffix '.xlsx'" in line
    out = unwritable_dir / "sub" / "p.tsv"
    assert main([*base, "--genes", str(gfile), "--out", str(out)]) == 2
    assert _err_line(capsys) == (f"dango-nb predict: error: argument --out: {out}: cannot write in "
                                 f"{unwritable_dir} (permission denied)")


def test_permission_error_under_out_is_one_line(setup, tmp_path, capsys, monkeypatch):
    """Refused after the check (e.g. the folder turned read-only mid-run): still one line, exit 2."""
    from dango_nb.eval import prediction as P

    _, ckpt, gfile, src = setup
    out = tmp_path / "p.tsv"

    def refuse(table, path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(P, "write_predictions", refuse)
    assert main(["predict", "--checkpoint", str(ckpt), "--genes", str(gfile), "--out", str(out), "--all",
                 "--no-progress", *src]) == 2
    assert _err_line(capsys) == f"dango-nb predict: error: {out}: permission denied"


def test_a_bug_keeps_its_traceback(setup, tmp_path, monkeypatch):
    add, _, help_ = COMMANDS["predict"]

    def broken(args):
        raise ValueError("internal invariant broken")

    monkeypatch.setitem(COMMANDS, "predict", (add, broken, help_))
    _, ckpt, gfile, src = setup
    with pytest.raises(ValueError, match="internal invariant"):
        main(["predict", "--checkpoint", str(ckpt), "--genes", str(gfile), "--out", str(tmp_path / "p.tsv"), *src])


def test_console_script_exit_code_and_message(setup, tmp_path):
    _, ckpt, gfile, src = setup
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", "dango_nb", "predict", "--checkpoint", str(ckpt), "--genes",
                           str(gfile), "--out", str(tmp_path / "p.tsv"), "--batch-size", "0", *src],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == \
        "dango-nb predict: error: argument --batch-size: expected an integer from 1 to 100000000, got '0'"
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------------- recorded data source
def _with_source(ckpt, tmp_path, source) -> Path:
    saved = torch.load(_best(ckpt), map_location="cpu", weights_only=True)
    saved["source"] = source
    path = tmp_path / "recorded" / "recorded.pt"  # --out may not lie in a checkpoint's folder
    path.parent.mkdir(exist_ok=True)
    torch.save(saved, path)
    return path


def test_recorded_source_is_shown_not_followed(setup, tmp_path, capsys):
    _, ckpt, gfile, _ = setup
    out = tmp_path / "p.tsv"
    assert main(["predict", "--checkpoint", str(ckpt), "--genes", str(gfile), "--out", str(out), "--all"]) == 2
    line = _err_line(capsys)
    assert line.startswith("dango-nb predict: error: no data source given; ")
    assert "records it was trained on --preset tiny --data-seed 0 [--data-dir DIR]: pass these options" in line
    assert not out.exists()


def test_recorded_data_dir_is_never_written(setup, tmp_path, capsys):
    _, ckpt, gfile, src = setup
    victim = tmp_path / "victim"
    bad = _with_source(ckpt, tmp_path, {"kind": "synthetic", "preset": "tiny", "seed": 0, "data_dir": str(victim)})
    out = tmp_path / "p.tsv"
    assert main(["predict", "--checkpoint", str(bad), "--genes", str(gfile), "--out", str(out), "--all"]) == 2
    assert "--preset tiny --data-seed 0 [--data-dir DIR]" in _err_line(capsys)
    # the user's --data-dir is where the benchmark is read; the recorded one stays untouched
    assert main(["predict", "--checkpoint", str(bad), "--genes", str(gfile), "--out", str(out), "--all",
                 "--no-progress", *src]) == 0
    assert out.is_file() and not victim.exists()


def test_recorded_files_are_not_read(setup, tmp_path, capsys, monkeypatch):
    import dango_nb.data.string_db as S
    import dango_nb.data.study as ST

    _, ckpt, gfile, _ = setup
    elsewhere = tmp_path / "other place" / "links.txt"
    elsewhere.parent.mkdir()
    elsewhere.write_text("protein1 protein2 combined_score\n")
    bad = _with_source(ckpt, tmp_path, {"kind": "files", "string": str(elsewhere), "kuzmin": str(elsewhere)})
    calls = []
    for mod, name in ((S, "read_string_detailed"), (S, "read_dango_release"), (ST, "load_study_from_files")):
        monkeypatch.setattr(mod, name, lambda *a, **k: calls.append(a))
    assert main(["predict", "--checkpoint", str(bad), "--genes", str(gfile), "--out", str(tmp_path / "p.tsv")]) == 2
    line = _err_line(capsys)
    assert f"records it was trained on --string '{elsewhere}' --kuzmin '{elsewhere}': pass these options" in line
    assert calls == []


@pytest.mark.parametrize("extra, message", [
    (["--data-dir", "somewhere"], "--data-seed and --data-dir go with --preset"),
    (["--data-seed", "1"], "--data-seed and --data-dir go with --preset"),
])
def test_source_options_that_go_together(setup, tmp_path, capsys, extra, message):
    _, ckpt, gfile, _ = setup
    assert main(["predict", "--checkpoint", str(ckpt), "--genes", str(gfile), "--out", str(tmp_path / "p.tsv"),
                 *extra]) == 2
    assert _err_line(capsys) == f"dango-nb predict: error: {message}"


def test_preset_and_string_are_exclusive(setup, tmp_path, capsys):
    _, ckpt, gfile, src = setup
    assert main(["predict", "--checkpoint", str(ckpt), "--genes", str(gfile), "--out", str(tmp_path / "p.tsv"),
                 *src, "--string", str(gfile)]) == 2
    assert _err_line(capsys) == "dango-nb predict: error: argument --string: not allowed with argument --preset"


# ------------------------------------------------------------------------------------ evaluate
@pytest.mark.parametrize("train, message", [
    ('{"lrr": 1}', "--train/--epochs/--transition-epoch: unknown key 'lrr'; allowed keys"),
    ('{"lr": "fast"}', "--train/--epochs/--transition-epoch: key 'lr': expected a number, got str 'fast'"),
    ('{"epochs": -1}', "TrainConfig.epochs: expected an integer from 1 to 100000, got -1"),
    ('[1]', "argument --train: expected a JSON object"),
    ('{lr: 1}', "argument --train: not valid JSON"),
])
def test_evaluate_train_fields_checked_before_any_work(tmp_path, capsys, train, message):
    data_dir = tmp_path / "data"
    rc = main(["evaluate", "--preset", "tiny", "--data-dir", str(data_dir), "--models", "mean", "--n-folds", "2",
               "--train", train, "--out", str(tmp_path / "ev"), "--no-progress"])
    assert rc == 2
    line = _err_line(capsys)
    assert line.startswith("dango-nb evaluate: error: ") and message in line
    assert not data_dir.exists()  # refused before the benchmark was generated


@pytest.mark.parametrize("args, message", [
    (["--n-folds", "1"], "--n-folds: expected an integer from 2 to 1000, got 1"),
    (["--ensemble-top-k", "-1"], "--ensemble-top-k: expected an integer >= 1 or null, got -1"),
    (["--models", "dango_turbo"], "unknown model(s) ['dango_turbo']"),
    (["--epochs", "-3"], "TrainConfig.epochs: expected an integer from 1 to 100000, got -3"),
    (["--workers", "0"], "--workers: expected an integer from 1 to 4096, got 0"),
    (["--gpus-per-run", "-1"], "--gpus-per-run: expected a number from 0 to 64"),
    (["--address", "auto", "--inline"], "address needs backend 'ray'"),
])
def test_evaluate_options_checked_before_any_work(tmp_path, capsys, args, message):
    data_dir = tmp_path / "data"
    assert main(["evaluate", "--preset", "tiny", "--data-dir", str(data_dir), "--out", str(tmp_path / "ev"),
                 "--no-progress", *args]) == 2
    line = _err_line(capsys)
    assert line.startswith("dango-nb evaluate: error: ") and message in line
    assert not data_dir.exists()


def test_evaluate_unwritable_out(tmp_path, capsys, unwritable_dir):
    data_dir = tmp_path / "data"
    out = unwritable_dir / "ev"
    assert main(["evaluate", "--preset", "tiny", "--data-dir", str(data_dir), "--models", "mean",
                 "--out", str(out)]) == 2
    assert _err_line(capsys) == (f"dango-nb evaluate: error: {out}: cannot write in {unwritable_dir} (permission "
                                 "denied); give another folder as --out")
    assert not data_dir.exists()


def test_evaluate_needs_triplets(tmp_path, capsys):
    links = tmp_path / "links.txt"
    links.write_text("x")
    assert main(["evaluate", "--string", str(links), "--out", str(tmp_path / "ev")]) == 2
    assert _err_line(capsys) == ("dango-nb evaluate: error: evaluate needs triplets: give --preset, or --string "
                                 "together with --kuzmin")


def test_evaluate_keeps_its_dango_fits_as_run_folders(tmp_path, capsys):
    data_dir, out = tmp_path / "data", tmp_path / "ev"
    rc = main(["evaluate", "--preset", "tiny", "--data-dir", str(data_dir), "--splits", "random", "--folds", "0",
               "--models", "mean", "dango", "--epochs", "2", "--transition-epoch", "1", "--n-boot", "0",
               "--train", '{"model": {"hidden_channels": 8}}', "--out", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    from dango_nb.runs import RunFolder

    folder = RunFolder.open(out / "runs" / "random_fold0_seed0")
    assert folder.params["data"]["preset"] == "tiny" and folder.params["train"]["epochs"] == 2
    rc = main(["evaluate", "--preset", "tiny", "--data-dir", str(data_dir), "--splits", "random", "--folds", "0",
               "--models", "mean", "--n-boot", "0", "--out", str(tmp_path / "ev2"), "--no-progress", "--no-keep-runs",
               "--models", "dango", "--epochs", "2", "--transition-epoch", "1"])
    assert rc == 0, capsys.readouterr().err
    assert not (tmp_path / "ev2" / "runs").exists()
