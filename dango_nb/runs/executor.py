"""Run many fits as Ray tasks (or one after another in this process) into run folders.

:func:`run_many` is the one entry point: the sweep command and an evaluation runner submit a list
of :class:`~dango_nb.runs.sweep.RunSpec` (parameters + output folder) and get one
:class:`RunOutcome` per run back, in the order given.

- Ray: ``ray.init()`` inside the call when no Ray is running (a local instance with
  ``workers x cpus_per_run`` CPUs and this machine's GPUs, listening on loopback only), or ``address="auto"`` /
  ``"ray://HOST:10001"`` for a cluster. Each run is one task with ``num_cpus=cpus_per_run`` and
  ``num_gpus=gpus_per_run`` (0.25: four fits share a GPU); torch uses ``cpus_per_run`` threads.
  At most ``workers`` tasks are in flight, also on a cluster.
- Faults: a task whose worker process dies is retried by Ray (``max_retries``) and resumes from
  the run's last checkpoint; a run that keeps failing, or raises, is reported with its error while
  the other runs finish. A complete run folder is skipped. On Ctrl-C the pending tasks are
  cancelled; finished run folders stay complete and unfinished ones resume on the next call.
- Progress: one bar over runs; its postfix shows each running run's epoch (read from the run's
  ``progress.json``, so it works on one machine or on a cluster with a shared file system).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import ParamsError
from ..fileio import differences, differences_text, read_json, to_strict_json
from .folder import check_same_request, is_complete, partial_path, read_progress, request_of, train_run
from .sweep import RunSpec

__all__ = ["RunOutcome", "check_complete_runs", "run_many", "ray_session"]

#: The command that owns sweep folders (:func:`dango_nb.fileio.check_output_folder`).
SWEEP_COMMAND = "dango-nb sweep"

log = logging.getLogger(__name__)

#: The node address of a Ray started here (loopback: reachable from this machine only).
LOCAL_NODE_IP = "127.0.0.1"


@dataclass
class RunOutcome:
    """What became of one run: ``status`` is ``"done"``, ``"skipped"`` (complete before),
    ``"failed"`` (``error`` says why) or ``"interrupted"``."""

    run_id: str
    path: Path
    status: str
    record: dict = field(default_factory=dict)
    error: str | None = None
    axes: dict = field(default_factory=dict)
    wall_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("done", "skipped")

    def folder(self):
        """The :class:`~dango_nb.runs.folder.RunFolder` (complete runs only)."""
        from .folder import RunFolder

        return RunFolder.open(self.path)


def _execute(params_mapping: dict, out: str, run_id: str, threads: int) -> dict:
    """Body of one task (runs in a Ray worker or in this process)."""
    import torch

    torch.set_num_threads(max(1, int(threads)))
    record = train_run(params_mapping, out, run_id=run_id, progress=False, threads=None)
    record["worker_pid"] = os.getpid()
    return record


@contextlib.contextmanager
def _loopback_node():
    """A local Ray reachable from this machine only. Its GCS, raylet, workers and agents listen on
    the node address when that is loopback and on every interface otherwise; on Linux ``ray.init``
    replaces a loopback ``_node_ip_address`` by the machine's routable address unless Ray runs in
    its single-machine mode (the one it uses on Windows and macOS: ``ENABLE_RAY_CLUSTER`` off).
    That mode is switched on while the node starts: in this process (the flag is read when the
    address is resolved) and in the environment the node's processes inherit."""
    from ray._private import ray_constants

    var = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR
    saved_flag, saved_env = ray_constants.ENABLE_RAY_CLUSTER, os.environ.get(var)
    ray_constants.ENABLE_RAY_CLUSTER = False
    os.environ[var] = "0"
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = saved_env


