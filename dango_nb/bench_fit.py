"""``make bench-fit``: time to accuracy of two DANGO training recipes, compared in one run.

    python -m dango_nb.bench_fit --out reports/bench_fit.json [--preset kuzmin] [--threads 1]
        [--baseline FILE] [--candidate params/real/04_evaluation.yaml] [--epochs-cap N]

Both recipes fit the same data: the synthetic ``kuzmin`` preset (6,400 genes, STRING-v9.1-size
channels) read back through the real-format loaders, fold 0 of the evaluation's ``random`` split
(seeded by ``--seed``; the validation part drives best epoch and early stopping) and the planted
lambdas. Each fit runs in a fresh process (one after the other, ``--threads`` torch threads each),
so its peak memory is its own and neither fit warms the other's caches. For each recipe the report
holds the wall and CPU time from the start of the fit (model construction included, data loading
not) to the end of the best validation epoch and to the end of the run, the epochs run, the best
validation Pearson and the test Pearson of the best-epoch model, and the peak resident memory.

The recipes are ``train:`` mappings of a parameter file (``TrainConfig`` fields): the candidate is
``params/real/04_evaluation.yaml``'s by default, the baseline :data:`BASELINE_RECIPE` (the
``params/real`` recipe it replaced) unless ``--baseline`` names a file. ``goal`` says whether the
candidate reaches the baseline's test Pearson (within ``--tolerance``) in at most ``--max-ratio``
of its wall time to the best epoch. A markdown table goes to ``<out>.md`` and to the terminal.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import sys
import time
from pathlib import Path

#: ``params/real``'s recipe before the fast one: 20 epochs at batch 256 (hidden 128), five of them
#: reconstruction only (the original DANGO's two stages), a constant Adam rate.
BASELINE_RECIPE = {"epochs": 20, "batch_size": 256, "lr": 0.003, "schedule": "PaperTwoStage",
                   "transition_epoch": 5, "model": {"hidden_channels": 128}}
DEFAULT_CANDIDATE = "params/real/04_evaluation.yaml"
PRESET_NAMES = ("tiny", "small", "kuzmin")  # dango_nb.data.synthetic.PRESETS, named here so --help needs no torch
#: Fields a benchmark fit sets itself: one device, no files, no bars.
_FIXED = {"device": "cpu", "checkpoint_dir": None, "progress": False}


def _parse(argv=None) -> argparse.Namespace:
    from dango_nb.argtypes import MAX_SEED, data_folder, int_in, number_in

    p = argparse.ArgumentParser(prog="python -m dango_nb.bench_fit", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="reports/bench_fit.json", help="JSON report, a .json path (written "
                   "atomically; the table goes beside it as .md; default reports/bench_fit.json)")
    p.add_argument("--preset", default="kuzmin", choices=PRESET_NAMES, help="synthetic preset (default kuzmin)")
    p.add_argument("--seed", type=int_in(0, MAX_SEED), default=0, help="benchmark, split and model seed (default 0)")
    p.add_argument("--data-dir", type=data_folder, default=None, help="where the benchmark files live "
                   "(default: DANGO_DATA_DIR or the user cache)")
    p.add_argument("--threads", type=int_in(1, 256), default=1, help="torch threads per fit (default 1)")
    p.add_argument("--baseline", default=None, help="parameter file whose train: mapping is the baseline "
                   "recipe (default: the recipe params/real used before, BASELINE_RECIPE)")
    p.add_argument("--candidate", default=None, help="parameter file whose train: mapping is the candidate "
                   f"recipe (default: this checkout's {DEFAULT_CANDIDATE})")
    p.add_argument("--epochs-cap", type=int_in(1, 100_000), default=None,
                   help="at most this many epochs per recipe (a quick look; the goal is then not judged)")
    p.add_argument("--max-ratio", type=number_in(0.001, 1.0), default=0.25,
                   help="goal: candidate wall time to best epoch / baseline's (default 0.25)")
    p.add_argument("--tolerance", type=number_in(0.0, 1.0), default=0.005,
                   help="goal: candidate test Pearson >= baseline's - this (default 0.005)")
    args = p.parse_args(argv)
    out = Path(args.out)
    if out.is_dir():
        p.error(f"--out {args.out}: is a folder; give a .json file path")
    if out.suffix != ".json":
        p.error(f"--out {args.out}: expected a path ending in .json (the table is written beside it as .md)")
    if args.candidate is None:
        args.candidate = str(Path(__file__).resolve().parent.parent / DEFAULT_CANDIDATE)
    return args


def _check_writable(out: Path) -> None:
    """``out``'s folder exists (or is made) and takes a file: checked before hours of fitting."""
    import tempfile

    from dango_nb.errors import UsageError

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out.parent, prefix=f".{out.name}.", suffix=".probe"):
            pass
    except OSError as err:
        raise UsageError(f"--out {out}: cannot write into {out.parent} ({err.strerror or err})") from None


