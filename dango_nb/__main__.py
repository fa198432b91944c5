"""Command line: ``dango-nb <command> ...`` (also ``python -m dango_nb``).

Commands are argparse subcommands registered in :data:`COMMANDS`; a module adds one with
``COMMANDS["name"] = (add_arguments, run, help)`` (``add_arguments(parser)``, ``run(args) -> int``).

- ``predict``: score triplets with one or more checkpoints (an ensemble when several).
- ``evaluate``: run :func:`dango_nb.eval.run_evaluation` on an embedded preset or real files.
- ``train`` / ``sweep``: run folders and Ray sweeps (:mod:`dango_nb.runs.cli`); ``predict --run``
  takes run or sweep folders.

Bad input exits with status 2 and one line ``dango-nb <command>: error: <message>`` on stderr, as
argparse does: option values are checked by argparse types (command-line only options) or by the
library's option classes (:class:`~dango_nb.train.TrainConfig`,
:class:`~dango_nb.eval.EvaluationOptions`) before any work; :func:`main` turns the package's
input errors (:data:`INPUT_ERRORS`) raised later into the same line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Callable

from dango_nb.argtypes import MAX_SEED, data_folder, finite_float, int_at_least, int_in, ray_address
from dango_nb.errors import (CheckpointError, DataFormatError, OutputFolderError, ParamsError, SourceMismatchError,
                             UnknownGenesError, UsageError)
from dango_nb.fileio import to_strict_json
from dango_nb.sources import own_source, source_options

warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch_geometric")

PROG = "dango-nb"
#: Most triplets scored per chunk / per forward pass (a chunk's tensors are allocated whole).
MAX_CHUNK = 100_000_000


#: Exceptions that mean bad input rather than a bug: reported as one line, exit status 2.
INPUT_ERRORS = (CheckpointError, DataFormatError, OutputFolderError, ParamsError, SourceMismatchError, UnknownGenesError,
                UsageError)


# ------------------------------------------------------------------------------ argparse types
def existing_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text}: no such file" if not path.exists() else f"{text}: not a file")
    return path


def existing_path(text: str) -> Path:
    """A file or a folder that exists."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such file or directory")
    return path


def json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON ({err}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"lr\": 0.002}}', got {text!r}")
    return value


def _check_writable(path: Path, folder: bool) -> Path:
    """``path`` (an output file, or a folder when ``folder``) can be created or replaced: its nearest
    existing ancestor takes a new file. Checked by writing, so read-only mounts count too."""
    if path.exists() and path.is_dir() != folder:
        raise argparse.ArgumentTypeError(f"{path}: exists and is {'a file' if folder else 'a directory'}")
    parent = path if folder else path.parent
    parent = parent if str(parent) else Path(".")
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"{path}: {parent} is not a directory")
    try:
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as err:
        raise argparse.ArgumentTypeError(f"{path}: cannot write in {parent} ({err.strerror.lower()})") from None
    return path


