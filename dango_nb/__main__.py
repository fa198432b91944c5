"""Command line: ``python -m dango_nb <command> ...`` (also installed as ``dango-nb``).

Commands are argparse subcommands registered in :data:`COMMANDS`; a module adds one with
``COMMANDS["name"] = (add_arguments, run, help)`` (``add_arguments(parser)``, ``run(args) -> int``).

- ``predict``: score triplets with one or more checkpoints (an ensemble when several).
- ``evaluate``: run :func:`dango_nb.evaluation.run_evaluation` on an embedded preset or real files.
- ``train`` / ``sweep``: run folders and Ray sweeps (:mod:`dango_nb.runs.cli`); ``predict --run``
  takes run or sweep folders.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Callable

warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch_geometric")


# ----------------------------------------------------------------------------------- data source
def _add_source_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data source (the cell graph; for `predict` default: what the checkpoint recorded)")
    g.add_argument("--preset", choices=("tiny", "small", "kuzmin"), help="embedded synthetic benchmark preset")
    g.add_argument("--data-seed", type=int, default=None, help="seed of the synthetic benchmark (default 0)")
    g.add_argument("--data-dir", default=None, help="where the benchmark lives / is generated")
    g.add_argument("--string", default=None, help="STRING protein.links.detailed file or DANGO release folder")
    g.add_argument("--kuzmin", default=None, help="Kuzmin et al. 2018 Data S1 table (evaluate only)")


def _source_from_args(args, recorded: dict | None = None) -> dict:
    """The data source as a dict: command-line options first, else what a checkpoint recorded."""
    if args.string or args.preset:
        if args.string and args.preset:
            raise SystemExit("error: give --preset or --string, not both")
        if args.string:
            return {"string": args.string, "kuzmin": getattr(args, "kuzmin", None)}
        return {"preset": args.preset, "seed": 0 if args.data_seed is None else args.data_seed,
                "data_dir": args.data_dir}
    if recorded:
        src = dict(recorded)
        if args.data_dir is not None:
            src["data_dir"] = args.data_dir
        return src
    raise SystemExit("error: no data source: give --preset (synthetic benchmark) or --string FILE "
                     "(the checkpoint does not record where its cell graph came from)")


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
    """The data source and gene names a checkpoint recorded (``source``, ``genes`` entries)."""
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - load_checkpoint reports unreadable files properly later
        return None, None
    if not isinstance(ckpt, dict):
        return None, None
    src, genes = ckpt.get("source"), ckpt.get("genes")
    return (dict(src) if isinstance(src, dict) else None), (list(genes) if genes is not None else None)


# --------------------------------------------------------------------------------------- predict
def _add_predict(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", "--checkpoints", dest="checkpoints", nargs="+", default=None,
                   help="checkpoint file(s) or checkpoint directories (their top-k checkpoints); several = ensemble")
    from dango_nb.runs.cli import add_predict_run_argument

    add_predict_run_argument(p)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--genes", help="file with one gene name per line: score all C(n,3) triplets among them")
    what.add_argument("--triplets", help="table of triplets to score (gene1 gene2 gene3 per line, TSV/CSV/Parquet)")
    p.add_argument("--out", required=True, help="output table, .parquet or .tsv (written atomically)")
    p.add_argument("--threshold", type=float, default=None,
                   help="keep predictions <= THRESHOLD (e.g. -0.05 for strong negative); "
                        "default: keep all for --triplets, -0.05 for --genes")
    p.add_argument("--keep", choices=("below", "above"), default="below",
                   help="which side of the threshold to keep (default below)")
    p.add_argument("--all", action="store_true", help="with --genes: keep every triplet (no threshold)")
    p.add_argument("--top-k", type=int, default=None, help="checkpoints per run directory (default: all kept)")
    p.add_argument("--chunk-size", type=int, default=200_000, help="triplets scored per chunk (memory bound)")
    p.add_argument("--batch-size", type=int, default=4096, help="triplets per model forward pass")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_source_arguments(p)


def _run_predict(args) -> int:
    import numpy as np

    from dango_nb import predict as P
    from dango_nb.ensemble import EnsembleScorer, checkpoint_files

    paths = list(args.checkpoints or [])
    if args.runs:
        from dango_nb.runs.cli import run_checkpoint_paths

        paths += run_checkpoint_paths(args.runs)
    if not paths:
        raise SystemExit("error: give --run FOLDER (a run or sweep folder) or --checkpoint FILE")
    files = checkpoint_files(paths, args.top_k)
    recorded, genes = _recorded(files[0])
    cell_graph, _ = _load_source(_source_from_args(args, recorded))
    if genes is not None and list(cell_graph["gene"].node_ids) != genes:
        node_ids = list(cell_graph["gene"].node_ids)
        diff = sorted(set(genes) ^ set(node_ids))[:5]
        raise SystemExit(f"error: {files[0]}: the checkpoint was trained on {len(genes)} genes, the data "
                         f"source gives {len(node_ids)} genes in another order or set (e.g. {diff}); "
                         "give the data the model was trained on")
    scorer = EnsembleScorer.from_checkpoints(files, cell_graph, batch_size=args.batch_size)
    progress = not args.no_progress
    if args.triplets:
        table = P.score_triplets(scorer, P.read_triplet_list(args.triplets), batch_size=args.chunk_size,
                                 progress=progress)
        if args.threshold is not None and not args.all:
            keep = table["prediction"] <= args.threshold if args.keep == "below" else table["prediction"] >= args.threshold
            table = table[keep.to_numpy()]
        n_scored = None
    else:
        threshold = None if args.all else (P.STRONG_THRESHOLD if args.threshold is None else args.threshold)
        gene_list = P.read_gene_list(args.genes)
        table = P.score_all_triplets(scorer, gene_list, threshold=threshold, keep=args.keep,
                                     chunk_size=args.chunk_size, progress=progress)
        n_scored = table.attrs["n_scored"]
    P.write_predictions(table, args.out)
    msg = {"out": str(args.out), "rows": int(len(table)), "members": len(scorer.members)}
    if n_scored is not None:
        msg["scored"] = int(n_scored)
    if len(table):
        msg["prediction_min"] = float(np.min(table["prediction"]))
    print(json.dumps(msg))
    return 0


# -------------------------------------------------------------------------------------- evaluate
def _add_evaluate(p: argparse.ArgumentParser) -> None:
    _add_source_arguments(p)
    p.add_argument("--splits", nargs="+", default=["random", "gene1", "gene2"])
    p.add_argument("--models", nargs="+", default=None, help="model names (default: dango, dango_ensemble and the baselines)")
    p.add_argument("--n-folds", type=int, default=5)
    p.add_argument("--folds", type=int, nargs="+", default=None, help="which folds to run (default all)")
    p.add_argument("--epochs", type=int, default=None, help="TrainConfig.epochs")
    p.add_argument("--transition-epoch", type=int, default=None, help="TrainConfig.transition_epoch")
    p.add_argument("--train", default=None, help="JSON object of further TrainConfig fields, e.g. '{\"lr\": 0.002}'")
    p.add_argument("--lambdas", default=None,
                   help="lambdas JSON file (from the lambda notebook); default: determined from the study's "
                        "STRING v9.1 and v11.0 releases when both are known (the synthetic benchmark)")
    p.add_argument("--ensemble-seeds", type=int, default=3)
    p.add_argument("--ensemble-top-k", type=int, default=None)
    p.add_argument("--n-boot", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="reports/evaluation", help="output folder")
    p.add_argument("--no-progress", action="store_true")


def lambdas_for_study(study) -> dict[str, float]:
    """Lambdas determined (issue 3 rule) from the study's STRING v9.1 and v11.0 releases."""
    from dango_nb.lambdas import determine_lambdas

    try:
        later = study.read_release("11.0")
    except KeyError as err:
        raise SystemExit(f"error: {err.args[0]}; give --lambdas FILE") from None
    return determine_lambdas(study.read_release(study.networks.version), later).lambdas