class ray_session:
    """Context manager: the running Ray (left running) or a new one (shut down on exit)."""

    def __init__(self, address: str | None = None, num_cpus: int | None = None, quiet: bool = True):
        self.address, self.num_cpus, self.quiet, self.started = address, num_cpus, quiet, False
        self.attempts = 0

    def __enter__(self):
        import ray

        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING if self.quiet else logging.INFO,
                                      "log_to_driver": not self.quiet}
            if self.address:
                kwargs["address"] = self.address
                if self.address.startswith("ray://"):
                    kwargs.pop("include_dashboard")
            else:
                kwargs["num_cpus"] = self.num_cpus
                kwargs["_node_ip_address"] = LOCAL_NODE_IP
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            # The raylet gives its agent processes ~15 s to write their port files by default; on a
            # loaded machine (measured: a shared 2-core CPU at load 13) they need longer and the
            # raylet aborts ("Timed out waiting for file .../metrics_agent_port_...").
            os.environ.setdefault("RAY_raylet_start_wait_time_s", "120")
            os.environ.setdefault("RAY_agent_register_timeout_ms", "120000")
            t0 = time.perf_counter()
            with contextlib.nullcontext() if self.address else _loopback_node():
                for attempt in range(3):
                    self.attempts = attempt + 1
                    try:
                        ray.init(**kwargs)
                        break
                    except Exception as err:
                        # Ray waits a fixed 30 s for its raylet; on a loaded machine (measured on a
                        # shared 2-core CPU) the first start can miss that, a second one succeeds.
                        if self.address or "timed out during startup" not in str(err) or attempt == 2:
                            raise
                        log.warning("local Ray did not start in time (%s); trying again", err)
                        ray.shutdown()
            self.init_s = time.perf_counter() - t0
            self.started = True
        else:
            self.init_s = 0.0
        return ray

    def __exit__(self, *exc):
        import ray

        if self.started:
            ray.shutdown()
        return False


def _outcome_from_record(spec: RunSpec, record: dict, wall_s: float | None = None) -> RunOutcome:
    status = "skipped" if record.get("skipped") else "done"
    return RunOutcome(spec.run_id, Path(spec.out), status, record, None, dict(spec.axes), wall_s)


def _error_text(err: BaseException) -> str:
    cause = getattr(err, "cause", None)
    if cause is not None and not isinstance(cause, type(err)):
        return f"{type(cause).__name__}: {cause}"
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[-1] if text else ''}"


def _bar(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="runs", unit="run", dynamic_ncols=True, file=sys.stderr)


def _postfix(bar, running: dict[str, RunSpec]) -> None:
    if bar is None:
        return
    parts = []
    for rid, spec in list(running.items())[:4]:
        p = read_progress(spec.out)
        parts.append(f"{rid[:28]} {p['epoch']}/{p['epochs']}" if p else f"{rid[:28]} start")
    bar.set_postfix_str(" | ".join(parts), refresh=True)


def check_complete_runs(specs: Sequence[RunSpec]) -> None:
    """:class:`~dango_nb.errors.ParamsError` when a spec's folder is a complete run made with other
    parameters (before anything is written), or when an unfinished attempt of it (``.<name>.partial``) was
    started with other parameters."""
    for spec in specs:
        if is_complete(spec.out):
            check_same_request(Path(spec.out), request_of(spec.params))
            continue
        partial = partial_path(spec.out)  # an interrupted run: its recorded request (train_run resumes it)
        try:
            recorded = read_json(partial / "request.json")
        except (OSError, ValueError):  # none, or killed before it was written: nothing to resume
            continue
        diff = differences(recorded, to_strict_json(request_of(spec.params)))
        if diff:
            raise ParamsError(f"{spec.out}: an unfinished run of this folder ({partial.name}) was started with "
                              f"other parameters ({differences_text(diff)}); give another --out, or remove {partial} "
                              "to start the run again")


