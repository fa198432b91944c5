"""``make report``: execute every notebook headless with papermill and collect the results.

    python -m dango_nb.report --params params --out reports

1. Every parameter file in ``--params`` (one per notebook, see :mod:`dango_nb.params`) is validated
   before anything runs or anything is deleted; a bad file stops here with the file, key and allowed
   keys named.
2. The notebooks run in order, each into its own folder ``<out>/<run>/`` (``lambda_determination``,
   ``pretraining``, ``loss_schedules``, ``evaluation``): the executed ``.ipynb``, its HTML export, the
   PNG figures and the tables it writes, plus ``summary.json`` (its key numbers, written by the notebook
   through :func:`write_summary`), ``kernel.log`` (the kernel's own log), ``params.yaml`` (every
   parameter, defaults included) and ``provenance.json`` (versions, git commit, host, device, the
   params and data files with sizes and sha256), linked from the summary. Each notebook runs in a
   new folder ``<out>/.<run>.run-<pid>/`` that replaces ``<out>/<run>/`` only when the notebook
   succeeded; after a failure ``<out>/<run>/`` is left as it was and the attempt is kept in
   ``<out>/<run>.failed/``. The new folder starts with hard links to the complete run folders of
   ``<out>/<run>/runs/`` (and ``<out>/<run>.failed/runs/``), so the evaluation's fits with unchanged
   parameters are not trained again.
   The schedule notebook runs once and compares all schedules on the same batch (one data load, and
   the comparison figure needs every schedule); its per-schedule figures are
   ``loss_schedules/<Schedule>_transition_epoch=<T>_<timestamp>/final_results.png``.
3. The lambda notebook writes ``lambda_determination/lambdas.json``, which the other three read, so
   when it fails they are skipped; the other three do not depend on each other, so one failing does not
   stop the rest.
4. ``<out>/index.html`` links every run and shows its key numbers (lambdas, final Pearson per
   schedule, the evaluation table); ``<out>/summary.json`` and ``<out>/summary.md`` hold the same.
   They are written when the run starts (state ``running``) and after every notebook, so after a
   kill they still say how far it got; SIGINT (Ctrl-C) or SIGTERM stop the kernel, record the state
   ``interrupted`` and exit with 130 / 143. Any failed or skipped notebook makes the command exit
   with status 1 after printing the failing cell's error; bad parameters, an unwritable ``--out``, an
   ``--out`` that is not a report folder (``owner.json``) nor new or empty, or a report folder in use
   by another run (``<out>/.report.lock`` names its pid) exit with 2 before anything runs. Unless
   ``--quiet``, every cell's output is echoed as it runs.

The kernel is ``dango_nb`` when registered (``make install`` does it), else ``python3``. Kernels
run with ``OMP_NUM_THREADS=1`` / ``MKL_NUM_THREADS=1`` unless those are already set (``--threads N``
sets them): on the 2-core reference machine, shared with other work, PyTorch's intra-op threads made
the sparse training steps far slower, not faster (10 pre-training epochs of the ``small`` preset:
1.3 s with one thread, 61 s with two).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import html
import json
import math
import os
import re
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from .errors import OutputFolderError, ParamsError
from .fileio import (atomic_write, atomic_write_json, check_output_folder, folder_lock, to_strict_json, write_owner)
from .params import NOTEBOOKS, load_param_dir, run_name

__all__ = ["DEPENDS_ON", "ReportError", "ReportInterrupted", "RunResult", "kernel_interrupts", "main", "notebook_dir",
           "pick_kernel", "read_summary", "report_lock", "run_notebook", "run_report", "write_index", "write_summary"]

#: run name -> runs whose outputs it reads
DEPENDS_ON: dict[str, tuple[str, ...]] = {
    "lambda_determination": (),
    "pretraining": ("lambda_determination",),
    "loss_schedules": ("lambda_determination",),
    "evaluation": ("lambda_determination",),
}
SUMMARY_NAME = "summary.json"
PARAMS_NAME = "params.yaml"
PROVENANCE_NAME = "provenance.json"
#: The command that owns a report folder and its notebook folders (``owner.json``).
REPORT_COMMAND = "dango_nb.report"
#: What the project's other make targets write into ``reports/`` (``make bench``, ``make bench-fit``,
#: ``make bench-sweep``, ``make test-ui``'s screenshots): a report folder may hold them, and a report
#: never touches them.
SHARED_REPORT_ENTRIES = frozenset({"bench.json", "bench_fit.json", "bench_fit.md", "bench_sweep.json", "ui"})
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def notebook_dir() -> Path:
    """The repository's ``notebooks/`` folder (next to the package)."""
    return Path(__file__).resolve().parents[1] / "notebooks"