def _run_evaluate(args) -> int:
    from dango_nb import evaluation
    from dango_nb.training import TrainConfig

    src = _source_from_args(args)
    _, study = _load_source(src)
    if study is None:
        raise SystemExit("error: evaluate needs triplets: give --preset, or --string together with --kuzmin")
    fields = json.loads(args.train) if args.train else {}
    if args.epochs is not None:
        fields["epochs"] = args.epochs
    if args.transition_epoch is not None:
        fields["transition_epoch"] = args.transition_epoch
    fields.setdefault("progress", False)
    config = TrainConfig(**fields)
    if args.lambdas:
        from dango_nb.params import load_lambdas

        lambdas = load_lambdas(args.lambdas)
    else:
        lambdas = lambdas_for_study(study)
    result = evaluation.run_evaluation(
        study, splits=args.splits, models=args.models or evaluation.DEFAULT_MODELS, n_folds=args.n_folds,
        folds=args.folds, config=config, lambdas=lambdas, seed=args.seed, ensemble_seeds=args.ensemble_seeds,
        ensemble_top_k=args.ensemble_top_k, n_boot=args.n_boot, out_dir=args.out, progress=not args.no_progress)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dango_nb", description="dango_nb command line")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add, run, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        add(p)
        p.set_defaults(_run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (KeyError, ValueError, FileNotFoundError) as err:
        # Bad input (unknown genes, malformed files): one clear line, no traceback.
        msg = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        print(f"error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
