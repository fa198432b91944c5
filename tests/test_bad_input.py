"""Every command-line option of every ``dango-nb`` command and every run parameter key refuses
out-of-range, wrong-type and non-finite values the same way: exit 2, one line
``dango-nb <cmd>: error: ...`` naming the option or key, no traceback, nothing written, before any
work. Options and keys are found by introspection (the argparse parsers of ``build_parser()``, the
run parameter dataclasses and ``Dango``'s keyword arguments), so a new one is covered at once; a
value that is legitimately accepted is listed, with the reason, in an allow-list below.

Positional arguments (the parameter, sweep and sweep-folder paths) name files; reading them is
covered by the tests of their readers. Nothing here trains: the first step of real work (loading data, reading checkpoints, creating a
run folder, starting runs) is replaced by a sentinel, so an accepted value shows up as
:class:`WorkStarted`.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path

import pytest

from dango_nb.__main__ import build_parser, main
from dango_nb.fileio import write_owner

#: Command-line values tried on every option (as typed in a shell).
BAD_ARGS = ("-1", "0", "1e30", "1" + "0" * 30, "nan", "inf", "abc")
#: YAML values tried on every run parameter key (``--set key=value``).
BAD_VALUES = ("-1", "0", "1.0e+30", "1" + "0" * 30, ".nan", ".inf", "-.inf", "abc")

HUGE = "1" + "0" * 30
ANY = BAD_ARGS  # every tried value is accepted

#: (command, option) -> values accepted on purpose, with the reason.
ACCEPTED_ARGS: dict[tuple[str, str], tuple[tuple[str, ...], str]] = {
    ("predict", "--threshold"): (("-1", "0", "1e30", HUGE), "any finite prediction value is a valid cut-off"),
    ("predict", "--top-k"): ((HUGE,), "more checkpoints than a run kept means all of them"),
    ("predict", "--data-seed"): (("0",), "seed 0 is the default benchmark"),
    ("predict", "--data-dir"): (ANY, "a folder name (relative names are valid); the benchmark is generated there"),
    ("evaluate", "--data-seed"): (("0",), "seed 0 is the default benchmark"),
    ("evaluate", "--data-dir"): (ANY, "a folder name (relative names are valid); the benchmark is generated there"),
    ("compare", "--data-dir"): (ANY, "a folder name (relative names are valid); the runs' data are read or generated there"),
    ("evaluate", "--out"): (ANY, "a folder name (relative names are valid); created when the evaluation writes"),
    ("evaluate", "--folds"): (("0",), "fold 0 of the default 5"),
    ("evaluate", "--transition-epoch"): (("0",), "T = 0: no reconstruction-only epochs, a valid schedule"),
    ("evaluate", "--ensemble-top-k"): ((HUGE,), "more checkpoints than a run kept means all of them"),
    ("evaluate", "--n-boot"): (("0",), "0 bootstrap resamples: no confidence intervals"),
    ("evaluate", "--seed"): (("0",), "a seed"),
    ("evaluate", "--gpus-per-run"): (("0",), "no GPU per fit (the default)"),
    ("train", "--out"): (ANY, "a folder name (relative names are valid); the run folder to create"),
    ("sweep", "--out"): (ANY, "a folder name (relative names are valid); the sweep folder to create"),
    ("sweep", "--gpus-per-run"): (("0",), "no GPU per run (the default)"),
    ("sweep", "--max-retries"): (("0",), "no retry of a run whose worker died"),
    ("compare", "--recipe"): (ANY, "column names; compare checks them against the sweep's table it reads"),
    ("compare", "--top-k"): ((HUGE,), "more checkpoints than a run kept means all of them"),
}

#: run parameter key -> YAML values accepted on purpose, with the reason.
ACCEPTED_VALUES: dict[str, tuple[tuple[str, ...], str]] = {
    "data.seed": (("0",), "seed 0 is the default benchmark"),
    "data.data_dir": (("abc",), "a folder name; the benchmark is generated there"),
    "train.batch_size": ((HUGE,), "a batch larger than the data is the whole data, one step per epoch"),
    "train.lr": (("1.0e+30", HUGE), "any positive finite rate is a valid setting; a run that diverges stops with "
                               "TrainingDivergedError naming epoch and step"),
    "train.weight_decay": (("0", "1.0e+30", HUGE), "0 is the default; any finite decay is a valid setting (divergence "
                                             "guard as for lr)"),
    "train.lr_min": (("0",), "0 is the default floor"),
    "train.lr_warmup_epochs": (("0",), "0 is no warm-up"),
    "train.lr_patience": (("0", HUGE), "patience counts epochs: 0 reduces at once, a huge one never"),
    "train.transition_epoch": (("0",), "T = 0: no reconstruction-only epochs"),
    "train.grad_clip": (("1.0e+30", HUGE), "a clip norm no gradient reaches: clipping off in effect"),
    "train.divergence_factor": (("1.0e+30", HUGE), "a factor no loss reaches: the growth check off in effect"),
    "train.early_stopping_patience": ((HUGE,), "patience larger than the run: never stops early"),
    "train.seed": (("0",), "a seed"),
    "train.keep_top_k": (("0", HUGE), "0 keeps no top-k checkpoints, more than the epochs keeps all"),
    "train.model.beta_init": (("-1", "0", "1.0e+30", HUGE), "ReZero's initial residual weight: any finite value; "
                                                      "0 is the default"),
    "train.model.attention_dropout": (("0",), "no dropout (the default)"),
    "train.model.projection_dropout": (("0",), "no dropout (the default)"),
    "train.model.output_dropout": (("0",), "no dropout (the default)"),
    "train.model.feed_forward_dropout": (("0",), "no dropout (the default)"),
    "split.fold": (("0",), "fold 0"),
    "split.seed": (("0",), "a seed"),
}


_TINY = Path(__file__).resolve().parents[1].joinpath("params", "tiny", "train.yaml").read_text()


class WorkStarted(Exception):
    """Raised by the sentinels: the command got past every check to real work."""


@pytest.fixture
def no_work(monkeypatch, tmp_path):
    def start(*args, **kwargs):
        raise WorkStarted

    monkeypatch.setattr("dango_nb.__main__._load_source", start)  # predict / evaluate: data
    monkeypatch.setattr("dango_nb.eval.ensemble.checkpoint_files", start)  # predict: checkpoints
    monkeypatch.setattr("dango_nb.runs.folder.request_of", start)  # train: after its checks, before any folder
    monkeypatch.setattr("dango_nb.runs.executor.run_sweep", start)  # sweep
    monkeypatch.setattr("dango_nb.runs.compare.compare_recipes", start)  # compare
    monkeypatch.chdir(tmp_path)  # relative names land here


@pytest.fixture
def inputs(tmp_path):
    """Valid inputs of each command (files only need to exist: the sentinels stop before reading)."""
    d = tmp_path / "in"
    d.mkdir()
    (d / "ck.pt").write_bytes(b"x")
    (d / "genes.txt").write_text("YAL001C\n")
    (d / "train.yaml").write_text(_TINY)
    (d / "sweep.yaml").write_text("base: train.yaml\naxes:\n  train.seed: [0, 1]\n")
    write_owner(d, "dango-nb sweep", {})  # compare's SWEEP_DIR: a folder `dango-nb sweep` made
    return d


def _base(cmd: str, d: Path, out: Path) -> list[tuple[str | None, list[str]]]:
    """A valid command line as (option, values) pairs (``None``: positional)."""
    return {
        "predict": [("--checkpoint", [str(d / "ck.pt")]), ("--genes", [str(d / "genes.txt")]),
                    ("--out", [str(out / "p.tsv")]), ("--preset", ["tiny"])],
        "evaluate": [("--preset", ["tiny"]), ("--out", [str(out)])],
        "train": [(None, [str(d / "train.yaml")]), ("--out", [str(out)])],
        "sweep": [(None, [str(d / "sweep.yaml")]), ("--out", [str(out)])],
        "compare": [(None, [str(d)])],
    }[cmd]


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def _options() -> list[tuple[str, str]]:
    out = []
    for cmd, p in _subparsers().items():
        for a in p._actions:
            if a.option_strings and a.nargs != 0 and not isinstance(a, argparse._HelpAction):
                out.append((cmd, a.option_strings[0]))
    return out


def _conflicts(parser: argparse.ArgumentParser, option: str) -> set[str]:
    """Options in a mutually exclusive group with ``option`` (dropped from the base command line)."""
    out = set()
    for g in parser._mutually_exclusive_groups:
        names = {s for a in g._group_actions for s in a.option_strings}
        if option in names:
            out |= names - {option}
    return out


def _one_error_line(err: str, cmd: str) -> str:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"dango-nb {cmd}: error: "), err
    return lines[0]


def test_every_option_is_introspected():
    found = set(_options())
    # a sample of what the parsers must contain: if this fails the introspection is broken
    assert {("sweep", "--workers"), ("train", "--threads"), ("evaluate", "--n-folds"),
            ("predict", "--chunk-size"), ("compare", "--top-k")} <= found
    assert {c for c, _ in ACCEPTED_ARGS} <= {c for c, _ in found}
    assert set(ACCEPTED_ARGS) <= found, set(ACCEPTED_ARGS) - found  # no stale allow-list entry


@pytest.mark.parametrize("cmd,option", _options())
def test_every_option_refuses_bad_values(cmd, option, inputs, no_work, tmp_path, capsys):
    parser = _subparsers()[cmd]
    accepted, reason = ACCEPTED_ARGS.get((cmd, option), ((), ""))
    drop = _conflicts(parser, option) | {option}
    problems = []
    for i, value in enumerate(BAD_ARGS):
        out = tmp_path / f"out{i}"  # an accepted value may start owning its folder before the work is stopped
        argv = [cmd]
        for opt, values in _base(cmd, inputs, out):
            if opt is None:
                argv += values
            elif opt not in drop:
                argv += [opt, *values]
        argv += [option, value]
        before = sorted(p.name for p in tmp_path.iterdir())
        try:
            rc = main(argv)
        except WorkStarted:
            rc = "work"
        except SystemExit as exit_:  # pragma: no cover - main returns, never exits
            rc = f"SystemExit({exit_.code})"
        err = capsys.readouterr().err
        if value in accepted:
            if rc != "work":
                problems.append(f"{option} {value}: accepted on purpose ({reason}) but got {rc}: {err.strip()[-300:]}")
            continue
        if rc != 2:
            problems.append(f"{option} {value}: expected exit 2, got {rc}: {err.strip()[-300:]}")
            continue
        try:
            line = _one_error_line(err, cmd)
        except AssertionError as e:
            problems.append(f"{option} {value}: {e}")
            continue
        name = option.lstrip("-")
        if option not in line and name.replace("-", "_") not in line:
            problems.append(f"{option} {value}: message does not name the option: {line}")
        after = sorted(p.name for p in tmp_path.iterdir())
        if after != before:
            problems.append(f"{option} {value}: files written: {sorted(set(after) - set(before))}")
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------------------ run parameter keys
def _keys() -> list[str]:
    """Every key of a run parameter file: dataclass fields, Dango's keyword arguments under
    ``train.model``, one channel under ``lambdas``."""
    from dango_nb.models import Dango
    from dango_nb.runs.spec import RunParams

    def walk(cls, prefix: str) -> list[str]:
        out = []
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            inner = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
            if dataclasses.is_dataclass(tp) or inner:
                out += walk(tp if dataclasses.is_dataclass(tp) else inner[0], f"{prefix}{f.name}.")
            elif prefix == "train." and f.name == "model":
                out += [f"train.model.{k}" for k in Dango.hyperparameters()]
            elif f.name == "lambdas":
                out += ["lambdas", "lambdas.coexpression"]
            else:
                out.append(prefix + f.name)
        return out

    return walk(RunParams, "")


def test_every_key_is_introspected():
    keys = set(_keys())
    assert {"data.seed", "train.epochs", "train.model.hidden_channels", "split.fold", "lambdas.coexpression"} <= keys
    assert set(ACCEPTED_VALUES) <= keys, set(ACCEPTED_VALUES) - keys


@pytest.mark.parametrize("key", _keys())
def test_every_run_parameter_key_refuses_bad_values(key, inputs, no_work, tmp_path, capsys):
    accepted, reason = ACCEPTED_VALUES.get(key, ((), ""))
    problems = []
    for value in BAD_VALUES:
        out = tmp_path / "run"
        try:
            rc = main(["train", str(inputs / "train.yaml"), "--set", f"{key}={value}", "--out", str(out)])
        except WorkStarted:
            rc = "work"
        err = capsys.readouterr().err
        if value in accepted:
            if rc != "work":
                problems.append(f"{key}={value}: accepted on purpose ({reason}) but got {rc}: {err.strip()[-300:]}")
            continue
        if rc != 2:
            problems.append(f"{key}={value}: expected exit 2, got {rc}: {err.strip()[-300:]}")
            continue
        try:
            line = _one_error_line(err, "train")
        except AssertionError as e:
            problems.append(f"{key}={value}: {e}")
            continue
        if key.split(".")[-1] not in line:
            problems.append(f"{key}={value}: message does not name the key: {line}")
        if out.exists() or any(p.name.startswith(".run") for p in tmp_path.iterdir()):
            problems.append(f"{key}={value}: the run folder (or its partial folder) was created")
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------------------ specific inputs
# "billion laughs" as the items of one list: 9**8 = 43 million strings once expanded
_BOMB = "".join([
    "    - &a [" + ", ".join(['"lol"'] * 9) + "]\n",
    *(f"    - &{x} [" + ", ".join([f"*{p}"] * 9) + "]\n" for p, x in zip("abcdefg", "bcdefgh")),
])


def _limited(argv: list[str], tmp_path: Path, gib: float = 2.0):
    """Run the command line in a child process whose heap is capped at ``gib`` GiB."""
    import os
    import resource
    import subprocess
    import sys

    def cap():
        limit = int(gib * 2**30)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "dango_nb", *argv], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300, preexec_fn=cap)


def test_alias_bomb_in_run_and_sweep_files_fails_fast_in_bounded_memory(tmp_path):
    run = tmp_path / "bomb.yaml"
    run.write_text("data: {preset: tiny}\ntrain:\n  epochs:\n" + _BOMB)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("base: {data: {preset: tiny}}\naxes:\n  train.seed:\n" + _BOMB)
    # the error names the first value that expands beyond the limit: 9**6 values in list "f", line 9
    for argv, cmd, path in ((["train", str(run), "--out", str(tmp_path / "r")], "train", run),
                            (["sweep", str(sweep), "--out", str(tmp_path / "s"), "--dry-run"], "sweep", sweep)):
        proc = _limited(argv, tmp_path)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert proc.stderr.strip().splitlines() == [
            f"dango-nb {cmd}: error: {path}:9: aliases ('*name') expand this value to more than 100,000 values; "
            "write the values out or use fewer aliases"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.yaml", "sweep.yaml"]


def test_values_shown_in_messages_are_bounded(inputs, no_work, tmp_path, capsys):
    long = "[" + ", ".join(["1"] * 50_000) + "]"
    assert main(["train", str(inputs / "train.yaml"), "--set", f"train.epochs={long}", "--out",
                 str(tmp_path / "r")]) == 2
    line = _one_error_line(capsys.readouterr().err, "train")
    assert "key 'train.epochs': expected an integer, got list [1, 1, 1, 1, 1, 1, ...]" in line and len(line) < 400


@pytest.mark.parametrize("item, message", [
    ("lambdas_file=" + "a" * 120_000, "lambdas_file: path of 120000 bytes is too long"),
    ("train." + "a" * 120_000 + "=1", "unknown key 'train.aaaa"),
    ("lambdas." + "a" * 120_000 + "=1", "key 'lambdas.aaaa"),
])
def test_long_keys_and_file_names_are_shown_bounded(inputs, no_work, tmp_path, capsys, item, message):
    assert main(["train", str(inputs / "train.yaml"), "--out", str(tmp_path / "r"), "--set", item]) == 2
    line = _one_error_line(capsys.readouterr().err, "train")
    assert message in line and len(line) < 600, line[:1000]
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("sets, message", [
    (["x"], "--set expects KEY=VALUE (e.g. train.epochs=5), got 'x'"),
    (["train.epochs=[1"], "--set train.epochs: not a YAML value: '[1'"),
    (["train.epochs=1000000000"], "TrainConfig.epochs: expected an integer from 1 to 100000, got 1000000000"),
    (["train.epochs=3", "train.transition_epoch=3"],
     "TrainConfig.transition_epoch: schedule 'PreThenPost' with transition_epoch=3 gives the interaction loss "
     "weight 0 in all 3 epochs"),
    (["train.schedule=PaperTwoStage", "train.epochs=2", "train.transition_epoch=5"],
     "TrainConfig.transition_epoch: schedule 'PaperTwoStage' with transition_epoch=5"),
    (["lambdas={coexpresion: 1.0}"], "key 'lambdas.coexpresion': not a STRING channel; expected one of "
                                     "neighborhood, fusion, cooccurence, coexpression"),
    (["lambdas.coexpression=.inf"], "key 'lambdas.coexpression': expected a number > 0 and <= 1e+06, got inf"),
    (["lambdas.coexpression=inf"], "key 'lambdas.coexpression': expected a number, got str 'inf'"),
    (["split.n_folds=1"], "n_folds: expected an integer from 2 to"),
    (["split.name=bogus"], "key 'split.name': expected one of 'random', 'gene1', 'gene2', got str 'bogus'"),
    (["train.lr=1e309"], "TrainConfig.lr: expected a finite number > 0.0, got inf"),
    (["data=null"], "--set: key 'data' is a section; set its fields one by one (data.<field>, e.g. data.preset)"),
    (["train=5"], "--set: key 'train' is a section; set its fields one by one (train.<field>, e.g. train.epochs)"),
    ([".epochs=3"], "--set: key '.epochs' has an empty part; write dotted keys such as train.epochs"),
    (["split.fold=7"], "need n_folds >= 2 and 0 <= fold < n_folds, got fold=7, n_folds=5"),
    (["lambdas_file=missing.json"], "lambdas_file: 'missing.json': lambda file not found"),
    (["data.data_dir=/tmp/" + "d" * 300], "data_dir: a file or folder name of 300 bytes is longer than NAME_MAX (255)"),
    (["data.data_dir=" + "/d" * 2100], "data_dir: path of 4200 bytes is too long (4095 at most here, PATH_MAX 4096)"),
])
def test_run_parameters_refused_before_any_work(inputs, no_work, tmp_path, capsys, sets, message):
    out = tmp_path / "r"
    argv = ["train", str(inputs / "train.yaml"), "--out", str(out)]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 2
    line = _one_error_line(capsys.readouterr().err, "train")
    assert message in line, line
    assert not out.exists() and not (tmp_path / ".r.partial").exists()


def test_lambdas_missing_a_channel_of_the_data_are_refused_and_leave_nothing(inputs, tmp_path, capsys, monkeypatch):
    """The channels are known once the data load: the check runs then, before any folder is made."""
    def no_fit(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr("dango_nb.runs._api.fit", no_fit)
    out = tmp_path / "bad" / "q3"
    argv = ["train", str(inputs / "train.yaml"), "--out", str(out), "--set", "lambdas={coexpression: 0.5}",
            "--set", "train.epochs=2", "--set", f"data.data_dir={tmp_path / 'data'}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    line = [x for x in err.splitlines() if x.startswith("dango-nb train: error: ")]
    assert len(line) == 1, err
    assert ("key 'lambdas': no lambda for channel(s) neighborhood, fusion, cooccurence, experimental, database "
            "of the data; lambdas are given for: coexpression") in line[0]
    assert not out.parent.exists()  # no run folder, partial folder or lock file (nor their parent)


@pytest.mark.parametrize("cmd", ["evaluate", "compare", "train"])
def test_data_dir_that_is_a_file_is_refused_up_front(cmd, inputs, no_work, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "o"
    argv = [cmd] + [a for opt, values in _base(cmd, inputs, out) for a in ([opt] if opt else []) + values]
    argv += ["--set", "data.data_dir=afile"] if cmd == "train" else ["--data-dir", "afile"]
    if cmd == "evaluate":
        argv += ["--preset", "tiny"] if "--preset" not in argv else []
    assert main(argv) == 2
    line = _one_error_line(capsys.readouterr().err, cmd)
    assert ("data_dir: 'afile' exists and is not a folder" if cmd == "train"
            else "argument --data-dir: 'afile' exists and is not a folder") in line, line
    assert not out.exists()


@pytest.mark.parametrize("value", ["null", "~"])
def test_set_split_null_trains_on_all_triplets(value, inputs, no_work, tmp_path, monkeypatch):
    seen = []

    def start(params):
        seen.append(params.split)
        raise WorkStarted

    monkeypatch.setattr("dango_nb.runs.folder.request_of", start)
    with pytest.raises(WorkStarted):
        main(["train", str(inputs / "train.yaml"), "--out", str(tmp_path / "r"), "--set", f"split={value}"])
    assert seen == [None]


@pytest.mark.parametrize("argv, message", [
    (["--n-folds", "1"], "--n-folds: expected an integer from 2 to 1000, got 1"),
    (["--ensemble-seeds", "0"], "--ensemble-seeds: expected an integer from 1 to 1000, got 0"),
    (["--workers", "0"], "--workers: expected an integer from 1 to 4096, got 0"),
    (["--ensemble-top-k", "0"], "--ensemble-top-k: expected an integer >= 1"),
])
def test_evaluate_errors_name_the_option(argv, message, no_work, tmp_path, capsys):
    assert main(["evaluate", "--preset", "tiny", "--out", str(tmp_path / "e")] + argv) == 2
    line = _one_error_line(capsys.readouterr().err, "evaluate")
    assert line == f"dango-nb evaluate: error: {message}" or line.startswith(f"dango-nb evaluate: error: {message}")
    assert not (tmp_path / "e").exists()


def test_lambda_file_with_infinity_is_refused(tmp_path):
    from dango_nb.errors import ParamsError
    from dango_nb.params import load_lambdas

    path = tmp_path / "lambdas.json"
    path.write_text('{"lambdas": {"coexpression": Infinity, "fusion": 1.0}}')
    with pytest.raises(ParamsError, match=rf"^{path}: key 'lambdas.coexpression': expected a number > 0"):
        load_lambdas(path)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("sets, message", [
    (["train.device=cuda"], "TrainConfig.device: 'cuda' requested but CUDA is not available on this machine"),
    (["train.precision=bf16"], "TrainConfig.precision: 'bf16' needs a CUDA device, the run is on cpu"),
])
def test_device_and_precision_checked_against_the_machine(inputs, no_work, tmp_path, capsys, sets, message):
    out = tmp_path / "r"
    assert main(["train", str(inputs / "train.yaml"), "--out", str(out), "--set", *sets]) == 2
    assert message in _one_error_line(capsys.readouterr().err, "train")
    assert not out.exists()
    assert main(["evaluate", "--preset", "tiny", "--out", str(tmp_path / "ev"), "--train",
                 '{"%s": "%s"}' % tuple(sets[0].split(".", 1)[1].split("="))]) == 2
    assert message in _one_error_line(capsys.readouterr().err, "evaluate")
    assert not (tmp_path / "ev").exists()
    sweep = inputs / "dev.yaml"
    sweep.write_text("base: train.yaml\noverrides: {%s: %s}\naxes: {train.seed: [0, 1]}\n" % tuple(sets[0].split("=")))
    assert main(["sweep", str(sweep), "--out", str(tmp_path / "sw"), "--dry-run"]) == 2
    assert message in _one_error_line(capsys.readouterr().err, "sweep")
    assert not (tmp_path / "sw").exists()


def test_evaluate_refuses_a_schedule_that_never_trains_the_interaction_loss(no_work, tmp_path, capsys):
    assert main(["evaluate", "--preset", "tiny", "--out", str(tmp_path / "ev"), "--epochs", "3",
                 "--transition-epoch", "3"]) == 2
    line = _one_error_line(capsys.readouterr().err, "evaluate")
    assert ("TrainConfig.transition_epoch: schedule 'PreThenPost' with transition_epoch=3 gives the interaction "
            "loss weight 0 in all 3 epochs") in line
    assert not (tmp_path / "ev").exists()


def test_sweep_paths_beyond_the_file_system_limits_fail_the_dry_run(inputs, tmp_path, capsys):
    sweep = inputs / "long.yaml"
    sweep.write_text("base: train.yaml\naxes:\n  train.model.activation: [relu, " + "r" * 250 + "]\n")
    assert main(["sweep", str(sweep), "--out", str(tmp_path / "s"), "--dry-run"]) == 2
    line = _one_error_line(capsys.readouterr().err, "sweep")
    assert "its folder name is 261 bytes, more than the 246 a run folder may have (NAME_MAX 255" in line
    deep = tmp_path / "/".join(["d" * 200] * 20)
    assert main(["sweep", str(inputs / "sweep.yaml"), "--out", str(deep), "--dry-run"]) == 2
    line = _one_error_line(capsys.readouterr().err, "sweep")
    assert "--out" in line and "is too long" in line and "PATH_MAX 4096" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_notebook_params_refuse_a_schedule_that_never_trains_the_interaction_loss(tmp_path):
    import shutil

    import yaml

    from dango_nb.errors import ParamsError
    from dango_nb.params import load_param_dir

    root = Path(__file__).resolve().parents[1] / "params" / "tiny"
    for f in root.glob("0*.yaml"):
        shutil.copy(f, tmp_path / f.name)
    ev = tmp_path / "04_evaluation.yaml"
    raw = yaml.safe_load(ev.read_text())
    raw.setdefault("train", {}).update(epochs=3, transition_epoch=3, schedule="PreThenPost")
    ev.write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match=rf"^{ev}: .*TrainConfig.transition_epoch: schedule 'PreThenPost' with "
                                          r"transition_epoch=3 gives the interaction loss weight 0 in all 3 epochs"):
        load_param_dir(tmp_path)


@pytest.mark.parametrize("kw, name", [({"workers": 0}, "workers"), ({"cpus_per_run": 0}, "cpus_per_run"),
                                      ({"max_retries": -1}, "max_retries"), ({"gpus_per_run": -1.0}, "gpus_per_run"),
                                      ({"gpus_per_run": float("nan")}, "gpus_per_run")])
def test_run_many_refuses_counts_that_would_hang_before_anything_starts(kw, name):
    from dango_nb.runs.executor import run_many

    with pytest.raises(ValueError, match=rf"^{name} must be "):
        run_many([], backend="inline", progress=False, **kw)


# ------------------------------------------------------------------------------ notebook parameter keys
#: (notebook stem, key) -> YAML values accepted on purpose, with the reason.
ACCEPTED_NOTEBOOK_VALUES: dict[tuple[str, str], tuple[tuple[str, ...], str]] = {
    ("01_lambda_determination", "threshold_pct"): (("-1", "0", "1.0e+30", HUGE, ".inf", "-.inf"),
                                                   "a percentage threshold: below 0 every channel gets the low "
                                                   "lambda, above 100 (or inf) none does"),
    ("02_pretraining", "finetune_epochs"): (("0",), "0: no fine-tuning (the default)"),
    ("02_pretraining", "lambdas_file"): (("abc",), "a file name, read when the notebook runs"),
    ("03_loss_schedules", "transition_epoch"): (("0",), "T = 0: no reconstruction-only epochs"),
    ("03_loss_schedules", "lambdas_file"): (("abc",), "a file name, read when the notebook runs"),
    ("04_evaluation", "lambdas_file"): (("abc",), "a file name, read when the notebook runs"),
    ("04_evaluation", "evaluation.n_boot"): (("0",), "no bootstrap intervals"),
    ("04_evaluation", "evaluation.pretrain_epochs"): (("0",), "0: the default (transition_epoch, else 10)"),
    ("04_evaluation", "evaluation.ensemble_top_k"): ((HUGE,), "more checkpoints than a run kept means all"),
    ("04_evaluation", "evaluation.gpus_per_run"): (("0",), "no GPU per fit (the default)"),
}


def _notebook_keys() -> list[tuple[str, str]]:
    """Every key of the notebooks' schemas except ``data`` / ``train`` (the run keys above)."""
    from dango_nb.params import SCHEMAS

    out = []
    for stem, cls in SCHEMAS.items():
        for f in dataclasses.fields(cls):
            if f.name in ("data", "train"):
                continue
            if dataclasses.is_dataclass(typing.get_type_hints(cls)[f.name]):
                out += [(stem, f"{f.name}.{g.name}") for g in dataclasses.fields(typing.get_type_hints(cls)[f.name])]
            else:
                out.append((stem, f.name))
    return out