def pick_kernel(preferred: str = "dango_nb") -> str:
    """``preferred`` when that kernel spec is installed, else ``python3``."""
    from jupyter_client.kernelspec import KernelSpecManager

    return preferred if preferred in KernelSpecManager().find_kernel_specs() else "python3"


# ---------------------------------------------------------------------------- per-run summaries
def resolved_params(params) -> dict:
    """Every value of a notebook's validated parameters (defaults filled in, DANGO's keyword
    defaults in ``train.model``) as plain values."""
    from .params import params_to_dict

    out = params_to_dict(params)
    if isinstance(out.get("train"), dict) and isinstance(out["train"].get("model"), dict):
        from .runs.spec import model_defaults

        out["train"]["model"] = {**model_defaults(), **out["train"]["model"]}
    return out


def write_run_record(stem: str, params_file: str | os.PathLike, folder: str | os.PathLike) -> None:
    """``params.yaml`` (resolved parameters) and ``provenance.json`` (strict JSON: versions, git
    commit, host, device, the params file and data files with sizes and sha256) of one notebook."""
    import yaml

    from .params import load_params
    from .runs.provenance import provenance

    folder, params_file = Path(folder), Path(params_file)
    p = load_params(params_file, stem)
    resolved = resolved_params(p)
    with atomic_write(folder / PARAMS_NAME) as fh:
        fh.write(f"# {stem}: every parameter of {params_file.name}, defaults included\n")
        yaml.safe_dump(to_strict_json(resolved), fh, sort_keys=False)
    data = getattr(p, "data", None)
    files: list[Path] = [params_file]
    for key in ("string_file", "dango_folder", "kuzmin_file"):
        value = getattr(data, key, None)
        if value:  # where it resolves, without downloading (a missing file is recorded with nulls)
            path = Path(os.path.expanduser(value))
            files.append(path if path.is_absolute() else data.root() / path)
    device = None
    if hasattr(p, "train"):
        from .train import resolve_device

        device = str(resolve_device(p.train.device))
    prov = provenance(device=device, seed=getattr(data, "seed", None), files=files)
    prov["notebook"], prov["params_file"] = f"{stem}.ipynb", str(params_file.resolve())
    atomic_write_json(prov, folder / PROVENANCE_NAME)
    write_owner(folder, REPORT_COMMAND, {"notebook": f"{stem}.ipynb"})


def write_summary(report_dir: str | os.PathLike, numbers: Mapping[str, Any], **extra: Any) -> Path:
    """Called by a notebook at its end: its key numbers (JSON-able; scalars, mappings of scalars,
    or ``{"columns": [...], "rows": [[...], ...]}`` tables) go to ``<report_dir>/summary.json``."""
    path = Path(report_dir) / SUMMARY_NAME
    atomic_write_json({"numbers": dict(numbers), **extra}, path)
    return path


def read_summary(run_dir: str | os.PathLike) -> dict | None:
    path = Path(run_dir) / SUMMARY_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None


def table(df, digits: int = 4) -> dict:
    """A DataFrame as the ``{"columns", "rows"}`` form :func:`write_summary` renders as a table
    (floats kept to ``digits`` significant digits)."""
    def cell(v):
        v = v.item() if hasattr(v, "item") else v
        return float(f"{v:.{digits}g}") if isinstance(v, float) else v

    return {"columns": [str(c) for c in df.columns], "rows": [[cell(v) for v in rec] for rec in df.itertuples(index=False)]}


# ------------------------------------------------------------------------------------- running
class ReportError(RuntimeError):
    """The report cannot be written where asked (folder in use by another run, not writable)."""


class ReportInterrupted(BaseException):
    """SIGINT or SIGTERM reached the runner; ``signum`` says which (a BaseException, so that no
    ``except Exception`` in papermill or nbclient swallows it)."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


@dataclass
class RunResult:
    name: str
    notebook: str
    status: str  # "pending" | "running" | "ok" | "failed" | "skipped" | "interrupted" | "not run"
    seconds: float = 0.0
    error: str | None = None
    ipynb: str | None = None
    html: str | None = None
    figures: list[str] = field(default_factory=list)
    summary: dict | None = None
    folder: str | None = None  # where this attempt's files are (relative to the report folder)
    previous: str | None = None  # the earlier successful output kept after a failure
    params: str | None = None  # resolved parameters (every value, defaults included)
    provenance: str | None = None  # versions, git commit, host, device, data files

    def to_dict(self) -> dict:
        return dict(vars(self))


def _error_text(err: BaseException, timeout: int | None = None) -> str:
    from papermill.exceptions import PapermillExecutionError

    if isinstance(err, PapermillExecutionError):
        tb = _ANSI.sub("", "\n".join(err.traceback or []))
        text = (f"cell {err.cell_index} (execution count {err.exec_count}) raised "
                f"{err.ename}: {err.evalue}\n{tb}").rstrip()
        if err.ename == "KeyboardInterrupt" and timeout:
            text = f"cell {err.cell_index} ran past --timeout {timeout} s and was interrupted\n" + text
        return text
    return f"{type(err).__name__}: {err}"


def export_html(ipynb: Path) -> Path:
    """HTML next to the executed notebook (figures embedded)."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(ipynb, as_version=4)
    body, _ = HTMLExporter().from_notebook_node(nb)
    out = ipynb.with_suffix(".html")
    with atomic_write(out) as fh:
        fh.write(body)
    return out