def output_table(text: str) -> Path:
    from dango_nb.fileio import check_table_suffix

    try:
        path = check_table_suffix(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return _check_writable(path, folder=False)


# ----------------------------------------------------------------------------------- data source
def _add_source_arguments(p: argparse.ArgumentParser, command: str) -> None:
    g = p.add_argument_group("data source (the cell graph" + (", and the triplets for evaluate)" if command ==
                                                              "evaluate" else "; the one the model was trained on)"))
    which = g.add_mutually_exclusive_group()
    which.add_argument("--preset", choices=("tiny", "small", "kuzmin"), help="embedded synthetic benchmark preset")
    which.add_argument("--string", type=existing_path, default=None,
                       help="STRING protein.links.detailed file or DANGO release folder")
    g.add_argument("--data-seed", type=int_in(0, MAX_SEED), default=None,
                   help="with --preset: seed of the synthetic benchmark (default 0)")
    g.add_argument("--data-dir", type=data_folder, default=None,
                   help="with --preset" + (" or --run" if command == "predict" else "") +
                        ": where the benchmark lives / is generated")
    g.add_argument("--kuzmin", type=existing_file, default=None,
                   help="with --string: Kuzmin et al. 2018 Data S1 table (the screened genes absent from STRING "
                        "are part of the cell graph)")


def _source_from_args(args) -> dict | None:
    """The data source the command line names, or ``None`` when it names none. ``predict --run``
    alone may take ``--data-dir``: where the run's preset benchmark lives (:func:`_predict_source`)."""
    runs = getattr(args, "runs", None)
    if args.preset is None and args.data_seed is not None:
        raise UsageError("--data-seed goes with --preset" if runs else "--data-seed and --data-dir go with --preset")
    if args.preset is None and args.data_dir is not None and (not runs or args.string is not None):
        raise UsageError("--data-dir goes with --preset or --run" if runs else
                         "--data-seed and --data-dir go with --preset")
    if args.string is None and args.kuzmin is not None:
        raise UsageError("--kuzmin goes with --string")
    if args.string is not None:
        return {"string": str(args.string), "kuzmin": None if args.kuzmin is None else str(args.kuzmin)}
    if args.preset is not None:
        return {"preset": args.preset, "seed": 0 if args.data_seed is None else args.data_seed,
                "data_dir": args.data_dir}
    return None


def _load_source(src: dict, genes: list[str] | None = None):
    """(cell_graph, study or None) for a source dict.

    A study's cell graph holds the STRING genes followed by screened genes absent from STRING, so
    rebuilding the graph a model was trained on needs the screen too (``--kuzmin``); ``--string``
    alone gives the STRING genes only (fine when every screened gene is in STRING).
    """
    if "preset" in src:
        from dango_nb.data.study import load_study

        study = load_study(preset=src["preset"], seed=int(src.get("seed", 0)), data_dir=src.get("data_dir"))
        return study.cell_graph, study
    if src.get("kuzmin"):
        from dango_nb.data.study import load_study_from_files

        study = load_study_from_files(src["string"], src["kuzmin"])
        return study.cell_graph, study
    from dango_nb.data.graph import build_cell_graph

    path = Path(src["string"])
    if path.is_dir():
        from dango_nb.data.string_db import read_dango_release

        networks = read_dango_release(path)
    else:
        from dango_nb.data.string_db import read_string_detailed

        networks = read_string_detailed(path)
    return build_cell_graph(networks, genes=genes), None


def _recorded(path) -> tuple[dict | None, list[str] | None]:
    """The data source and gene names a checkpoint recorded (``source``, ``genes`` entries); the file
    is verified like every checkpoint read (:func:`dango_nb.train.checkpoint.load_intact`)."""
    from dango_nb.train.checkpoint import load_intact

    ckpt, _ = load_intact([path])
    src, genes = ckpt.get("source"), ckpt.get("genes")
    return (dict(src) if isinstance(src, dict) else None), (list(genes) if genes is not None else None)


# --------------------------------------------------------------------------------------- predict
def _add_predict(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", "--checkpoints", dest="checkpoints", nargs="+", default=None, type=existing_path,
                   help="checkpoint file(s) or checkpoint directories (their top-k checkpoints); several = ensemble")
    from dango_nb.runs.cli import add_predict_run_argument

    add_predict_run_argument(p)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--genes", type=existing_file,
                      help="file with one gene name per line: score all C(n,3) triplets among them")
    what.add_argument("--triplets", type=existing_file,
                      help="table of triplets to score (gene1 gene2 gene3 per line, TSV/CSV/Parquet)")
    p.add_argument("--out", required=True, type=output_table,
                   help="output table, .parquet, .tsv or .csv (written atomically)")
    p.add_argument("--threshold", type=finite_float, default=None,
                   help="keep predictions <= THRESHOLD (e.g. -0.05 for strong negative); "
                        "default: keep all for --triplets, -0.05 for --genes")
    p.add_argument("--keep", choices=("below", "above"), default="below",
                   help="which side of the threshold to keep (default below)")
    p.add_argument("--all", action="store_true", help="with --genes: keep every triplet (no threshold)")
    p.add_argument("--top-k", type=int_at_least(1), default=None,
                   help="checkpoints per run, best first (--run: default 1, the model run.json reports; "
                        "--checkpoint DIR: default all kept)")
    p.add_argument("--chunk-size", type=int_in(1, MAX_CHUNK), default=200_000,
                   help="triplets scored per chunk (memory bound)")
    p.add_argument("--batch-size", type=int_in(1, MAX_CHUNK), default=4096, help="triplets per model forward pass")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_source_arguments(p, "predict")