def recipe_from_file(path: str | os.PathLike) -> dict:
    """The ``train:`` mapping of a parameter file (the keys it sets), validated as a
    :class:`~dango_nb.train.TrainConfig` (errors name the file and key)."""
    import yaml

    from dango_nb.errors import ParamsError
    from dango_nb.fileio import load_yaml
    from dango_nb.train import TrainConfig

    path = Path(path)
    try:
        raw = load_yaml(path.read_text(encoding="utf-8"), str(path))
    except FileNotFoundError:
        raise ParamsError(f"{path}: parameter file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ParamsError(f"{path}: cannot be read ({err})") from None
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {getattr(err, 'problem', None) or err}") from None
    train = raw.get("train") if isinstance(raw, dict) else None
    if not isinstance(train, dict):
        raise ParamsError(f"{path}: expected a `train:` mapping of TrainConfig fields")
    import dataclasses

    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(str(k) for k in train if k not in known)
    if unknown:
        raise ParamsError(f"{path}: train: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    try:
        TrainConfig(**train)
    except (TypeError, ValueError) as err:
        raise ParamsError(f"{path}: train: {err}") from None
    return dict(train)


def _recipe(name: str, recipe: dict, seed: int, epochs_cap: int | None) -> dict:
    from dango_nb.train import TrainConfig

    overridden = sorted(k for k, v in _FIXED.items() if k in recipe and recipe[k] != v
                        and not (k == "device" and recipe[k] == "auto"))
    if overridden:
        print(f"python -m dango_nb.bench_fit: note: {name}: "
              + ", ".join(f"{k}={recipe[k]!r}" for k in overridden)
              + f" replaced by {', '.join(f'{k}={_FIXED[k]!r}' for k in overridden)} (benchmark fits run on the "
              f"CPU without files)", file=sys.stderr)
    cfg = {**recipe, **_FIXED, "seed": seed}
    if epochs_cap is not None:
        cfg["epochs"] = min(int(cfg["epochs"]), epochs_cap)
    config = TrainConfig(**cfg)
    try:
        config.check_trains_interaction()
    except ValueError as err:
        capped = f" (--epochs-cap {epochs_cap})" if epochs_cap is not None else ""
        raise ValueError(f"{name} recipe{capped}: {err}") from None
    return config.to_dict()


def fit_recipe(name: str, recipe: dict, preset: str, seed: int, data_dir, threads: int) -> dict:
    """One timed fit (run in a child process by :func:`main`)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from dango_nb.bench import _peak_rss_gb
    from dango_nb.data.study import load_study
    from dango_nb.eval.prediction import predict
    from dango_nb.eval.splits import make_splits
    from dango_nb.train import TrainConfig, fit
    from dango_nb.train.loop import regression_metrics

    t0 = time.perf_counter()
    study = load_study(preset, seed=seed, data_dir=data_dir)
    data_load_s = time.perf_counter() - t0
    graph, triplets = study.cell_graph, study.triplets
    fold = make_splits("random", triplets.indices.numpy(), n_folds=5, seed=seed, val_fraction=0.1)[0]

    def part(rows):
        return triplets.subset(torch.as_tensor(rows, dtype=torch.long))

    train, val, test = part(fold.train), part(fold.val), part(fold.test)
    lambdas = study.planted_lambdas()
    config = TrainConfig(**recipe)

    clock: list[tuple[float, float]] = []

    def progress(epoch: int, row: dict) -> None:
        clock.append((time.perf_counter() - w0, time.process_time() - c0))
        print(f"{name}: epoch {epoch + 1}/{config.epochs}, val Pearson {row['val_pearson']:.4f}, "
              f"{clock[-1][0]:.0f} s", file=sys.stderr, flush=True)

    w0, c0 = time.perf_counter(), time.process_time()
    result = fit(graph, train, val, config, lambdas, callback=progress)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    best = result.best_epoch
    y = test.targets.numpy().astype(np.float64)
    pred = np.asarray(predict(result.best_model(), graph, test.indices, result.scaler), dtype=np.float64)
    test_pearson = regression_metrics(y, pred)[0]
    history = result.history
    return {
        "recipe": name, "config": config.to_dict(), "epochs_run": int(len(history)), "best_epoch": best,
        "stopped_early": bool(result.stopped_early),
        "wall_to_best_s": clock[best][0], "cpu_to_best_s": clock[best][1], "wall_s": wall, "cpu_s": cpu,
        "best_val_pearson": float(history["val_pearson"].iloc[best]), "test_pearson": float(test_pearson),
        "val_pearson_by_epoch": history["val_pearson"].tolist(), "epoch_wall_s": [c[0] for c in clock],
        "peak_rss_gb": _peak_rss_gb(), "data_load_s": data_load_s,
        "n_train": len(train), "n_val": len(val), "n_test": len(test), "synthetic": bool(study.synthetic),
        "torch_threads": torch.get_num_threads(),
    }


def _child(queue, parent: int, target, *args) -> None:
    import threading

    def watchdog():  # a fit never outlives the benchmark that asked for it
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watchdog, daemon=True).start()
    try:
        queue.put(("ok", target(*args)))
    except BaseException as err:  # reported by the parent, which owns the exit code
        queue.put(("error", f"{type(err).__name__}: {err}"))


def _in_child(*args, target=None) -> dict:
    """``target(*args)`` (default :func:`fit_recipe`) in a spawned process whose first argument names
    it; ``RuntimeError`` with one line when it fails or dies."""
    import multiprocessing as mp
    import queue as queues

    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    proc = ctx.Process(target=_child, args=(results, os.getpid(), target or fit_recipe, *args), daemon=True)
    proc.start()
    try:
        while True:
            try:
                status, value = results.get(timeout=1.0)
                break
            except queues.Empty:
                if not proc.is_alive():
                    code = proc.exitcode
                    how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                    raise RuntimeError(f"the {args[0]} fit died ({how}) before reporting") from None
        proc.join()
    finally:
        if proc.is_alive():
            proc.terminate()
            proc.join(5)
    if status != "ok":
        raise RuntimeError(f"the {args[0]} fit failed: {value}")
    return value


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv=None) -> dict:
    args = _parse(argv)
    from dango_nb.errors import OutputFolderError, ParamsError, UsageError
    from dango_nb.fileio import folder_lock

    prog = "python -m dango_nb.bench_fit"
    out = Path(args.out)
    try:
        baseline = BASELINE_RECIPE if args.baseline is None else recipe_from_file(args.baseline)
        candidate = recipe_from_file(args.candidate)
        recipes = {"baseline": _recipe("baseline", baseline, args.seed, args.epochs_cap),
                   "candidate": _recipe("candidate", candidate, args.seed, args.epochs_cap)}
        _check_writable(out)
        with folder_lock(out):
            return _run(args, recipes, out)
    except (ParamsError, UsageError, OutputFolderError, ValueError, TypeError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; nothing written", file=sys.stderr)
        raise SystemExit(130) from None


def _run(args, recipes: dict, out: Path) -> dict:
    from dango_nb.bench import _load_avg
    from dango_nb.fileio import atomic_write, atomic_write_json

    load_before = _load_avg()
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    runs: dict[str, dict] = {}
    for name, cfg in recipes.items():
        try:
            runs[name] = _in_child(name, cfg, args.preset, args.seed, args.data_dir, args.threads)
        except RuntimeError as err:  # recorded; the other recipe's numbers are kept
            print(f"python -m dango_nb.bench_fit: {err}", file=sys.stderr)
            runs[name] = {"recipe": name, "config": cfg, "error": str(err)}
    base, cand = runs["baseline"], runs["candidate"]
    failed = "error" in base or "error" in cand
    ratio = None if failed else cand["wall_to_best_s"] / base["wall_to_best_s"]
    import torch

    judged = args.epochs_cap is None
    report = {
        "synthetic": next((r["synthetic"] for r in runs.values() if "synthetic" in r), None),
        "preset": args.preset, "seed": args.seed, "split": "random fold 0",
        "baseline_source": args.baseline or "dango_nb.bench_fit.BASELINE_RECIPE", "candidate_source": args.candidate,
        "epochs_cap": args.epochs_cap, "cpu": cpu_name(), "cpu_count": os.cpu_count(),
        "torch_threads_per_fit": args.threads, "torch_version": torch.__version__,
        "python": platform.python_version(), "started": started,
        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "load_avg_1min": [load_before, _load_avg()],
        "runs": runs,
        "wall_to_best_ratio": ratio,
        "cpu_to_best_ratio": None if failed else cand["cpu_to_best_s"] / base["cpu_to_best_s"],
        "test_pearson_difference": None if failed else cand["test_pearson"] - base["test_pearson"],
        "goal": {"max_ratio": args.max_ratio, "tolerance": args.tolerance,
                 "met": (False if failed else bool(ratio <= args.max_ratio and cand["test_pearson"]
                                                   >= base["test_pearson"] - args.tolerance)) if judged else None},
    }
    table = markdown_table(report)
    atomic_write_json(report, out)
    with atomic_write(out.with_suffix(".md")) as fh:
        fh.write(table + "\n")
    print(table)
    print(f"written to {out} and {out.with_suffix('.md')}")
    if failed:
        raise SystemExit(1)
    return report


def _recipe_text(cfg: dict) -> str:
    parts = [f"batch {cfg['batch_size']}", f"lr {cfg['lr']:g}"]
    if cfg.get("lr_warmup_epochs"):
        parts.append(f"warm-up {cfg['lr_warmup_epochs']:g} ep")
    if cfg.get("lr_schedule"):
        parts.append(f"{cfg['lr_schedule']} to {cfg['lr_min']:g}" if cfg["lr_schedule"] == "cosine" else cfg["lr_schedule"])
    parts.append(f"{cfg['schedule']} T={cfg['transition_epoch']}")
    parts.append(f"<= {cfg['epochs']} ep")
    if cfg.get("early_stopping_patience") is not None:
        parts.append(f"patience {cfg['early_stopping_patience']}")
    parts.append(f"hidden {cfg['model'].get('hidden_channels', 64)}")
    return ", ".join(parts)


def markdown_table(r: dict) -> str:
    """The report as the table docs/performance.md shows."""
    label = "SYNTHETIC " if r["synthetic"] else ""
    lines = [f"{label}preset `{r['preset']}`, {r['split']}, seed {r['seed']}; {r['cpu']}, "
             f"{r['torch_threads_per_fit']} torch thread(s) per fit, one fit at a time; torch {r['torch_version']}; "
             f"{r['started']}; 1-min load average before/after {r['load_avg_1min']}", "",
             "| recipe | settings | epochs run | best epoch | wall to best (s) | CPU to best (s) | wall total (s) "
             "| best val Pearson | test Pearson | peak RSS (GB) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, run in r["runs"].items():
        if "error" in run:
            lines.append(f"| {name} | {_recipe_text(run['config'])} | failed: {run['error']} " + "| " * 7 + "|")
            continue
        lines.append(f"| {name} | {_recipe_text(run['config'])} | {run['epochs_run']} | {run['best_epoch']} "
                     f"| {run['wall_to_best_s']:.0f} | {run['cpu_to_best_s']:.0f} | {run['wall_s']:.0f} "
                     f"| {run['best_val_pearson']:.3f} | {run['test_pearson']:.3f} | {run['peak_rss_gb']:.2f} |")
    goal = r["goal"]
    met = {None: "not judged (epochs capped)", True: "met", False: "NOT met"}[goal["met"]]
    if r["wall_to_best_ratio"] is None:
        lines += ["", f"a fit failed: no comparison; goal: {met}"]
    else:
        lines += ["", f"candidate / baseline wall time to best epoch: {r['wall_to_best_ratio']:.3f} "
                  f"(CPU time {r['cpu_to_best_ratio']:.3f}); test Pearson difference "
                  f"{r['test_pearson_difference']:+.3f}; goal (ratio <= {goal['max_ratio']:g}, "
                  f"difference >= -{goal['tolerance']:g}): {met}"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