KERNEL_LOG = "kernel.log"
_SHUTDOWN_MARK = "--- dango_nb.report: the runner shuts the kernel down ---"
_INTERRUPT_LINE = re.compile(r"KeyboardInterrupt caught in (kernel|CFRunLoop)")
_ACTIVE_KERNELS: list = []  # kernel managers of the notebook now running (killed on interrupt)


def _kernel_manager_class(log_path: Path):
    """A jupyter_client kernel manager whose kernel writes its own log (stderr) to ``log_path`` and
    that does not interrupt the kernel when shutting it down.

    ``KernelManager.shutdown_kernel`` sends SIGINT to the kernel's process group before its shutdown
    request, to break a busy kernel. papermill shuts the kernel down right after the reply to its last
    ``kernel_info_request``, while the kernel may still be inside that message handler, where ipykernel
    has put the default SIGINT handler back: the signal then logs ``KeyboardInterrupt caught in
    kernel.`` although every cell finished. Here the kernel is idle at shutdown (a cell past
    ``--timeout`` is interrupted by nbclient before), so the interrupt is skipped; a run stopped by
    the user kills the kernel instead.
    """
    from jupyter_client.manager import AsyncKernelManager

    class ReportKernelManager(AsyncKernelManager):
        async def _async_launch_kernel(self, kernel_cmd, **kw):
            self._report_log = open(log_path, "ab")
            kw["stderr"] = self._report_log
            _ACTIVE_KERNELS.append(self)
            await super()._async_launch_kernel(kernel_cmd, **kw)

        async def _async_shutdown_kernel(self, now: bool = False, restart: bool = False) -> None:
            with contextlib.suppress(OSError), open(log_path, "a", encoding="utf-8") as fh:
                fh.write(f"\n{_SHUTDOWN_MARK}\n")
            try:
                await super()._async_shutdown_kernel(now=now, restart=restart)
            finally:
                with contextlib.suppress(ValueError):
                    _ACTIVE_KERNELS.remove(self)
                with contextlib.suppress(Exception):
                    self._report_log.close()

        async def _async_interrupt_kernel(self) -> None:
            if self.shutting_down:
                return
            await super()._async_interrupt_kernel()

        # AsyncKernelManager binds these names to the base class's coroutines
        shutdown_kernel = _async_shutdown_kernel
        interrupt_kernel = _async_interrupt_kernel

    return ReportKernelManager


def _kill_active_kernels() -> None:
    for km in list(_ACTIVE_KERNELS):
        prov = getattr(km, "provisioner", None)
        pgid = getattr(prov, "pgid", None)
        with contextlib.suppress(Exception):
            if pgid:
                os.killpg(pgid, signal.SIGKILL)
            elif getattr(prov, "process", None) is not None:
                prov.process.kill()
        with contextlib.suppress(ValueError):
            _ACTIVE_KERNELS.remove(km)


def kernel_interrupts(log_path: Path) -> list[str]:
    """Lines of a kernel log that report a KeyboardInterrupt while cells were still running
    (before the runner's shutdown mark)."""
    if not log_path.is_file():
        return []
    text = log_path.read_text(encoding="utf-8", errors="replace").split(_SHUTDOWN_MARK)[0]
    return [ln.strip() for ln in text.splitlines() if _INTERRUPT_LINE.search(ln)]


def _build_dir(out_root: Path, name: str) -> Path:
    return out_root / f".{name}.run-{os.getpid()}"


def _failed_dir(out_root: Path, name: str) -> Path:
    return out_root / f"{name}.failed"


def _remove_tree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _replace_dir(new: Path, target: Path) -> None:
    """Put folder ``new`` at ``target``; an existing ``target`` is removed only once ``new`` is there."""
    if not target.exists():
        os.rename(new, target)
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    _remove_tree(old)
    os.rename(target, old)
    try:
        os.rename(new, target)
    except BaseException:
        os.rename(old, target)
        raise
    try:
        _remove_tree(old)
    except OSError as err:
        print(f"warning: could not remove the replaced output {old}: {err}", file=sys.stderr)