def _predict_source(args, files: list[Path]) -> tuple[dict, list[tuple[Path, dict | None, list | None]]]:
    """The source the command line names and what each checkpoint recorded.

    A checkpoint's record is never followed by itself: it could name any folder or file (a
    checkpoint may come from someone else), so without ``--preset``/``--string`` the command stops
    and shows the options that name the recorded source. The one exception is ``--run`` on a run
    trained on an embedded preset: only the preset name and seed are taken, and the benchmark is
    read from (or generated in) ``--data-dir`` or else the user's own data folder, never a recorded
    path (:func:`dango_nb.sources.own_source`, as ``compare`` does; a run that recorded a data
    folder of its own needs ``--data-dir``).
    """
    records = [(f, *_recorded(f)) for f in files]
    src = _source_from_args(args)
    if src is None and args.runs:
        rec = records[0][1]
        src = (own_source(rec, args.data_dir) if isinstance(rec, dict) and isinstance(rec.get("preset"), str)
               else None)
        if src is not None:
            where = f" in --data-dir {args.data_dir}" if args.data_dir is not None else ""
            print(f"{PROG} predict: using the run's synthetic preset{where}: {source_options(rec)}", file=sys.stderr)
    if src is None:
        named = source_options(records[0][1])
        if named is None:
            raise UsageError("no data source: give --preset (synthetic benchmark) or --string FILE "
                             "(the checkpoint does not record where its cell graph came from)")
        raise UsageError(f"no data source given; {records[0][0]} records it was trained on {named}: pass these "
                         "options to use that source (predict reads or generates data only where the command "
                         "line says)")
    return src, records


def _check_genes(cell_graph, records) -> None:
    """Every checkpoint's recorded gene names, in order, are the cell graph's."""
    node_ids = [str(g) for g in cell_graph["gene"].node_ids]
    for path, recorded, genes in records:
        if genes is not None and [str(g) for g in genes] != node_ids:
            diff = sorted(set(map(str, genes)) ^ set(node_ids))[:5]
            hint = source_options(recorded)
            raise SourceMismatchError(
                f"{path}: the checkpoint was trained on {len(genes)} genes, the data source gives "
                f"{len(node_ids)} genes in another order or set (e.g. {diff}); give the data the model was "
                "trained on" + (f" (the checkpoint records {hint})" if hint else ""))


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one file (through symbolic links, hard links, ``..``)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one does not exist (yet): compare where it would be
        return Path(a).resolve() == Path(b).resolve()


def _refuse_output_over_input(out: Path, inputs: list[tuple[str, Path]]) -> None:
    """Writing the output over one of the command's inputs would destroy it."""
    for option, path in inputs:
        if path is not None and _same_file(out, path):
            raise UsageError(f"--out {out} is the same file as {option} {path}; write the predictions to another "
                             "file")


def _refuse_output_in_folders(out: Path, folders: list[tuple[str, Path]]) -> None:
    """Writing the output inside a run, sweep or checkpoint folder could replace one of its files."""
    where = Path(os.path.realpath(out))
    for option, folder in folders:
        if where.is_relative_to(os.path.realpath(folder)):
            raise UsageError(f"--out {out} is inside the {option} folder {folder}; write the predictions outside it")


def _distinct_members(files: list[Path]) -> list[Path]:
    """Each checkpoint file once (a run given twice, or its ``best.pt`` also given by
    ``--checkpoint``, would weigh that model twice in the ensemble); the repeats are named."""
    kept: list[Path] = []
    for f in files:
        first = next((k for k in kept if _same_file(f, k)), None)
        if first is None:
            kept.append(f)
        else:
            same = "" if str(f) == str(first) else f" (the same file as {first})"
            print(f"{PROG} predict: {f}{same} is given twice; counted once in the ensemble", file=sys.stderr)
    return kept


