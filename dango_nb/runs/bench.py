"""Benchmark of sweep execution (not a test): Ray start-up, per-task overhead, 1 vs 2 workers.

``python -m dango_nb.runs.bench [--sweep params/sweep.yaml] [--limit N] [--epochs E]`` runs the first
``N`` runs of the sweep three times into fresh folders: one after another in this process (no Ray),
on Ray with 1 worker and on Ray with 2 workers, and writes a JSON record:

- ``ray_start_s``: ``ray.init()`` of a local Ray inside the command;
- ``noop_task_ms``: round trip of an empty task on a warm worker (Ray's own per-task cost);
- ``wall_inline_s``, ``wall_ray1_s``, ``wall_ray2_s`` and ``speedup_2_vs_1`` (= ray1 / ray2);
- ``overhead_per_run_s``: what Ray adds per run outside the fits: (non-fit time with Ray, 1 worker)
  minus (non-fit time in process), over N; worker process start (torch import, data loading once
  per worker) included.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def _noop():
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dango_nb.runs.bench", description=__doc__.splitlines()[0])
    ap.add_argument("--sweep", default="params/sweep.yaml")
    ap.add_argument("--limit", type=int, default=None, help="first N runs of the sweep (default all)")
    ap.add_argument("--epochs", type=int, default=None, help="override train.epochs (shorter benchmark)")
    ap.add_argument("--out", default="reports/bench_sweep.json")
    args = ap.parse_args(argv)

    from .executor import ray_session, run_many, sweep_specs
    from ..fileio import atomic_write_json, to_strict_json
    from .sweep import load_sweep

    sweep = load_sweep(args.sweep)
    runs = sweep.runs[: args.limit] if args.limit else sweep.runs
    if args.epochs is not None:
        for r in runs:
            r.params.train = r.params.train.replace(epochs=args.epochs)
    sweep.runs = runs
    n = len(runs)
    rec: dict = {"sweep": args.sweep, "runs": n, "epochs": runs[0].params.train.epochs if runs else None,
                 "cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="dango_bench_sweep_") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        outs = run_many(sweep_specs(sweep, tmp / "inline"), backend="inline", progress=False, cpus_per_run=1)
        rec["wall_inline_s"] = time.perf_counter() - t0
        rec["fit_s_sum_inline"] = sum(o.record.get("fit_s", 0.0) for o in outs)
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        session = ray_session(num_cpus=2)
        t0 = time.perf_counter()
        with session as ray:
            rec["ray_start_s"] = time.perf_counter() - t0
            rec["ray_start_attempts"] = session.attempts
            noop = ray.remote(_noop)
            ray.get([noop.remote() for _ in range(4)])  # warm the workers
            t0 = time.perf_counter()
            for _ in range(20):
                ray.get(noop.remote())
            rec["noop_task_ms"] = (time.perf_counter() - t0) / 20 * 1000
            for workers in (1, 2):
                t0 = time.perf_counter()
                outs = run_many(sweep_specs(sweep, tmp / f"ray{workers}"), workers=workers, progress=False)
                rec[f"wall_ray{workers}_s"] = time.perf_counter() - t0
                rec[f"failed_ray{workers}"] = sum(not o.ok for o in outs)
                rec[f"fit_s_sum_ray{workers}"] = sum(o.record.get("fit_s", 0.0) for o in outs)
    rec["speedup_2_vs_1"] = rec["wall_ray1_s"] / rec["wall_ray2_s"]
    # Time outside the fits (data loading, metrics, writing the run folder, and for Ray the worker
    # start and scheduling): Ray's extra per run is the difference, which does not depend on how
    # fast the fits themselves ran (on a shared machine that varies between the passes).
    rec["overhead_per_run_s"] = ((rec["wall_ray1_s"] - rec["fit_s_sum_ray1"])
                                 - (rec["wall_inline_s"] - rec["fit_s_sum_inline"])) / max(n, 1)
    atomic_write_json(rec, args.out)
    print(json.dumps(to_strict_json(rec), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
