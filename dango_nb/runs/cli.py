"""``dango-nb train``, ``dango-nb sweep``, ``dango-nb compare`` and the ``--run`` option of
``dango-nb predict``.

Registered in :mod:`dango_nb.__main__` through :data:`COMMANDS` (same shape as its own table);
nothing heavy is imported until a command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..argtypes import MAX_GPUS, MAX_PARALLEL, data_folder, int_in, number_in, ray_address

#: Most retries of a run whose worker died.
MAX_RETRIES = 100

__all__ = ["COMMANDS", "add_parsers", "add_predict_run_argument", "run_checkpoint_files", "expand_runs"]


def _parse_set(items) -> dict:
    """``--set KEY=VALUE`` items -> {key: value}, each value read as YAML (the same reader as files)."""
    import yaml

    from ..errors import UsageError, shown
    from ..fileio import load_yaml

    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set expects KEY=VALUE (e.g. train.epochs=5), got {shown(item)}")
        try:
            out[key] = load_yaml(value, f"--set {key}")
        except yaml.YAMLError as err:
            raise UsageError(f"--set {key}: not a YAML value: {shown(value)} "
                             f"({getattr(err, 'problem', None) or type(err).__name__})") from None
    return out


# ------------------------------------------------------------------------------------------ train
def _add_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("params", help="run parameter file (data, train, split, lambdas_file); e.g. params/tiny/train.yaml")
    p.add_argument("--out", required=True, help="run folder to create, e.g. runs/NAME (model, history.csv, run.json, checkpoints/, "
                   "tensorboard/: watch it train with `tensorboard --logdir runs/`)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a dotted key, e.g. --set train.epochs=5 (repeatable)")
    p.add_argument("--threads", type=int_in(1, MAX_PARALLEL), default=None, help="torch threads for the fit (default: torch's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _run_train(args) -> int:
    from .folder import train_run
    from .spec import load_run_params
    from .sweep import normalise_key

    overrides = {normalise_key(k, args.params, "--set", v): v for k, v in _parse_set(args.set).items()}
    params = load_run_params(args.params, overrides)
    record = train_run(params, args.out, progress=False if args.no_progress else None, threads=args.threads,
                       source=args.params)
    out = {"out": str(args.out), "skipped": record["skipped"], "best_epoch": record["best_epoch"],
           "fit_s": record["fit_s"], "device": record["device"]}
    for part in ("val", "test"):
        m = (record.get("metrics") or {}).get(part) or {}
        if m:
            out[f"{part}_pearson"] = m.get("pearson")
    print(json.dumps(out, allow_nan=False))
    return 0


# ------------------------------------------------------------------------------------------ sweep
def _add_sweep(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep", help="sweep file (base + axes), e.g. params/tiny/sweep.yaml")
    p.add_argument("--out", required=True, help="sweep folder, e.g. sweeps/NAME (runs under NAME/runs/; curves: "
                   "`tensorboard --logdir sweeps/NAME`)")
    p.add_argument("--address", type=ray_address, default=None,
                   help="Ray cluster: 'auto' (a cluster started with `ray start`) or ray://HOST:10001; "
                        "default: a local Ray started inside this command")
    p.add_argument("--workers", type=int_in(1, MAX_PARALLEL), default=None,
                   help="runs at the same time (default: CPUs // --cpus-per-run)")
    p.add_argument("--cpus-per-run", type=int_in(1, MAX_PARALLEL), default=1, help="CPUs (torch threads) per run (default 1)")
    p.add_argument("--gpus-per-run", type=number_in(0, MAX_GPUS), default=0.0,
                   help="GPUs per run; a fraction shares a GPU (0.25: four runs per GPU); default 0")
    p.add_argument("--max-retries", type=int_in(0, MAX_RETRIES), default=2, help="retries of a run whose worker process died")
    p.add_argument("--inline", action="store_true", help="run one after another in this process (no Ray)")
    p.add_argument("--dry-run", action="store_true", help="validate and list the runs, train nothing")
    p.add_argument("--no-progress", action="store_true")


def _run_sweep(args) -> int:
    from .executor import run_sweep
    from .folder import is_complete
    from .sweep import check_out, load_sweep

    sweep = load_sweep(args.sweep)
    check_out(sweep, args.out)
    if args.address is None:  # runs on this machine: its devices are the ones they get
        from ..errors import ParamsError
        from ._api import check_device

        for r in sweep.runs:
            try:
                check_device(r.params.train.device, r.params.train.precision)
            except ValueError as err:
                raise ParamsError(f"{args.sweep} (run {r.run_id}): {err}") from None
    if args.dry_run:
        for r in sweep.runs:
            done = is_complete(Path(args.out) / "runs" / r.run_id)
            print(f"{r.run_id}\t{'complete' if done else 'to run'}")
        print(json.dumps({"runs": len(sweep.runs), "axes": sweep.columns}))
        return 0
    try:
        result = run_sweep(sweep, args.out, workers=args.workers, address=args.address,
                           gpus_per_run=args.gpus_per_run, cpus_per_run=args.cpus_per_run,
                           max_retries=args.max_retries, backend="inline" if args.inline else "ray",
                           progress=not args.no_progress)
    except KeyboardInterrupt:
        print(f"interrupted: finished runs are kept in {args.out}/runs; run the same command again to "
              "continue", file=sys.stderr)
        return 130
    import pandas as pd

    cols = ["run_id", "status", "best_epoch", "val_pearson", "test_pearson", "fit_s"]
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.max_colwidth", 60):
        print(result.table[cols].to_string(index=False))
    for o in result.failed:
        print(f"FAILED {o.run_id}: {o.error}", file=sys.stderr)
    print(json.dumps({k: str(v) for k, v in result.paths.items()}))
    return 1 if result.failed else 0


# ---------------------------------------------------------------------------------------- compare
def _add_compare(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep_dir", help="a sweep folder, e.g. sweeps/NAME (its complete runs; the sweep may still run)")
    p.add_argument("--recipe", nargs="+", default=None, metavar="COLUMN",
                   help="columns that make a recipe (default: all sweep columns but train.seed and the split)")
    p.add_argument("--ensembles", action="store_true",
                   help="also score top-k x seeds ensembles of each recipe (a prediction pass per checkpoint)")
    p.add_argument("--top-k", type=int_in(1), default=None, help="checkpoints per run in those ensembles (default: all kept)")
    p.add_argument("--data-dir", type=data_folder, default=None,
                   help="data folder holding the runs' data (their preset benchmarks, their data files by name); "
                        "default: your data folder ($DANGO_DATA_DIR or the user cache). A folder or path a run "
                        "folder records is never used")



def _run_compare(args) -> int:
    import pandas as pd

    from ..fileio import check_made_by
    from .compare import compare_recipes, write_recipes
    from .executor import SWEEP_COMMAND

    sweep_dir = check_made_by(args.sweep_dir, SWEEP_COMMAND, "sweep folder")  # recipes.csv goes into a sweep's own folder only
    table = compare_recipes(sweep_dir, recipe=args.recipe, ensembles=args.ensembles, top_k=args.top_k,
                            data_dir=args.data_dir)
    path = write_recipes(table, sweep_dir)
    shown = ("split", "runs", "val_pearson", "val_pearson_sd", "test_pearson", "test_pearson_sd", "fraction_of_ceiling",
             "fraction_of_ceiling_sd", "best_additive", "margin_over_additive", "best_epoch", "ens_top_k_x_seeds")
    cols = list(table.attrs.get("recipe", [])) + [c for c in shown if c in table.columns]  # as in recipes.csv
    if table.attrs.get("synthetic"):
        print("SYNTHETIC benchmark: these numbers come from the embedded synthetic data, not the real screen")
    print(f"per split, best {table.attrs.get('metric', 'val_pearson')} first: choose a recipe on validation; "
          "the test columns are reported beside it, not for choosing")
    with pd.option_context("display.width", 220, "display.max_columns", 30, "display.precision", 4):
        print(table[cols].to_string(index=False))
    print(json.dumps({"recipes": str(path)}))
    return 0


# -------------------------------------------------------------------------------- predict --run
def _run_folder(text: str) -> Path:
    """argparse type of ``--run``: an existing folder (what it holds is checked by :func:`expand_runs`)."""
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{path}: run folder not found")
    return path


def add_predict_run_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", dest="runs", nargs="+", action="extend", default=None, metavar="FOLDER", type=_run_folder,
                   help="run folder(s) from `dango-nb train`, or a sweep folder (all its complete runs): each "
                        "run's reported model (checkpoints/best.pt; --top-k K: its K best kept checkpoints); "
                        "several = ensemble")


def expand_runs(paths) -> list[Path]:
    """Run folders for ``paths``: a run folder as is, a sweep folder as its complete runs."""
    from .folder import is_complete

    out: list[Path] = []
    for p in map(Path, paths):
        if is_complete(p):
            out.append(p)
        elif (p / "runs").is_dir():
            found = sorted(r for r in (p / "runs").iterdir() if r.is_dir() and is_complete(r))
            if not found:
                raise FileNotFoundError(f"{p}: sweep folder without complete runs")
            out.extend(found)
        elif p.is_dir():
            raise FileNotFoundError(f"{p}: not a complete run folder (no COMPLETE marker) nor a sweep folder")
        else:
            raise FileNotFoundError(f"{p}: run folder not found")
    return out


def run_checkpoint_files(runs, top_k: int | None = None) -> list[Path]:
    """Checkpoint files of the run folders (or sweep folders) ``runs``, for ``predict``: per run the
    model its ``run.json`` reports (``top_k`` ``None`` or 1), so that a run reproduces its own
    ``predictions.parquet``; with ``top_k`` K, that model then its other kept checkpoints, K in all
    (:meth:`~dango_nb.runs.folder.RunFolder.checkpoints`)."""
    from .folder import RunFolder

    return [f for r in expand_runs(runs) for f in RunFolder.open(r).checkpoints(1 if top_k is None else top_k)]


COMMANDS = {
    "train": (_add_train, _run_train, "train one model into a run folder"),
    "sweep": (_add_sweep, _run_sweep, "run a sweep file's grid of runs on Ray into a sweep folder"),
    "compare": (_add_compare, _run_compare, "compare a sweep's recipes (its complete runs) with the noise ceiling and the "
                                            "additive baselines of the same test parts"),
}


def add_parsers(subparsers) -> None:
    """Add ``train``, ``sweep`` and ``compare`` to an argparse subparsers object."""
    for name, (add, run, help_) in COMMANDS.items():
        p = subparsers.add_parser(name, help=help_, description=help_)
        add(p)
        p.set_defaults(_run=run)