def _run_predict(args) -> int:
    import numpy as np

    from dango_nb.eval import prediction as P
    from dango_nb.eval.ensemble import EnsembleScorer, checkpoint_files

    if not args.checkpoints and not args.runs:
        raise UsageError("give --run FOLDER (a run or sweep folder) or --checkpoint FILE")
    runs = []
    if args.runs:
        from dango_nb.runs.cli import expand_runs

        runs = [*args.runs, *expand_runs(args.runs)]  # a sweep's runs may be links to folders elsewhere
    _refuse_output_in_folders(args.out, [*(("--run", r) for r in runs),
                                         *(("--checkpoint", c if c.is_dir() else c.parent)
                                           for c in args.checkpoints or [])])
    files = checkpoint_files(args.checkpoints, args.top_k) if args.checkpoints else []
    if args.runs:
        from dango_nb.runs.cli import run_checkpoint_files

        files += run_checkpoint_files(args.runs, args.top_k)
    files = _distinct_members(files)
    _refuse_output_over_input(args.out, [("--triplets", args.triplets), ("--genes", args.genes),
                                         ("--string", args.string), ("--kuzmin", args.kuzmin),
                                         *(("a checkpoint", f) for f in files)])
    # the inputs are read before any data: a bad file fails in a second
    triplets = P.read_triplet_list(args.triplets) if args.triplets else None
    gene_list = None if args.triplets else P.read_gene_list(args.genes)
    src, records = _predict_source(args, files)
    cell_graph, _ = _load_source(src)
    _check_genes(cell_graph, records)
    scorer = EnsembleScorer.from_checkpoints(files, cell_graph, batch_size=args.batch_size)
    progress = not args.no_progress
    if args.triplets:
        table = P.score_triplets(scorer, triplets, batch_size=args.chunk_size,
                                 progress=progress)
        if args.threshold is not None and not args.all:
            keep = table["prediction"] <= args.threshold if args.keep == "below" else table["prediction"] >= args.threshold
            table = table[keep.to_numpy()]
        n_scored = None
    else:
        threshold = None if args.all else (P.STRONG_THRESHOLD if args.threshold is None else args.threshold)
        table = P.score_all_triplets(scorer, gene_list, threshold=threshold, keep=args.keep,
                                     chunk_size=args.chunk_size, progress=progress)
        n_scored = table.attrs["n_scored"]
    P.write_predictions(table, args.out)
    msg = {"out": str(args.out), "rows": int(len(table)), "members": len(scorer.members)}
    if n_scored is not None:
        msg["scored"] = int(n_scored)
    if len(table):
        msg["prediction_min"] = float(np.min(table["prediction"]))
    print(json.dumps(to_strict_json(msg), allow_nan=False))
    return 0


# -------------------------------------------------------------------------------------- evaluate
def _add_evaluate(p: argparse.ArgumentParser) -> None:
    from dango_nb.eval.options import EvaluationOptions
    from dango_nb.eval.registry import model_names

    # Values are validated by EvaluationOptions / TrainConfig (one definition each), not here.
    d = EvaluationOptions()
    _add_source_arguments(p, "evaluate")
    p.add_argument("--splits", nargs="+", default=d.splits)
    p.add_argument("--models", nargs="+", default=d.models, metavar="MODEL",
                   help=f"registered model names (default: {' '.join(d.models)}); known: {', '.join(model_names())}")
    p.add_argument("--n-folds", type=int, default=d.n_folds)
    p.add_argument("--folds", type=int, nargs="+", default=d.folds, help="which folds to run (default all)")
    p.add_argument("--epochs", type=int, default=None, help="TrainConfig.epochs")
    p.add_argument("--transition-epoch", type=int, default=None, help="TrainConfig.transition_epoch")
    p.add_argument("--train", type=json_object, default=None,
                   help="JSON object of further TrainConfig fields, e.g. '{\"lr\": 0.002}'")
    p.add_argument("--lambdas", type=existing_file, default=None,
                   help="lambdas JSON file (from the lambda notebook); default: determined from the study's "
                        "STRING v9.1 and v11.0 releases when both are known (the synthetic benchmark)")
    p.add_argument("--ensemble-seeds", type=int, default=d.ensemble_seeds)
    p.add_argument("--ensemble-top-k", type=int, default=d.ensemble_top_k)
    p.add_argument("--n-boot", type=int, default=d.n_boot)
    p.add_argument("--seed", type=int_in(0, MAX_SEED), default=0)
    p.add_argument("--workers", type=int, default=d.workers,
                   help="DANGO fits at the same time (more than 1: on a local Ray; default 1, in this process)")
    p.add_argument("--address", type=ray_address, default=d.address, help="Ray cluster address (auto, ray://HOST:10001)")
    p.add_argument("--gpus-per-run", type=float, default=d.gpus_per_run, help="GPUs per fit on Ray (0.25: four share one)")
    p.add_argument("--cpus-per-run", type=int, default=d.cpus_per_run, help="CPUs (torch threads) per fit on Ray")
    p.add_argument("--inline", action="store_true", help="fit one after another in this process (no Ray)")
    p.add_argument("--no-keep-runs", action="store_true", help="do not keep the DANGO fits as run folders in OUT/runs")
    p.add_argument("--out", type=Path, required=True,  # checked by fileio.check_output_folder, as for every command
                   help="output folder, e.g. evaluations/NAME: new, empty, or an earlier `evaluate --out` with the "
                        "same parameters (its complete DANGO run folders are reused)")
    p.add_argument("--no-progress", action="store_true")