def run_many(specs: Sequence[RunSpec], *, workers: int | None = None, address: str | None = None,
             gpus_per_run: float = 0.0, cpus_per_run: int = 1, max_retries: int = 2, backend: str = "ray",
             progress: bool = True, on_result: Callable[[RunOutcome], None] | None = None,
             poll_s: float = 0.5) -> list[RunOutcome]:
    """Train every spec into its run folder (``spec.out``); one outcome per spec, in order.

    Args:
        workers: runs at the same time (default: this machine's CPUs // ``cpus_per_run`` locally,
            the cluster's CPUs // ``cpus_per_run`` with ``address``).
        address: ``None`` (a local Ray started here unless one is running), ``"auto"`` or
            ``"ray://HOST:10001"``.
        gpus_per_run: GPUs per task (fractions share a GPU; ``train.device: auto`` then uses it).
        max_retries: Ray retries of a task whose worker died.
        backend: ``"ray"`` or ``"inline"`` (one after another in this process, no Ray).
        on_result: called with each finished outcome (also for skipped runs).
    """
    if backend not in ("ray", "inline"):
        raise ValueError(f"backend must be 'ray' or 'inline', got {backend!r}")
    # bounds up front: 0 workers would wait forever for a free slot, a negative count never starts
    for name, value, low in (("workers", workers, 1), ("cpus_per_run", cpus_per_run, 1), ("max_retries", max_retries, 0)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if isinstance(gpus_per_run, bool) or not isinstance(gpus_per_run, (int, float)) or not 0 <= gpus_per_run < float("inf"):
        raise ValueError(f"gpus_per_run must be a finite number >= 0, got {gpus_per_run!r}")
    for s in specs:
        if s.out is None:
            raise ValueError(f"run {s.run_id!r} has no output folder (RunSpec.out)")
    ids = [str(Path(s.out).resolve()) for s in specs]
    if len(set(ids)) != len(ids):
        raise ValueError("two runs share one output folder")
    outcomes: dict[int, RunOutcome] = {}
    todo: list[int] = []
    check_complete_runs(specs)  # a mismatch fails before any work
    for i, spec in enumerate(specs):
        if is_complete(spec.out):
            outcomes[i] = _outcome_from_record(spec, {**read_json(Path(spec.out) / "run.json"), "skipped": True})
            if on_result is not None:
                on_result(outcomes[i])
        else:
            todo.append(i)
    bar = _bar(len(specs), len(specs) - len(todo), progress)

    def finish(i: int, outcome: RunOutcome) -> None:
        outcomes[i] = outcome
        if bar is not None:
            bar.update(1)
            if not outcome.ok:
                bar.write(f"run {outcome.run_id} {outcome.status}: {outcome.error}")
        if on_result is not None:
            on_result(outcome)

    try:
        if backend == "inline" or not todo:
            for i in todo:
                spec = specs[i]
                if bar is not None:
                    bar.set_postfix_str(spec.run_id[:40])
                t0 = time.perf_counter()
                try:
                    record = _execute(_mapping(spec), str(spec.out), spec.run_id, cpus_per_run)
                    finish(i, _outcome_from_record(spec, record, time.perf_counter() - t0))
                except KeyboardInterrupt:
                    raise
                except Exception as err:
                    log.debug("run %s failed:\n%s", spec.run_id, traceback.format_exc())
                    finish(i, RunOutcome(spec.run_id, Path(spec.out), "failed", {}, _error_text(err),
                                         dict(spec.axes), time.perf_counter() - t0))
        else:
            _run_ray(specs, todo, finish, workers=workers, address=address, gpus_per_run=gpus_per_run,
                     cpus_per_run=cpus_per_run, max_retries=max_retries, bar=bar, poll_s=poll_s)
    except KeyboardInterrupt:
        for i in todo:
            if i not in outcomes:
                s = specs[i]
                outcomes[i] = RunOutcome(s.run_id, Path(s.out), "interrupted", {}, "interrupted", dict(s.axes))
        raise
    finally:
        if bar is not None:
            bar.close()
    return [outcomes[i] for i in range(len(specs))]


def _mapping(spec: RunSpec) -> dict:
    from ..params import params_to_dict

    return params_to_dict(spec.params)


def _run_ray(specs, todo, finish, *, workers, address, gpus_per_run, cpus_per_run, max_retries, bar, poll_s):
    cpus_per_run = max(1, int(cpus_per_run))
    local_cpus = None if address else (workers or max(1, (os.cpu_count() or 1) // cpus_per_run)) * cpus_per_run
    with ray_session(address, local_cpus) as ray:
        if workers is None:
            workers = max(1, int(ray.cluster_resources().get("CPU", 1)) // cpus_per_run)
        task = ray.remote(_execute).options(num_cpus=cpus_per_run, num_gpus=gpus_per_run,
                                            max_retries=max_retries, retry_exceptions=False)
        queue = list(todo)
        inflight: dict[Any, tuple[int, float]] = {}
        running: dict[str, RunSpec] = {}
        try:
            while queue or inflight:
                while queue and len(inflight) < workers:
                    i = queue.pop(0)
                    spec = specs[i]
                    ref = task.remote(_mapping(spec), str(spec.out), spec.run_id, cpus_per_run)
                    inflight[ref] = (i, time.perf_counter())
                    running[spec.run_id] = spec
                ready, _ = ray.wait(list(inflight), num_returns=1, timeout=poll_s)
                for ref in ready:
                    i, t0 = inflight.pop(ref)
                    spec = specs[i]
                    running.pop(spec.run_id, None)
                    try:
                        record = ray.get(ref)
                        finish(i, _outcome_from_record(spec, record, time.perf_counter() - t0))
                    except ray.exceptions.RayError as err:
                        finish(i, RunOutcome(spec.run_id, Path(spec.out), "failed", {}, _error_text(err),
                                             dict(spec.axes), time.perf_counter() - t0))
                _postfix(bar, running)
        except KeyboardInterrupt:
            for ref in inflight:
                ray.cancel(ref, force=True)
            raise


# -------------------------------------------------------------------------------------- sweeps
@dataclass
class SweepResult:
    """A finished (or interrupted) sweep: the merged ``table``, the outcomes and the files written."""

    table: Any
    outcomes: list[RunOutcome]
    paths: dict
    folder: Path

    @property
    def failed(self) -> list[RunOutcome]:
        return [o for o in self.outcomes if not o.ok]


def sweep_specs(sweep, out: str | os.PathLike) -> list[RunSpec]:
    """The sweep's runs with their folders ``<out>/runs/<run_id>``."""
    root = Path(out) / "runs"
    return [RunSpec(r.run_id, dict(r.axes), r.params, root / r.run_id) for r in sweep.runs]


def run_sweep(sweep, out: str | os.PathLike, **kwargs) -> SweepResult:
    """Run every run of ``sweep`` (a :class:`~dango_nb.runs.sweep.Sweep` or a sweep file) into
    ``<out>/runs/<run_id>`` with :func:`run_many` (``kwargs``), then write ``results.csv``,
    ``results.parquet`` and ``figures/`` into ``out``. The sweep's definition (``sweep.yaml``) and the
    driver's provenance are written first. On Ctrl-C the results of the runs finished so far are
    written (the others as ``interrupted``) before the interrupt goes on."""
    import yaml

    from ..fileio import atomic_write, atomic_write_json, check_output_folder, owned_output_folder, to_strict_json
    from .provenance import provenance
    from .sweep import load_sweep

    if not hasattr(sweep, "runs"):
        sweep = load_sweep(sweep)
    out = check_output_folder(out, SWEEP_COMMAND)  # its real path: links and "." resolved, one lock per folder
    specs = sweep_specs(sweep, out)
    definition = to_strict_json({"source": sweep.source, **sweep.to_dict()})
    # checks first (the folder is a sweep's, its complete runs have these parameters), writes after;
    # a sweep may grow (new axis values), so the definition is recorded, not compared
    check_complete_runs(specs)
    with owned_output_folder(out, SWEEP_COMMAND, record=definition):
        check_complete_runs(specs)
        with atomic_write(out / "sweep.yaml") as fh:
            yaml.safe_dump(definition, fh, sort_keys=False)
        atomic_write_json(provenance(), out / "provenance.json")
        return _run_sweep_locked(sweep, specs, out, kwargs)


def _run_sweep_locked(sweep, specs, out: Path, kwargs: dict) -> SweepResult:
    from .results import results_table, write_results

    axes = sweep.columns
    done: dict[str, RunOutcome] = {}
    user_cb = kwargs.pop("on_result", None)

    def collect(o: RunOutcome) -> None:
        done[o.run_id] = o
        if user_cb is not None:
            user_cb(o)

    synthetic = not sweep.runs[0].params.data.real if sweep.runs else False
    try:
        outcomes = run_many(specs, on_result=collect, **kwargs)
    except KeyboardInterrupt:
        outcomes = [done.get(s.run_id) or RunOutcome(s.run_id, Path(s.out), "interrupted", {}, "interrupted",
                                                     dict(s.axes)) for s in specs]
        write_results(results_table(outcomes, axes), out, axes, synthetic=synthetic)
        raise
    table = results_table(outcomes, axes)
    paths = write_results(table, out, axes, synthetic=synthetic)
    return SweepResult(table, outcomes, dict(paths), out)
