"""Every command-line option of every ``dango-nb`` command and every run parameter key refuses
out-of-range, wrong-type and non-finite values the same way: exit 2, one line
``dango-nb <cmd>: error: ...`` naming the option or key, no traceback, nothing written, before any
work. Options and keys are found by introspection (the argparse parsers of ``build_parser()``, the
run parameter dataclasses and ``Dango``'s keyword arguments), so a new one is covered at once; a
value that is legitimately accepted is listed, with the reason, in an allow-list below.

Nothing here trains: the first step of real work (loading data, reading checkpoints, creating a
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
    "data.seed": (("0", HUGE), "any non-negative integer seeds the synthetic benchmark (numpy takes big ints)"),
    "data.data_dir": (("abc",), "a folder name; the benchmark is generated there"),
    "train.batch_size": ((HUGE,), "a batch larger than the data is the whole data, one step per epoch"),
    "train.lr": (("1.0e+30",), "any positive finite rate is a valid setting; a run that diverges stops with "
                               "TrainingDivergedError naming epoch and step"),
    "train.weight_decay": (("0", "1.0e+30"), "0 is the default; any finite decay is a valid setting (divergence "
                                             "guard as for lr)"),
    "train.lr_min": (("0",), "0 is the default floor"),
    "train.lr_patience": (("0", HUGE), "patience counts epochs: 0 reduces at once, a huge one never"),
    "train.transition_epoch": (("0",), "T = 0: no reconstruction-only epochs"),
    "train.grad_clip": (("1.0e+30",), "a clip norm no gradient reaches: clipping off in effect"),
    "train.divergence_factor": (("1.0e+30",), "a factor no loss reaches: the growth check off in effect"),
    "train.early_stopping_patience": ((HUGE,), "patience larger than the run: never stops early"),
    "train.seed": (("0",), "a seed"),
    "train.keep_top_k": (("0", HUGE), "0 keeps no top-k checkpoints, more than the epochs keeps all"),
    "train.checkpoint_dir": (("abc",), "replaced by the run folder's own checkpoints/ folder"),
    "train.model.beta_init": (("-1", "0", "1.0e+30"), "ReZero's initial residual weight: any finite value; "
                                                      "0 is the default"),
    "train.model.attention_dropout": (("0",), "no dropout (the default)"),
    "train.model.projection_dropout": (("0",), "no dropout (the default)"),
    "train.model.output_dropout": (("0",), "no dropout (the default)"),
    "train.model.feed_forward_dropout": (("0",), "no dropout (the default)"),
    "split.fold": (("0",), "fold 0"),
    "split.seed": (("0", HUGE), "any non-negative integer seeds the split (numpy takes big ints)"),
    "lambdas_file": ((), ""),
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
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert "Traceback" not in err, err
    assert lines, "nothing on stderr"
    errors = [ln for ln in lines if "error:" in ln]
    assert len(errors) == 1 and lines[-1] == errors[0], err  # argparse's usage may precede it
    assert errors[0].startswith(f"dango-nb {cmd}: error: "), err
    return errors[0]


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
    for value in BAD_ARGS:
        out = tmp_path / "out"
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