def lambdas_for_study(study) -> dict[str, float]:
    """Lambdas determined (:func:`dango_nb.lambdas.determine_lambdas`) from the study's STRING v9.1
    and v11.0 releases."""
    from dango_nb.lambdas import determine_lambdas

    try:
        later = study.read_release("11.0")
    except KeyError as err:
        raise UsageError(f"{err.args[0]}; give --lambdas FILE") from None
    return determine_lambdas(study.read_release(study.networks.version), later).lambdas


def _train_config(args):
    """TrainConfig from ``--train`` and ``--epochs``/``--transition-epoch``, validated as a params file's
    ``train:`` mapping is (unknown keys and wrong types are ParamsErrors naming the key)."""
    from dango_nb.params import params_from_mapping
    from dango_nb.train import TrainConfig

    fields = dict(args.train or {})
    if args.epochs is not None:
        fields["epochs"] = args.epochs
    if args.transition_epoch is not None:
        fields["transition_epoch"] = args.transition_epoch
    fields.setdefault("progress", False)
    return params_from_mapping(fields, TrainConfig, source="--train/--epochs/--transition-epoch")


def _data_params(src: dict):
    """The :class:`~dango_nb.params.DataParams` of a command-line source (what run folders record)."""
    from dango_nb.params import DataParams

    if "preset" in src:
        return DataParams(preset=src["preset"], seed=int(src.get("seed", 0)), data_dir=src.get("data_dir"))
    string = Path(src["string"]).resolve()
    return DataParams(string_file=None if string.is_dir() else str(string),
                      dango_folder=str(string) if string.is_dir() else None, kuzmin_file=str(Path(src["kuzmin"]).resolve()))


EVALUATE_COMMAND = f"{PROG} evaluate"
# EvaluationOptions fields that say where and how the fits run, not what they compute.
_EXECUTION_OPTIONS = ("workers", "address", "gpus_per_run", "cpus_per_run", "backend", "keep_runs")


def _evaluation_request(config, options, src: dict, seed: int, lambdas) -> dict:
    """What an evaluation folder's numbers depend on (recorded in its ``owner.json``; a rerun into the
    folder must match it)."""
    import dataclasses

    train = dataclasses.asdict(config)
    train.pop("progress", None)
    opts = {k: v for k, v in dataclasses.asdict(options).items() if k not in _EXECUTION_OPTIONS}
    return to_strict_json({"data": dataclasses.asdict(_data_params(src)), "train": train, "evaluation": opts,
                           "seed": seed, "lambdas": lambdas})


#: EvaluationOptions fields whose command-line option is not ``--<field with dashes>``.
_EVALUATE_OPTIONS = {"backend": "--inline", "keep_runs": "--no-keep-runs"}


def _option_named(message: str) -> str:
    """An :class:`EvaluationOptions` message ``"<field>: ..."`` as the user typed it: ``"--<option>: ..."``."""
    import dataclasses

    from dango_nb.eval.options import EvaluationOptions

    field, sep, rest = message.partition(": ")
    if not sep or field not in {f.name for f in dataclasses.fields(EvaluationOptions)}:
        return message
    return f"{_EVALUATE_OPTIONS.get(field, '--' + field.replace('_', '-'))}: {rest}"


