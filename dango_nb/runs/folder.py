"""The run folder: one trained model with everything needed to trust it and to predict with it.

Layout (``MARKER`` is written last; the folder is built as ``.<name>.partial`` beside its final
place and renamed into place in one step, so a folder named ``<name>`` is always complete)::

    <name>/
      params.yaml        resolved parameters: every value, defaults and lambdas included
                         (a valid ``dango-nb train`` file: the same model again)
      run.json           outcome: best epoch, epochs run, fit seconds, device, split sizes,
                         val/test metrics of the best-epoch model (strict JSON: null, never NaN)
      provenance.json    versions, git commit, device, threads, data files with sizes and sha256
      history.csv        one row per epoch (dango_nb.train.HISTORY_COLUMNS + per-channel losses)
      predictions.parquet  val/test triplets: gene names, measured tau, best-epoch prediction
      checkpoints/       best.pt (the model run.json reports, its best_epoch), last.pt,
                         top/epoch_XXXX.pt, top_k.json (dango_nb.train.checkpoint format)
      tensorboard/       TensorBoard event files, written live (one point per history.csv
                         value, step = epoch; dango_nb.train.tensorboard); watch a run, a sweep
                         or an evaluation while it trains with `tensorboard --logdir <folder>`
      README.md          short human-readable summary
      owner.json         the command and request that made it (dango_nb.fileio.check_output_folder)
      COMPLETE           marker

An interrupted run leaves only ``.<name>.partial``; running it again resumes from its ``last.pt``
(the training engine resumes exactly), and a complete folder is not trained again. One process at a
time trains a run folder: it holds ``.<name>.lock`` beside it (:func:`dango_nb.fileio.folder_lock`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import yaml

from ..errors import CheckpointError, OutputFolderError, ParamsError
from ..fileio import (atomic_write, atomic_write_json, atomic_write_table, check_output_folder, differences,
                      differences_text, folder_lock, read_json, read_yaml, to_strict_json, write_owner)
from .spec import RunParams, resolved_dict, run_params

__all__ = ["MARKER", "RunFolder", "is_complete", "partial_path", "read_progress", "remember_study", "request_of",
           "train_run"]

MARKER = "COMPLETE"
#: The command that owns run folders (:func:`dango_nb.fileio.check_output_folder`).
TRAIN_COMMAND = "dango-nb train"
PROGRESS_FILE = "progress.json"
#: The run folder's TensorBoard event files (:class:`dango_nb.train.tensorboard.TensorBoardLogger`).
TENSORBOARD_DIR = "tensorboard"
#: Set to a folder to make runs die on purpose (fault-tolerance tests): a file ``kill-<run_id>`` there
#: kills that run's process after an epoch once (the file is removed); ``kill-always-<run_id>`` every time.
FAULT_ENV = "DANGO_NB_FAULT_DIR"
# Keys that may differ between a complete run folder and a request for it (they change no number).
_IGNORED = (("train", "progress"),)

_STUDIES: dict[str, Any] = {}


# ------------------------------------------------------------------------------------- locations
def is_complete(path: str | os.PathLike) -> bool:
    return (Path(path) / MARKER).is_file()


def partial_path(path: str | os.PathLike) -> Path:
    """Where the run folder ``path`` is built before it is renamed into place."""
    path = Path(path)
    return path.parent / f".{path.name}.partial"


def read_progress(path: str | os.PathLike) -> dict | None:
    """``{"epoch", "epochs", ...}`` of a run in progress (``None`` when not started or unreadable)."""
    f = partial_path(path) / PROGRESS_FILE
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def request_of(params: RunParams) -> dict:
    """What identifies a run: its resolved parameters before lambdas are determined."""
    req = resolved_dict(params)
    for section, key in _IGNORED:
        req.get(section, {}).pop(key, None)
    return req


def check_same_request(path: Path, request: Mapping) -> None:
    """Raise :class:`ParamsError` when the complete run folder ``path`` was made with other parameters."""
    record = path / "run.json"
    try:
        info = read_json(record)
    except (OSError, ValueError) as err:  # missing, a FIFO or folder, not JSON: never a traceback or a hang
        detail = (getattr(err, "strerror", None) or str(err)).removeprefix(f"{record}: ")
        raise OutputFolderError(f"{record}: unreadable run record ({detail}); remove {path} or give another "
                                "folder as --out") from None
    if not isinstance(info, dict):
        raise OutputFolderError(f"{path / 'run.json'}: not a run record (expected a JSON object); remove {path} "
                                "or give another folder as --out")
    diff = differences(info.get("request", {}), dict(request))
    if diff:
        raise ParamsError(f"{path}: a complete run folder with other parameters is already there "
                          f"({differences_text(diff)}); choose another output folder or remove it")


# ------------------------------------------------------------------------------------------ data
def load_study_cached(data) -> Any:
    """The study of ``data`` (:class:`~dango_nb.params.DataParams`), loaded once per process (a Ray
    worker running several runs on the same data reads it once)."""
    import dataclasses

    key = json.dumps(dataclasses.asdict(data), sort_keys=True, default=str)
    if key not in _STUDIES:
        if len(_STUDIES) >= 2:
            _STUDIES.pop(next(iter(_STUDIES)))
        _STUDIES[key] = data.load_study()
    return _STUDIES[key]


def resolve_lambdas(params: RunParams, study) -> dict[str, float]:
    if params.lambdas is not None:
        return dict(params.lambdas)
    if params.lambdas_file is not None:
        from ..params import load_lambdas

        return load_lambdas(Path(os.path.expanduser(params.lambdas_file)))
    from ..lambdas import determine_lambdas

    try:
        later = study.read_release("11.0")
    except KeyError as err:
        raise ParamsError(f"no lambdas for this study ({err.args[0]}); set lambdas_file or lambdas") from None
    return dict(determine_lambdas(study.read_release(study.networks.version), later).lambdas)


# ----------------------------------------------------------------------------------------- train
def _fault_injection(run_id: str) -> None:
    folder = os.environ.get(FAULT_ENV)
    if not folder:
        return
    once, always = Path(folder) / f"kill-{run_id}", Path(folder) / f"kill-always-{run_id}"
    if once.exists() or always.exists():
        once.unlink(missing_ok=True)
        os.kill(os.getpid(), signal.SIGKILL)


def _summary_md(name: str, info: Mapping, resolved: Mapping, synthetic: bool, label: str) -> str:
    t = resolved["train"]
    split = resolved.get("split")
    lines = [f"# Run `{name}`", ""]
    if synthetic:
        lines += ["**Synthetic benchmark** (embedded generator); these numbers are not results on real data.", ""]
    where = "all triplets (no held-out part)" if split is None else \
        f"split `{split['name']}` fold {split['fold']} of {split['n_folds']} (seed {split['seed']})"
    lines += [f"DANGO trained on {label}, {where}: {info['n_train']} training, {info['n_val']} validation, "
              f"{info['n_test']} test triplets.", "",
              f"- schedule `{t['schedule']}`, transition_epoch {t['transition_epoch']}, lr {t['lr']}, "
              f"batch {t['batch_size']}, hidden {t['model'].get('hidden_channels')}, seed {t['seed']}",
              f"- {info['epochs_run']} of {t['epochs']} epochs on {info['device']} in {info['fit_s']:.1f} s"
              + (" (stopped early)" if info["stopped_early"] else ""),
              f"- best epoch {info['best_epoch']} (by {t['early_stopping_metric']})"]
    for part in ("val", "test"):
        m = info["metrics"].get(part) or {}
        if m:
            vals = ", ".join(f"{k} {m[k]:.4f}" if isinstance(m.get(k), (int, float)) else f"{k} n/a"
                             for k in ("pearson", "spearman", "mse"))
            lines.append(f"- {part}: {vals} (best-epoch model, {m.get('n_test')} triplets)")
    lines += ["", "Files: `params.yaml` (every parameter), `provenance.json` (versions, device, data hashes), "
              "`history.csv`, `run.json`, `predictions.parquet`, `checkpoints/`, `tensorboard/` (curves: "
              f"`tensorboard --logdir {name}`).", "",
              "Predict with it:", "", "```", f"dango-nb predict --run {name} --triplets TRIPLETS.tsv --out predictions.tsv",
              "```", ""]
    return "\n".join(lines)


def _part_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    from ._api import evaluate_metrics

    if len(y) == 0:
        return {}
    return to_strict_json(evaluate_metrics(y, pred))


def train_run(params: RunParams | Mapping, out: str | os.PathLike, *, run_id: str | None = None,
              progress: bool | None = None, threads: int | None = None,
              on_epoch: Callable[[int, dict], None] | None = None, source: str | None = None) -> dict:
    """Train one model into the run folder ``out`` and return its ``run.json`` record.

    A complete ``out`` made with the same parameters is not trained again (the record comes back
    with ``"skipped": True``); with other parameters it is an error. An unfinished attempt
    (``.<name>.partial``) with the same parameters is resumed from its last checkpoint.

    Args:
        params: :class:`~dango_nb.runs.spec.RunParams` or a mapping of it.
        progress: override ``train.progress`` (tqdm bars of the fit).
        threads: ``torch.set_num_threads`` for the fit (restored afterwards).
        on_epoch: called as ``on_epoch(epoch, history_row)``.
    """
    out = Path(out)
    if not isinstance(params, RunParams):
        params = run_params(params, source or str(out))
    if progress is not None:
        params.train = params.train.replace(progress=bool(progress))
    from ._api import check_device, summary_writer_class

    try:  # the machine must offer the device and precision before any folder or data is touched
        check_device(params.train.device, params.train.precision)
    except ValueError as err:
        raise ParamsError(f"{source or out}: {err}") from None
    summary_writer_class()  # TensorBoard is installed (an ImportError saying how to install it)
    if params.lambdas_file is not None:
        resolve_lambdas(params, None)  # a missing or bad lambda file fails now, not after the data loads
    request = request_of(params)
    out = check_output_folder(out, TRAIN_COMMAND)  # its real path: links and "." resolved, one lock per folder
    run_id = run_id or out.name
    if is_complete(out):
        check_same_request(out, request)
        return {**read_json(out / "run.json"), "skipped": True}
    # the data and its lambdas are checked before anything is written: bad input leaves no folder
    study = load_study_cached(params.data)
    lambdas = resolve_lambdas(params, study)
    from ..lambdas import check_covers

    try:
        check_covers(lambdas, study.edge_types, str(source or out))
    except ValueError as err:
        raise ParamsError(str(err)) from None
    lock = contextlib.ExitStack()
    lock.enter_context(folder_lock(out))  # one process per run folder; released when this call ends
    try:
        return _train_locked(params, out, run_id, request, threads, on_epoch, study, lambdas)
    finally:
        lock.close()


def _train_locked(params: RunParams, out: Path, run_id: str, request: dict, threads: int | None,
                  on_epoch: Callable[[int, dict], None] | None, study, lambdas: dict[str, float]) -> dict:
    import torch

    from ._api import TensorBoardLogger, fit

    if is_complete(out):  # another process finished it while we waited for nothing: same checks
        check_same_request(out, request)
        return {**read_json(out / "run.json"), "skipped": True}
    if out.exists() and any(out.iterdir()):
        raise OutputFolderError(f"{out}: exists but is not a complete run folder (no {MARKER}); remove it or "
                                "give another folder as --out")
    partial = partial_path(out)
    if partial.exists():
        try:
            old = read_json(partial / "request.json")
        except (OSError, ValueError):
            old = None
        if old != request:  # another configuration's unfinished attempt: start over
            shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    atomic_write_json(request, partial / "request.json")
    write_owner(partial, TRAIN_COMMAND, request)

    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    started = time.time()
    try:
        resolved = resolved_dict(params, lambdas)
        with atomic_write(partial / "params.yaml") as fh:
            yaml.safe_dump(to_strict_json(resolved), fh, sort_keys=False)

        triplets = study.triplets
        idx = triplets.indices.cpu().numpy()
        if params.split is None:
            train_rows, val_rows, test_rows = np.arange(len(idx)), np.zeros(0, np.int64), np.zeros(0, np.int64)
        else:
            from ._api import make_splits

            s = resolved["split"]
            folds = make_splits(s["name"], idx, n_folds=s["n_folds"], seed=s["seed"],
                                val_fraction=s["val_fraction"], n_test_genes=s["n_test_genes"])
            fold = folds[s["fold"]]
            train_rows, val_rows, test_rows = fold.train, fold.val, fold.test

        def part(rows):
            return triplets.subset(torch.as_tensor(np.asarray(rows), dtype=torch.long))

        train, val = part(train_rows), part(val_rows)
        config = params.train.replace(checkpoint_dir=str(partial / "checkpoints"),
                                      model=dict(resolved["train"]["model"]))
        epochs = config.epochs

        def callback(epoch: int, row: dict) -> None:
            atomic_write_json({"epoch": epoch + 1, "epochs": epochs, "val_pearson": row.get("val_pearson"),
                        "pid": os.getpid(), "time": time.time()}, partial / PROGRESS_FILE)
            if on_epoch is not None:
                on_epoch(epoch, row)
            _fault_injection(run_id)

        t0 = time.perf_counter()
        result = fit(study.cell_graph, train, val if len(val) else None, config, lambdas, callback=callback,
                     callbacks=[TensorBoardLogger(partial / TENSORBOARD_DIR)])
        fit_s = time.perf_counter() - t0
        best = result.best_model()

        from ._api import predict

        genes = np.asarray(study.genes, dtype=object)
        y_all = triplets.targets.cpu().numpy().astype(np.float64)
        metrics_by_part, frames = {}, []
        for name, rows in (("val", val_rows), ("test", test_rows)):
            rows = np.asarray(rows, dtype=np.int64)
            pred = (np.asarray(predict(best, study.cell_graph, torch.as_tensor(idx[rows]), result.scaler),
                               dtype=np.float64) if len(rows) else np.zeros(0))
            metrics_by_part[name] = _part_metrics(y_all[rows], pred)
            g = genes[idx[rows]] if len(rows) else np.zeros((0, 3), dtype=object)
            frames.append(pd.DataFrame({"part": name, "row": rows, "gene1": g[:, 0], "gene2": g[:, 1],
                                        "gene3": g[:, 2], "tau": y_all[rows], "prediction": pred}))
        atomic_write_table(pd.concat(frames, ignore_index=True), partial / "predictions.parquet")
        atomic_write_table(result.history, partial / "history.csv")

        from .provenance import provenance

        prov = provenance(device=str(result.device), seed=config.seed, source=getattr(study, "source", None))
        prov["torch"]["torch_threads"] = torch.get_num_threads()
        atomic_write_json(prov, partial / "provenance.json")
        info = {
            "run_id": run_id, "request": request, "best_epoch": result.best_epoch,
            "epochs_run": int(len(result.history)), "stopped_early": bool(result.stopped_early),
            "fit_s": fit_s, "device": str(result.device), "synthetic": bool(getattr(study, "synthetic", False)),
            "n_train": int(len(train_rows)), "n_val": int(len(val_rows)), "n_test": int(len(test_rows)),
            "metrics": metrics_by_part, "started": started, "finished": time.time(),
        }
        atomic_write_json(info, partial / "run.json")
        with atomic_write(partial / "README.md") as fh:
            fh.write(_summary_md(out.name, to_strict_json(info), resolved, info["synthetic"], study.label))
        (partial / PROGRESS_FILE).unlink(missing_ok=True)
        (partial / "request.json").unlink(missing_ok=True)
        atomic_write_json({"finished": info["finished"], "run_id": run_id}, partial / MARKER)
        os.replace(partial, out)
        return {**to_strict_json(info), "skipped": False}
    finally:
        if threads is not None:
            torch.set_num_threads(old_threads)


# ------------------------------------------------------------------------------------------ read
def model_device(model):
    import torch

    return next(iter(model.parameters()), torch.empty(0)).device


def remember_study(data, study) -> None:
    """Use the already loaded ``study`` for runs of ``data`` in this process (no second load)."""
    import dataclasses

    key = json.dumps(dataclasses.asdict(data), sort_keys=True, default=str)
    _STUDIES.pop(key, None)
    if len(_STUDIES) >= 2:
        _STUDIES.pop(next(iter(_STUDIES)))
    _STUDIES[key] = study


@dataclass
class RunFolder:
    """A complete run folder, read back (:meth:`open`)."""

    path: Path

    @classmethod
    def open(cls, path: str | os.PathLike) -> "RunFolder":
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: run folder not found")
        if not is_complete(path):
            raise ValueError(f"{path}: not a complete run folder (no {MARKER}; the run did not finish)")
        return cls(path)

    @property
    def info(self) -> dict:
        return read_json(self.path / "run.json")

    @property
    def params(self) -> dict:
        return yaml.safe_load((self.path / "params.yaml").read_text(encoding="utf-8"))

    @property
    def provenance(self) -> dict:
        return read_json(self.path / "provenance.json")

    @property
    def history(self) -> pd.DataFrame:
        return pd.read_csv(self.path / "history.csv")

    def _record(self, name: str) -> dict:
        try:
            value = read_json(self.path / name)
        except OSError as err:
            raise ParamsError(f"{self.path / name}: cannot read ({err.strerror or err})") from None
        except ValueError as err:  # read_json's message names the file
            raise ParamsError(str(err)) from None
        if not isinstance(value, dict):
            raise ParamsError(f"{self.path / name}: expected a JSON object, found {type(value).__name__}")
        return value

    def checked_params(self) -> dict:
        """``params.yaml``, checked against the other records of the run's request: ``run.json``'s
        ``request`` (every key; the lambdas when the request gave them) and ``provenance.json``'s
        seed and data source. A folder changed after training is a :class:`ParamsError` naming it
        and the first differing keys (numbers recomputed from an edited ``params.yaml`` would
        describe another study than the run's)."""
        params = read_yaml(self.path / "params.yaml")
        if not isinstance(params, dict) or not isinstance(params.get("train"), dict):
            raise ParamsError(f"{self.path / 'params.yaml'}: not a run's resolved parameters (no 'train' mapping)")
        request = self._record("run.json").get("request")
        if not isinstance(request, dict):
            raise ParamsError(f"{self.path / 'run.json'}: no 'request' recorded; cannot check params.yaml")
        mine = json.loads(json.dumps(to_strict_json(params)))
        theirs = json.loads(json.dumps(to_strict_json(request)))
        for section, key in _IGNORED:
            mine.get(section, {}).pop(key, None)
            theirs.get(section, {}).pop(key, None)
        if theirs.get("lambdas") is None:  # determined by the run: recorded in params.yaml only
            for d in (mine, theirs):
                d.pop("lambdas", None)
                d.pop("lambdas_file", None)
        diff = differences(theirs, mine)
        if diff:
            raise ParamsError(f"{self.path}: params.yaml differs from the request run.json records "
                              f"(run.json -> params.yaml: {differences_text(diff)}); the run folder was changed after "
                              "training: restore it or train the run again")
        prov = self._record("provenance.json")
        recorded = {"train.seed": prov.get("seed")}
        source = prov.get("data_source")
        if isinstance(source, dict) and source.get("kind") == "synthetic" and not params["data"].get("kuzmin_file"):
            recorded.update({"data.preset": source.get("preset"), "data.seed": source.get("seed")})
        for dotted, value in recorded.items():
            section, key = dotted.split(".")
            if params.get(section, {}).get(key) != value:
                raise ParamsError(f"{self.path}: params.yaml {dotted} is {params[section].get(key)!r}, provenance.json "
                                  f"records {value!r}; the run folder was changed after training: restore it or "
                                  "train the run again")
        return params

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    def predictions(self, part: str | None = None) -> pd.DataFrame:
        df = pd.read_parquet(self.path / "predictions.parquet")
        return df if part is None else df[df["part"] == part].reset_index(drop=True)

    def best_checkpoint(self) -> Path:
        """The checkpoint of the model ``run.json`` reports (its predictions, its metrics):
        ``checkpoints/best.pt``, verified to hold ``best_epoch``; ``last.pt`` (verified to hold
        every epoch run) when no epoch was eligible for best (``best_epoch`` null).

        Raises:
            CheckpointError: the file is missing, damaged or holds another epoch.
        """
        from ._api import load_intact

        info = self.info
        best = info.get("best_epoch")
        if best is None:
            path = self.checkpoint_dir / "last.pt"
            ckpt, _ = load_intact([path])
            found = len((ckpt.get("state") or {}).get("rows") or [])
            if found != info.get("epochs_run"):
                raise CheckpointError(f"holds {found} epochs, run.json reports {info.get('epochs_run')} (and no "
                                      "best epoch); the run folder does not hold the model it reports", path=path)
            return path
        path = self.checkpoint_dir / "best.pt"
        if not path.is_file():
            # Run folders written before best.pt existed still hold the model among their top-k.
            from ._api import list_checkpoints

            kept = [Path(r.path) for r in list_checkpoints(self.checkpoint_dir).itertuples() if r.epoch == best]
            if kept:
                path = kept[0]
        if not path.is_file():
            raise CheckpointError(f"missing: run.json reports best epoch {best} and this file must hold its model "
                                  "(a run folder keeps the model it reports); train the run again", path=path)
        ckpt, _ = load_intact([path])
        if ckpt.get("epoch") != best:
            raise CheckpointError(f"holds epoch {ckpt.get('epoch')!r}, run.json reports best epoch {best}; the run "
                                  "folder does not hold the model it reports", path=path)
        return path

    def checkpoints(self, top_k: int | None = None) -> list[Path]:
        """The run's model first (:meth:`best_checkpoint`), then the other kept top-k checkpoints,
        best first; at most ``top_k`` (``None``: all)."""
        from ._api import list_checkpoints

        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"top_k must be an integer >= 1 or None (all kept), got {top_k!r}")
        best = self.info.get("best_epoch")
        files = [self.best_checkpoint()]
        files += [Path(r.path) for r in list_checkpoints(self.checkpoint_dir).itertuples() if r.epoch != best]
        return files if top_k is None else files[:top_k]

    def fit_result(self, device: str = "cpu"):
        """The run's :class:`~dango_nb.train.FitResult` rebuilt from ``checkpoints/last.pt``: the
        model after the last epoch, the recorded best-epoch parameters (``best_model()`` is the
        model an in-process fit returns), scaler, history and ``checkpoint_dir``."""
        from ._api import FitResult, load_checkpoint, load_intact

        last = self.checkpoint_dir / "last.pt"
        model, scaler = load_checkpoint(last, device=device)
        ckpt, _ = load_intact([last, self.checkpoint_dir / "last.prev.pt"], device)
        info = self.info
        return FitResult(model=model, history=self.history, scaler=scaler, best_epoch=info["best_epoch"],
                         checkpoint_dir=self.checkpoint_dir, device=model_device(model),
                         stopped_early=bool(info["stopped_early"]), best_state=ckpt.get("best_state"))

    def load_model(self, device: str = "cpu"):
        """``(model, scaler)`` of the model ``run.json`` reports (eval mode)."""
        from ._api import load_checkpoint

        return load_checkpoint(self.best_checkpoint(), device=device)