def _carry_runs(sources: Sequence[Path], build: Path) -> None:
    """Complete run folders of earlier outputs (``<run>/runs/<id>/``, then those of a failed attempt)
    go into the new build as hard links (a copy where links fail): the notebook's fits find them and
    train again only those whose recorded parameters differ (run folders are never changed in place,
    so the links are safe)."""
    from .runs.folder import is_complete

    for source in sources:
        runs = source / "runs"
        if not runs.is_dir() or runs.is_symlink():
            continue
        for folder in sorted(runs.iterdir()):
            target = build / "runs" / folder.name
            if folder.is_dir() and not folder.is_symlink() and is_complete(folder) and not target.exists():
                try:
                    shutil.copytree(folder, target, copy_function=os.link)
                except (OSError, shutil.Error):
                    _remove_tree(target)
                    shutil.copytree(folder, target)


def _rewrite_paths(ipynb: Path, build: Path, final: Path) -> None:
    """The executed notebook names its folder as it will be found: ``final``, not the build folder."""
    text = ipynb.read_text(encoding="utf-8")
    if str(build) in text:
        with atomic_write(ipynb) as fh:
            fh.write(text.replace(str(build), str(final)))


def run_notebook(stem: str, params_file: Path, out_root: Path, kernel: str,
                 timeout: int | None = None, nb_dir: Path | None = None,
                 log_output: bool = False, progress: bool = False) -> RunResult:
    """Execute one notebook and, only if it succeeds, make its folder ``out_root/<run>/``.

    The notebook runs in a new folder ``out_root/.<run>.run-<pid>/`` (a sibling, so the notebooks
    find ``lambda_determination/`` beside it); on success it replaces ``<run>/``, on failure
    ``<run>/`` is left as it was and the attempt is kept as ``<run>.failed/``.
    """
    import papermill as pm

    name = run_name(stem)
    nb_dir = nb_dir or notebook_dir()
    src = nb_dir / f"{stem}.ipynb"
    final = out_root / name
    build = _build_dir(out_root, name)
    _remove_tree(build)
    build.mkdir(parents=True)
    _carry_runs([final, _failed_dir(out_root, name)], build)
    res = RunResult(name, str(src), "running")
    write_run_record(stem, params_file, build)
    t0 = time.perf_counter()
    out_nb = build / f"{stem}.ipynb"
    log_path = build / KERNEL_LOG
    try:
        try:
            pm.execute_notebook(str(src), str(out_nb), kernel_name=kernel, language="python", cwd=str(nb_dir),
                                parameters={"params_file": str(params_file.resolve()),
                                            "report_dir": str(build.resolve())},
                                progress_bar={"desc": f"[report] {name}", "disable": None} if progress else False,
                                log_output=log_output, execution_timeout=timeout,
                                kernel_manager_class=_kernel_manager_class(log_path),
                                interrupt_on_timeout=True)
        except Exception as err:
            res.status, res.error = "failed", _error_text(err, timeout)
        else:
            res.status = "ok"
    except BaseException:
        _kill_active_kernels()
        _finish_failed(res, build, final, out_root, "interrupted")
        raise
    finally:
        res.seconds = round(time.perf_counter() - t0, 1)
    if out_nb.is_file():
        with contextlib.suppress(OSError, UnicodeDecodeError):
            _rewrite_paths(out_nb, build.resolve(), final.resolve())
        try:
            export_html(out_nb)
        except Exception as err:
            print(f"warning: HTML export of {out_nb} failed: {err}", file=sys.stderr)
    interrupts = kernel_interrupts(log_path)
    if res.status == "ok" and interrupts:
        res.status, res.error = "failed", ("the kernel was interrupted while the notebook ran "
                                           f"(see {KERNEL_LOG}): " + "; ".join(interrupts))
    if res.status == "ok" and read_summary(build) is None:
        res.status, res.error = "failed", f"{src.name} finished without writing {SUMMARY_NAME}"
    if res.status == "ok":
        try:
            _replace_dir(build, final)
        except OSError as err:
            res.status, res.error = "failed", f"could not replace {final} by the new output: {err}"
    if res.status == "ok":
        _describe(res, final, out_root, stem)
        _remove_tree(_failed_dir(out_root, name))  # an earlier failed attempt is now out of date
    else:
        _finish_failed(res, build, final, out_root, res.status)
    return res


def _describe(res: RunResult, folder: Path, out_root: Path, stem: str) -> None:
    rel = lambda p: str(p.relative_to(out_root))
    res.folder = rel(folder)
    nb, page = folder / f"{stem}.ipynb", folder / f"{stem}.html"
    res.ipynb = rel(nb) if nb.is_file() else None
    res.html = rel(page) if page.is_file() else None
    res.figures = sorted(rel(p) for p in folder.rglob("*.png") if "runs" not in p.relative_to(folder).parts)
    res.params = rel(folder / PARAMS_NAME) if (folder / PARAMS_NAME).is_file() else None
    res.provenance = rel(folder / PROVENANCE_NAME) if (folder / PROVENANCE_NAME).is_file() else None
    res.summary = read_summary(folder)