def _run_evaluate(args) -> int:
    from dango_nb import eval as evaluation

    # everything that can be checked without data first: a bad option fails in a second, not after loading
    config = _train_config(args)
    try:
        options = evaluation.EvaluationOptions(splits=args.splits, models=args.models, n_folds=args.n_folds,
                                               folds=args.folds, ensemble_seeds=args.ensemble_seeds,
                                               ensemble_top_k=args.ensemble_top_k, n_boot=args.n_boot,
                                               workers=args.workers, address=args.address,
                                               gpus_per_run=args.gpus_per_run, cpus_per_run=args.cpus_per_run,
                                               backend="inline" if args.inline else "ray",
                                               keep_runs=not args.no_keep_runs)
    except ParamsError as err:
        raise UsageError(_option_named(str(err))) from None
    try:
        options.check_config(config)
        from dango_nb.train.device import check_device

        check_device(config.device, config.precision)
    except ValueError as err:
        raise UsageError(f"--epochs/--transition-epoch/--train: {err}") from None
    src = _source_from_args(args)
    if src is None or ("string" in src and src["kuzmin"] is None):
        raise UsageError("evaluate needs triplets: give --preset, or --string together with --kuzmin")
    lambdas = None
    if args.lambdas:
        from dango_nb.params import load_lambdas

        lambdas = load_lambdas(args.lambdas)
    from dango_nb.fileio import owned_output_folder

    request = _evaluation_request(config, options, src, args.seed, lambdas)
    with owned_output_folder(args.out, EVALUATE_COMMAND, request) as out_dir:  # its real path
        _, study = _load_source(src)
        if lambdas is None:
            lambdas = lambdas_for_study(study)
        result = evaluation.run_evaluation(study, options, config=config, lambdas=lambdas, seed=args.seed,
                                           out_dir=out_dir, progress=not args.no_progress, data=_data_params(src))
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", 50):
        if result.synthetic:
            print("[synthetic benchmark]")
        print(evaluation.summary_table(result, ("pearson", "spearman", "auroc", "auprc")).to_string())
    print(json.dumps({k: str(v) for k, v in result.paths.items()}))
    return 0


COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int], str]] = {
    "predict": (_add_predict, _run_predict, "score triplets with trained checkpoints"),
    "evaluate": (_add_evaluate, _run_evaluate, "models x splits x folds evaluation table"),
}


def _register_run_commands() -> None:
    from dango_nb.runs.cli import COMMANDS as RUN_COMMANDS

    COMMANDS.update(RUN_COMMANDS)


_register_run_commands()


class _Parser(argparse.ArgumentParser):
    """argparse with the package's error style: the one line ``<prog>: error: <message>`` and exit
    status 2, without the usage block above it (``--help`` shows the usage)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="dango_nb command line")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add, run, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        add(p)
        p.set_defaults(_run=run)
    return parser


def _named_paths(args) -> list[Path]:
    """Paths the command line names (so a missing or unwritable one is the user's input, not a bug)."""
    out = []
    for value in vars(args).values():
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, Path):
                out.append(v)
    return out


def _input_error_message(err: BaseException, args) -> str | None:
    """One-line message for bad input, ``None`` for anything else (a bug: keep its traceback)."""
    if isinstance(err, INPUT_ERRORS):
        return str(err)
    if isinstance(err, (FileNotFoundError, PermissionError)):
        if err.filename is None:  # raised by the package with its own message
            return str(err)
        failed = Path(os.fspath(err.filename)).absolute()
        for named in _named_paths(args):
            named = named.absolute()
            if failed == named or named in failed.parents:
                return f"{err.filename}: {err.strerror.lower() if err.strerror else err}"
    return None


def main(argv: list[str] | None = None) -> int:
    """Run a command; returns the exit status (2 for bad input, with one line on stderr)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # argparse has printed usage and the error (or --help)
        return 0 if exit_.code is None else exit_.code if isinstance(exit_.code, int) else 2
    try:
        return int(args._run(args) or 0)
    except Exception as err:
        msg = _input_error_message(err, args)
        if msg is None:
            raise
        print(f"{PROG} {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