@pytest.mark.parametrize("stem,key", _notebook_keys())
def test_every_notebook_parameter_key_refuses_bad_values(stem, key, tmp_path):
    import yaml

    from dango_nb.errors import ParamsError
    from dango_nb.params import load_params

    base = yaml.safe_load(Path(__file__).resolve().parents[1].joinpath("params", "tiny", f"{stem}.yaml").read_text())
    accepted, reason = ACCEPTED_NOTEBOOK_VALUES.get((stem, key), ((), ""))
    problems = []
    for value in BAD_VALUES:
        raw = dict(base)
        head, _, tail = key.partition(".")
        if tail:
            raw[head] = {**(raw.get(head) or {}), tail: yaml.safe_load(value)}
        else:
            raw[head] = yaml.safe_load(value)
        path = tmp_path / f"{stem}.yaml"
        path.write_text(yaml.safe_dump(raw))
        try:
            load_params(path)
            outcome = None
        except ParamsError as err:
            outcome = str(err)
        if value in accepted:
            if outcome is not None:
                problems.append(f"{key}={value}: accepted on purpose ({reason}) but refused: {outcome}")
            continue
        if outcome is None:
            problems.append(f"{key}={value}: accepted")
        elif key.split(".")[-1] not in outcome or "\n" in outcome or not outcome.startswith(str(path)):
            problems.append(f"{key}={value}: message does not name file and key: {outcome}")
    assert not problems, "\n".join(problems)