def _finish_failed(res: RunResult, build: Path, final: Path, out_root: Path, status: str) -> None:
    """Keep a failed or interrupted attempt as ``<run>.failed/`` and say where both folders are."""
    res.status = status
    stem = Path(res.notebook).stem
    failed = _failed_dir(out_root, res.name)
    try:
        if build.exists():
            _replace_dir(build, failed)
            _describe(res, failed, out_root, stem)
    except OSError as err:
        print(f"warning: could not move the failed attempt {build} to {failed}: {err}", file=sys.stderr)
        if build.exists():
            _describe(res, build, out_root, stem)
    res.summary = None if status != "ok" else res.summary
    if final.is_dir():
        res.previous = str(final.relative_to(out_root))
    where = f"; this attempt is kept in {out_root / res.folder}" if res.folder else ""
    kept = (f"; the previous output in {final} is unchanged" if res.previous
            else f"; {final} was not created")
    note = f"[{status}{where}{kept}]"
    res.error = f"{res.error}\n{note}" if res.error else note


def _check_devices(params: dict, folder: str | os.PathLike) -> None:
    """Each notebook's ``train.device`` / ``train.precision`` must be available on this machine."""
    from .train.device import check_device

    for stem, p in params.items():
        train = getattr(p, "train", None)
        if train is not None:
            try:
                check_device(train.device, train.precision)
            except ValueError as err:
                raise ParamsError(f"{Path(folder) / (stem + '.yaml')}: {err}") from None


def run_report(params_dir: str | os.PathLike, out: str | os.PathLike, only: Sequence[str] | None = None,
               kernel: str | None = None, timeout: int | None = None, nb_dir: Path | None = None,
               log=None, threads: int | None = None, log_output: bool = False,
               progress: bool = False) -> tuple[list[RunResult], dict]:
    """Validate ``params_dir``, take the report folder's lock, run the notebooks, write the index and
    summaries (rewritten after every notebook, so they always say how far the run got)."""
    # absolute: papermill changes the working directory to the notebooks' folder while one runs
    params_dir, out = Path(params_dir).resolve(), Path(out).resolve()
    log = log or (lambda *a: print(*a, flush=True))
    stems = list(NOTEBOOKS)
    if only:
        wanted = set(only)
        bad = wanted - set(stems) - {run_name(s) for s in stems}
        if bad:
            raise ParamsError(f"--only: unknown notebook(s) {sorted(bad)}; choose from "
                              f"{', '.join(run_name(s) for s in stems)}")
        stems = [s for s in stems if s in wanted or run_name(s) in wanted]
    _check_devices(load_param_dir(params_dir, tuple(stems)), params_dir)  # everything validated before any work
    nb_dir = Path(nb_dir) if nb_dir is not None else notebook_dir()
    missing = [f"{s}.ipynb" for s in stems if not (nb_dir / f"{s}.ipynb").is_file()]
    if missing:
        raise ParamsError(f"{nb_dir}: notebook(s) {', '.join(missing)} not found (use --notebooks DIR)")
    kernel = kernel or pick_kernel()
    out = check_output_folder(out, REPORT_COMMAND, shared=SHARED_REPORT_ENTRIES)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ReportError(f"{out}: cannot create the report folder: {err.strerror or err}") from None
    with report_lock(out, log), _thread_env(threads):
        check_output_folder(out, REPORT_COMMAND, shared=SHARED_REPORT_ENTRIES)
        write_owner(out, REPORT_COMMAND)
        return _run_all(stems, params_dir, out, kernel, timeout, nb_dir, log, log_output, progress)


LOCK_NAME = ".report.lock"


@contextlib.contextmanager
def report_lock(out: Path, log=print):
    """Hold ``<out>/.report.lock`` (:func:`dango_nb.fileio.folder_lock`: pid and start time inside, released
    by the system however the holder ends) while a report is written into ``out``; a second run fails
    at once (:class:`~dango_nb.errors.OutputFolderError` naming the holder's pid). Build folders of a
    killed run are removed once the lock is held."""
    with folder_lock(out, out / LOCK_NAME) as path:
        for stale in out.glob(".*.run-*"):  # build folders of a run that was killed
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
        yield path


@contextlib.contextmanager
def _thread_env(threads: int | None):
    """Thread variables the kernels inherit: ``threads`` when given, else 1 where not set."""
    saved = {k: os.environ.get(k) for k in _THREAD_VARS}
    try:
        for k in _THREAD_VARS:
            if threads is not None:
                os.environ[k] = str(int(threads))
            else:
                os.environ.setdefault(k, "1")
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run_all(stems, params_dir: Path, out: Path, kernel: str, timeout, nb_dir, log,
             log_output: bool = False, progress: bool = False):
    started = _dt.datetime.now()
    t0 = time.perf_counter()
    params_dir = Path(params_dir)
    results = [RunResult(run_name(s), str(nb_dir / f"{s}.ipynb"), "pending") for s in stems]
    for r in results:
        if (out / r.name).is_dir():
            r.previous = r.name
    summary = {
        "started": started.isoformat(timespec="seconds"),
        "finished": None,
        "state": "running",
        "pid": os.getpid(),
        "wall_s": 0.0,
        "params_dir": str(params_dir.resolve()),
        "kernel": kernel,
        "threads": os.environ.get("OMP_NUM_THREADS"),
        "ok": False,
        "runs": [],
    }

    def publish():
        summary["wall_s"] = round(time.perf_counter() - t0, 1)
        summary["runs"] = [r.to_dict() for r in results]
        write_outputs(summary, out)

    publish()
    status: dict[str, str] = {}
    try:
        for i, stem in enumerate(stems):
            name = run_name(stem)
            blocked = [d for d in DEPENDS_ON.get(name, ()) if status.get(d, "ok") != "ok"
                       or (d not in status and not (out / d / SUMMARY_NAME).is_file())]
            if blocked:
                results[i].status = "skipped"
                results[i].error = f"skipped: needs {', '.join(blocked)}, which did not succeed"
                log(f"[report] {name}: {results[i].error}")
            else:
                log(f"[report] {name}: running {stem}.ipynb (kernel {kernel}) ...")
                results[i].status = "running"
                publish()
                results[i] = run_notebook(stem, params_dir / f"{stem}.yaml", out, kernel, timeout, nb_dir,
                                          log_output=log_output, progress=progress)
                log(f"[report] {name}: {results[i].status} in {results[i].seconds:.1f} s")
                if results[i].status != "ok":
                    log(f"[report] {name} FAILED: {results[i].error}")
            status[name] = results[i].status
            publish()
    except BaseException:
        for r in results:
            if r.status in ("running", "pending"):
                r.status = "interrupted" if r.status == "running" else "not run"
        summary["state"] = "interrupted"
        summary["finished"] = _dt.datetime.now().isoformat(timespec="seconds")
        publish()
        raise
    summary["ok"] = all(r.status == "ok" for r in results)
    summary["state"] = "ok" if summary["ok"] else "failed"
    summary["finished"] = _dt.datetime.now().isoformat(timespec="seconds")
    publish()
    return results, summary


def write_outputs(summary: Mapping, out: Path) -> None:
    """``summary.json``, ``summary.md`` and ``index.html`` of the report folder."""
    atomic_write_json(summary, out / "summary.json")
    with atomic_write(out / "summary.md") as fh:
        fh.write(summary_markdown(summary, out))
    write_index(summary, out / "index.html")


# -------------------------------------------------------------------------------------- output
def _scalar(v: Any) -> str:
    if isinstance(v, (list, tuple)):  # e.g. one value per seed
        return ", ".join(_scalar(x) for x in v)
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"  # undefined (null in the JSON)
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _is_table(v: Any) -> bool:
    return isinstance(v, Mapping) and set(v) == {"columns", "rows"}


def _html_value(v: Any) -> str:
    if _is_table(v):
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in v["columns"])
        body = "".join("<tr>" + "".join(f"<td>{html.escape(_scalar(x))}</td>" for x in row) + "</tr>"
                       for row in v["rows"])
        return f"<table><tr>{head}</tr>{body}</table>"
    if isinstance(v, Mapping):
        return "<table>" + "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_html_value(x)}</td></tr>"
                                   for k, x in v.items()) + "</table>"
    if isinstance(v, (list, tuple)):
        return html.escape(", ".join(_scalar(x) for x in v))
    return html.escape(_scalar(v))


def _md_value(k: str, v: Any) -> str:
    if _is_table(v):
        lines = [f"**{k}**", "", "| " + " | ".join(map(str, v["columns"])) + " |",
                 "|" + "---|" * len(v["columns"])]
        lines += ["| " + " | ".join(_scalar(x) for x in row) + " |" for row in v["rows"]]
        return "\n".join(lines) + "\n"
    if isinstance(v, Mapping):
        return f"**{k}**\n\n" + "\n".join(f"- {a}: {_scalar(b)}" for a, b in v.items()) + "\n"
    return f"- **{k}**: {_scalar(v)}"


def _state_text(summary: Mapping) -> str:
    state = summary.get("state", "ok" if summary.get("ok") else "failed")
    done = sum(r["status"] == "ok" for r in summary["runs"])
    total = len(summary["runs"])
    if state == "running":
        return (f"RUNNING (pid {summary.get('pid')}): {done}/{total} notebooks done so far; "
                f"this page is rewritten after every notebook")
    if state == "interrupted":
        return f"INTERRUPTED at {summary.get('finished')}: {done}/{total} notebooks ok"
    if state == "ok":
        return f"all notebooks succeeded ({done}/{total})"
    return f"SOME NOTEBOOKS FAILED ({done}/{total} ok)"


def _existing(root: Path | None, rel: str | None) -> str | None:
    """``rel`` if that file or folder exists under ``root`` (links only to what is there)."""
    if not rel:
        return None
    return rel if root is None or (root / rel).exists() else None


def summary_markdown(summary: Mapping, root: Path | None = None) -> str:
    out = [f"# dango_nb report ({summary['started']})", "",
           f"Parameters: `{summary['params_dir']}`; kernel `{summary['kernel']}`; "
           f"total {summary['wall_s']:.1f} s; {_state_text(summary)}.",
           ""]
    if any((r.get("summary") or {}).get("synthetic") for r in summary["runs"]):
        out += ["**Results marked synthetic come from the embedded SYNTHETIC benchmark, not from real "
                "STRING / Kuzmin data.**", ""]
    for r in summary["runs"]:
        out += [f"## {r['name']}: {r['status']} ({r['seconds']:.1f} s)", ""]
        page = _existing(root, r.get("html"))
        if page:
            out.append(f"Report: [{page}]({page})\n")
        rec = [f"[{k}]({v})" for k, v in (("params", _existing(root, r.get("params"))),
                                          ("provenance", _existing(root, r.get("provenance")))) if v]
        if rec:
            out.append("Resolved " + " · ".join(rec) + "\n")
        prev = _existing(root, r.get("previous"))
        if prev and r["status"] != "ok":
            out.append(f"Previous successful output (kept): [{prev}/]({prev}/)\n")
        if r.get("error"):
            out += ["```", r["error"][-3000:], "```", ""]
        s = r.get("summary") or {}
        meta = [_md_value(k, v) for k, v in s.items() if k != "numbers"]
        if meta:
            out += meta + [""]
        for k, v in (s.get("numbers") or {}).items():
            out += [_md_value(k, v), ""]
    return "\n".join(out) + "\n"


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.4em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:90%;text-align:left}
.ok{color:#176f2c}.failed,.skipped,.interrupted{color:#b00020}.running,.pending{color:#8a6d00}
pre{background:#f6f6f6;padding:8px;overflow:auto;max-height:25em}
img.thumb{height:170px;margin:4px;border:1px solid #ddd}section{border-top:2px solid #eee;margin-top:1.5em}
"""


def write_index(summary: Mapping, path: Path) -> Path:
    """``index.html``: every run, its status, links (only to files that exist), key numbers and
    figure thumbnails."""
    root = Path(path).parent
    esc = html.escape
    state = summary.get("state", "ok" if summary.get("ok") else "failed")
    refresh = "<meta http-equiv='refresh' content='30'>" if state == "running" else ""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'>{refresh}<title>dango_nb report</title>"
             f"<style>{_CSS}</style></head><body><h1>dango_nb report</h1>",
             f"<p class='{esc(state)}'><b>{esc(_state_text(summary))}</b></p>",
             f"<p>Started {esc(summary['started'])}; parameters <code>{esc(summary['params_dir'])}"
             f"</code>; kernel <code>{esc(summary['kernel'])}</code>; total {summary['wall_s']:.1f} s. "
             f"<a href='summary.md'>summary.md</a> · <a href='summary.json'>summary.json</a></p>",
             "<table><tr><th>run</th><th>status</th><th>time (s)</th><th>report</th><th>notebook</th>"
             "<th>params</th><th>provenance</th><th>previous output</th></tr>"]
    if any((r.get("summary") or {}).get("synthetic") for r in summary["runs"]):
        parts.insert(3, "<p class='failed'><b>Results marked synthetic come from the embedded SYNTHETIC "
                        "benchmark, not from real STRING / Kuzmin data.</b></p>")
    for r in summary["runs"]:
        page, nb = _existing(root, r.get("html")), _existing(root, r.get("ipynb"))
        prev = _existing(root, r.get("previous")) if r["status"] != "ok" else None
        link = f"<a href='{esc(page)}'>HTML</a>" if page else ""
        nbl = f"<a href='{esc(nb)}'>.ipynb</a>" if nb else ""
        prevl = f"<a href='{esc(prev)}/'>{esc(prev)}/ (kept)</a>" if prev else ""
        par, prov = _existing(root, r.get("params")), _existing(root, r.get("provenance"))
        parl = f"<a href='{esc(par)}'>params.yaml</a>" if par else ""
        provl = f"<a href='{esc(prov)}'>provenance.json</a>" if prov else ""
        parts.append(f"<tr><td><a href='#{r['name']}'>{r['name']}</a></td><td class='{esc(r['status'])}'>"
                     f"{esc(r['status'])}</td><td>{r['seconds']:.1f}</td><td>{link}</td><td>{nbl}</td>"
                     f"<td>{parl}</td><td>{provl}</td><td>{prevl}</td></tr>")
    parts.append("</table>")
    for r in summary["runs"]:
        parts.append(f"<section id='{r['name']}'><h2>{r['name']} <span class='{esc(r['status'])}'>"
                     f"({esc(r['status'])})</span></h2>")
        if r.get("error"):
            parts.append(f"<pre>{esc(r['error'][-5000:])}</pre>")
        s = r.get("summary") or {}
        meta = {k: v for k, v in s.items() if k != "numbers"}
        if meta:
            parts.append(_html_value(meta))
        for k, v in (s.get("numbers") or {}).items():
            parts.append(f"<h3>{esc(k)}</h3>{_html_value(v)}")
        for fig in r.get("figures", []):
            if _existing(root, fig):
                parts.append(f"<a href='{esc(fig)}' title='{esc(fig)}'>"
                             f"<img class='thumb' src='{esc(fig)}' alt='{esc(fig)}'></a>")
        parts.append("</section>")
    parts.append("</body></html>\n")
    with atomic_write(path) as fh:
        fh.write("\n".join(parts))
    return path


_EXIT_ON_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}


def _raise_interrupted(signum, frame):
    raise ReportInterrupted(signum)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dango_nb.report", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params", help="parameter directory (one YAML per notebook)")
    ap.add_argument("--out", default="reports", help="report directory")
    ap.add_argument("--only", nargs="+", metavar="RUN", help="run only these notebooks "
                    "(lambda_determination pretraining loss_schedules evaluation)")
    ap.add_argument("--kernel", default=None, help="Jupyter kernel (default: dango_nb if registered, else python3)")
    ap.add_argument("--timeout", type=int, default=None, help="per-cell timeout in seconds")
    ap.add_argument("--notebooks", default=None, help="folder holding the notebooks (default: the repository's notebooks/)")
    ap.add_argument("--threads", type=int, default=None,
                    help="OMP/MKL threads of the kernels (default: as set in the environment, else 1)")
    ap.add_argument("--quiet", action="store_true",
                    help="do not echo the notebooks' output (by default every cell's output is echoed "
                         "as it runs, and a progress bar is shown on a terminal)")
    args = ap.parse_args(argv)
    if not args.quiet:
        _echo_cell_output()
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        handlers = {s: signal.signal(s, _raise_interrupted) for s in _EXIT_ON_SIGNAL}
    try:
        results, summary = run_report(args.params, args.out, args.only, args.kernel, args.timeout,
                                      nb_dir=Path(args.notebooks) if args.notebooks else None,
                                      threads=args.threads, log_output=not args.quiet,
                                      progress=not args.quiet)
    except (OutputFolderError, ParamsError, ReportError) as err:
        print(f"{ap.prog}: error: {err}", file=sys.stderr)
        return 2
    except (ReportInterrupted, KeyboardInterrupt) as err:
        signum = err.signum if isinstance(err, ReportInterrupted) else signal.SIGINT
        print(f"\n[report] interrupted by {signal.Signals(signum).name}; the kernel was stopped, earlier "
              f"outputs are kept; {Path(args.out) / 'index.html'} says what was done", file=sys.stderr)
        return _EXIT_ON_SIGNAL.get(signum, 130)
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    for r in results:
        if r.status != "ok":
            print(f"\n=== {r.name} {r.status.upper()} ===\n{r.error}", file=sys.stderr)
    print(f"[report] {sum(r.status == 'ok' for r in results)}/{len(results)} notebooks ok in "
          f"{summary['wall_s']:.1f} s; open {Path(args.out) / 'index.html'}")
    return 0 if summary["ok"] else 1


def _echo_cell_output() -> None:
    """papermill's ``log_output`` goes through the ``papermill`` logger: print it, indented."""
    import logging

    logger = logging.getLogger("papermill")
    if not any(getattr(h, "_dango_report", False) for h in logger.handlers):
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("    | %(message)s"))
        h._dango_report = True
        logger.addHandler(h)
    logger.setLevel(logging.INFO)


if __name__ == "__main__":
    sys.exit(main())
