"""``make bench``: time one pre-training epoch and one training epoch on the ``kuzmin`` synthetic
preset (6,400 genes, STRING-v9.1-size channels, ~93k triplets) and write ``reports/bench.json``.

    python -m dango_nb.bench --out reports/bench.json [--preset kuzmin] [--threads 2] [--device auto]
                             [--epochs 1] [--batch-size 256] [--batch-sizes 256,1024] [--profile]

Idle OpenMP threads are set to sleep (``OMP_WAIT_POLICY=PASSIVE`` unless already set), which
keeps multi-threaded timings sane on a shared machine. The study is the embedded synthetic
benchmark, read back through the real-format loaders
(generated on the first run and cached in the data directory; ``data_load_s`` says how long
that took). Triplets are split 80/10/10 at random (seeded). ``train_epoch_s`` is the wall time of
the optimisation steps over all training triplets (loss schedule ``PaperTwoStage`` after its
transition, so every step trains both the interaction and the reconstruction loss, the most
expensive kind of step, timed by the training loop itself); the validation pass is timed
separately (``eval_s``). With ``--epochs
N`` the median epoch is reported and every epoch's time is kept. ``--profile`` adds the operators
that dominate a step of the training loop (``TrainingLoop.step``, torch.profiler) to the report.

Every run also reports the step's time split (``step_split_ms``: forward incl. losses, backward
incl. gradient clipping, optimiser) over a few further steps, timed with CUDA events on CUDA and
``perf_counter`` on the CPU, and on CUDA the peak GPU memory (``peak_cuda_gb``,
``torch.cuda.max_memory_allocated``). ``--batch-sizes 256,1024`` repeats the training epoch (and
the split) at each batch size (``by_batch_size``); the top-level numbers are those of the first.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import resource
import statistics
import sys
import time
import warnings

TARGETS = {"train_epoch_s": 30.0, "pretrain_epoch_s": 10.0, "peak_rss_gb": 4.0}
# TrainConfig's default and DANGO-paper-like; a step's cost scales with its batch (``Dango.forward(...,
# local=True)``), so small batches no longer pay for the whole graph every step.
DEFAULT_BATCH_SIZE = 256


def _peak_rss_gb() -> float:
    """Peak resident memory of this process in GiB (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 ** 3 if sys.platform == "darwin" else 1024 ** 2)


def _load_avg() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m dango_nb.bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="reports/bench.json", help="JSON report path (written atomically)")
    p.add_argument("--preset", default="kuzmin", help="synthetic preset: tiny, small or kuzmin")
    p.add_argument("--seed", type=int, default=0, help="benchmark, split and model seed")
    p.add_argument("--data-dir", default=None, help="where the benchmark files live (default: DANGO_DATA_DIR "
                                                      "or the user cache)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--epochs", type=int, default=1, help="timed epochs of each kind (median reported)")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="triplets per training step")
    p.add_argument("--batch-sizes", default=None,
                   help="comma-separated batch sizes to time the training epoch at (first = --batch-size)")
    p.add_argument("--split-steps", type=int, default=20, help="steps timed for the forward/backward/optimiser split")
    p.add_argument("--pretrain-batch-size", type=int, default=None,
                   help="genes per pre-training step (default: same as --batch-size)")
    p.add_argument("--hidden-channels", type=int, default=64)
    p.add_argument("--profile", action="store_true", help="profile a few training steps (torch.profiler)")
    args = p.parse_args(argv)
    if args.epochs < 1:
        p.error("--epochs must be at least 1")
    if args.batch_size < 1 or (args.pretrain_batch_size is not None and args.pretrain_batch_size < 1):
        p.error("batch sizes must be at least 1")
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be at least 1")
    if args.batch_sizes is not None:
        try:
            sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
        except ValueError:
            p.error(f"--batch-sizes: expected comma-separated integers, got {args.batch_sizes!r}")
        if not sizes or min(sizes) < 1:
            p.error("--batch-sizes: batch sizes must be at least 1")
        args.batch_size, args.batch_sizes = sizes[0], sizes
    else:
        args.batch_sizes = [args.batch_size]
    if args.split_steps < 1:
        p.error("--split-steps must be at least 1")
    return args


def _step_split(res, graph, train, config, lambdas, steps: int) -> dict[str, float]:
    """Mean milliseconds per step of the forward pass (with the losses), the backward pass (with
    gradient clipping) and the optimiser step, over ``steps`` steps of
    :meth:`~dango_nb.train.TrainingLoop.step` continuing from ``res.model``. CUDA events on CUDA
    (no sync between the phases), ``perf_counter`` on the CPU."""
    import torch

    from dango_nb.schedules import get_schedule
    from dango_nb.train import TrainingLoop, TripletEpochs

    cfg = config.replace(epochs=1, checkpoint_dir=None, progress=False)
    loop = TrainingLoop(graph, TripletEpochs(train), None, cfg, lambdas, get_schedule("PaperTwoStage", 0),
                        model=res.model)
    if loop.guard_every > 0:
        from dango_nb.train.loop import DeviceGuard

        loop.guard = DeviceGuard(loop.device, cfg.divergence_factor, loop.loss_reference)
    batches = loop.source.batches(loop.generator)
    loop.model.train()
    cuda = loop.device.type == "cuda"
    marks: list = []

    def timer(name: str) -> None:
        if cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            marks.append((name, ev))
        else:
            marks.append((name, time.perf_counter()))

    loop.step(next(batches), 0, 0, 1.0)  # warm-up
    totals = {"forward": 0.0, "backward": 0.0, "optimizer": 0.0}
    done = 0
    for i in range(steps):
        try:
            batch = next(batches)
        except StopIteration:
            break
        marks.clear()
        timer("start")
        loop.step(batch, 0, i + 1, 1.0, timer=timer)
        if cuda:
            marks[-1][1].synchronize()
            for (_, a), (name, b) in zip(marks, marks[1:]):
                totals[name] += a.elapsed_time(b)
        else:
            for (_, a), (name, b) in zip(marks, marks[1:]):
                totals[name] += (b - a) * 1000.0
        done += 1
    if loop.guard is not None:
        loop.guard.check(loop, 0)
    out = {k: v / max(done, 1) for k, v in totals.items()}
    out["total"] = sum(out.values())
    out["steps"] = done
    return out


def _profile_steps(res, graph, train, config, lambdas, steps: int = 5) -> list[dict]:
    """Self CPU (and CUDA) time per operator over ``steps`` of the training loop's own step
    (:meth:`dango_nb.train.TrainingLoop.step`), continuing from the trained model ``res.model``."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from dango_nb.train import TrainingLoop, TripletEpochs
    from dango_nb.schedules import get_schedule

    cfg = config.replace(epochs=1, checkpoint_dir=None, progress=False)
    loop = TrainingLoop(graph, TripletEpochs(train), None, cfg, lambdas, get_schedule("PaperTwoStage", 0),
                        model=res.model)
    batches = loop.source.batches(loop.generator)
    loop.model.train()

    def step(i: int):
        loop.step(next(batches), 0, i, 1.0)

    step(0)
    device = loop.device
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for i in range(steps):
            step(i + 1)
        if device.type == "cuda":
            torch.cuda.synchronize()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, key, 0.0), reverse=True)
    total = sum(getattr(e, key, 0.0) for e in events) or 1.0
    return [{"op": e.key, "ms_per_step": getattr(e, key) / 1000.0 / steps,
             "share": getattr(e, key) / total, "calls_per_step": e.count / steps} for e in events[:15]]


def main(argv=None) -> dict:
    args = _parse(argv)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    # Idle OpenMP threads sleep instead of spinning: on a machine shared with other processes a
    # spinning 2-thread run was measured 5x slower than with this policy. Only effective when torch
    # is first imported here (always so under ``python -m dango_nb.bench``).
    torch_loaded = "torch" in sys.modules
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)

    from dango_nb.data.study import benchmark_dir, load_study
    from dango_nb.fileio import atomic_write_json
    from dango_nb.eval.prediction import evaluate
    from dango_nb.train import TrainConfig, fit, pretrain, resolve_device

    device = resolve_device(args.device)
    load_before = _load_avg()
    cached = (benchmark_dir(args.preset, args.seed, args.data_dir) / "ground_truth.json").is_file()
    t0 = time.perf_counter()
    study = load_study(args.preset, seed=args.seed, data_dir=args.data_dir)
    data_load_s = time.perf_counter() - t0
    graph = study.cell_graph
    triplets = study.triplets
    n = len(triplets)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(args.seed))
    n_train, n_val = int(0.8 * n), int(0.1 * n)
    train = triplets.subset(perm[:n_train])
    val = triplets.subset(perm[n_train:n_train + n_val])
    lambdas = study.planted_lambdas()
    n_edges = int(sum(graph[et].edge_index.size(1) for et in graph.edge_types)) // 2
    model_kwargs = {"hidden_channels": args.hidden_channels}
    pre_bs = args.pretrain_batch_size or args.batch_size

    common = dict(device=str(device), seed=args.seed, progress=False, model=model_kwargs)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    # pre-training: reconstruction only, every gene's rows once per epoch
    t0, c0 = time.perf_counter(), time.process_time()
    pre = pretrain(graph, TrainConfig(epochs=args.epochs, batch_size=pre_bs, **common), lambdas)
    pre_total = time.perf_counter() - t0
    pre_cpu = time.process_time() - c0
    pre_times = pre.history["time_s"].tolist()
    setup_s = pre_total - sum(pre_times)  # model construction + sparse graph inputs (once per run)

    # training: both losses trained in every step
    runs = []
    for bs in args.batch_sizes:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        cfg = TrainConfig(epochs=args.epochs, batch_size=bs, schedule="PaperTwoStage",
                          transition_epoch=0, **common)
        c0 = time.process_time()
        res = fit(graph, train, None, cfg, lambdas)
        train_cpu = time.process_time() - c0
        train_times = res.history["time_s"].tolist()
        t0 = time.perf_counter()
        val_metrics = evaluate(res.model, graph, val, res.scaler)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        eval_s = time.perf_counter() - t0
        split = _step_split(res, graph, train, cfg, lambdas, args.split_steps)
        epoch_s = statistics.median(train_times)
        run = {"batch_size": bs, "train_epoch_s": epoch_s, "train_epoch_times_s": train_times,
               "train_steps_per_epoch": -(-len(train) // bs), "triplets_per_s": len(train) / epoch_s,
               "train_cpu_s_per_epoch": train_cpu / args.epochs, "eval_s": eval_s,
               "val_pearson_after_timed_epochs": val_metrics["pearson"], "step_split_ms": split,
               "peak_cuda_gb": (torch.cuda.max_memory_allocated(device) / 1024 ** 3
                                if device.type == "cuda" else None)}
        runs.append((run, res, cfg))
    first, res, cfg = runs[0]
    train_times, train_cpu, eval_s = first["train_epoch_times_s"], first["train_cpu_s_per_epoch"] * args.epochs, \
        first["eval_s"]
    val_metrics = {"pearson": first["val_pearson_after_timed_epochs"]}

    profile_top = None
    if args.profile:
        profile_top = _profile_steps(res, graph, train, cfg, lambdas)
    by_batch_size = [r for r, _, _ in runs]

    pretrain_epoch_s = statistics.median(pre_times)
    train_epoch_s = statistics.median(train_times)
    report = {
        "synthetic": bool(study.synthetic),
        "preset": args.preset,
        "seed": args.seed,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch_version": torch.__version__,
        "omp_wait_policy": None if torch_loaded else os.environ.get("OMP_WAIT_POLICY"),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        # 1-minute load average before/after: wall times above CPU times mean a busy machine
        "load_avg_1min": [load_before, _load_avg()],
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "n_genes": int(graph["gene"].num_nodes),
        "n_edges_undirected": n_edges,
        "n_channels": len(graph.edge_types),
        "n_triplets": n,
        "n_train": len(train),
        "n_val": len(val),
        "batch_size": args.batch_size,
        "pretrain_batch_size": pre_bs,
        "hidden_channels": args.hidden_channels,
        "epochs_timed": args.epochs,
        "data_load_s": data_load_s,
        "data_cached": cached,
        "setup_s": setup_s,
        "pretrain_epoch_s": pretrain_epoch_s,
        "pretrain_epoch_times_s": pre_times,
        "train_epoch_s": train_epoch_s,
        "train_epoch_times_s": train_times,
        "train_steps_per_epoch": -(-len(train) // args.batch_size),
        "pretrain_steps_per_epoch": -(-int(graph["gene"].num_nodes) // pre_bs),
        "triplets_per_s": len(train) / train_epoch_s,
        "eval_s": eval_s,
        # process CPU seconds per epoch (all threads; includes set-up): on a busy machine this is
        # closer to what a quiet machine's wall time would be (with 1 thread, about equal)
        "pretrain_cpu_s_per_epoch": pre_cpu / args.epochs,
        "train_cpu_s_per_epoch": train_cpu / args.epochs,
        "val_pearson_after_timed_epochs": val_metrics["pearson"],
        "peak_rss_gb": _peak_rss_gb(),
        "step_split_ms": first["step_split_ms"],
        "by_batch_size": by_batch_size,
        "targets": TARGETS,
    }
    if device.type == "cuda":
        report["peak_cuda_gb"] = max(r["peak_cuda_gb"] for r in by_batch_size)
        report["cuda_version"] = torch.version.cuda
    report["meets_targets"] = {k: report[k] <= v for k, v in TARGETS.items()}
    if profile_top is not None:
        report["profile_top_ops"] = profile_top
        report["peak_rss_gb"] = _peak_rss_gb()

    atomic_write_json(report, args.out)
    _print_table(report, args.out)
    return report


def _print_table(r: dict, out: str) -> None:
    lines = [
        f"dango_nb bench ({'SYNTHETIC ' if r['synthetic'] else ''}preset {r['preset']}: {r['n_genes']} genes, "
        f"{r['n_edges_undirected']} edges, {r['n_triplets']} triplets; device {r['device']}, "
        f"{r['torch_threads']} torch threads)",
        f"  {'measure':<22}{'value':>12}  {'target':>8}  ok",
    ]
    rows = [("data_load_s", r["data_load_s"], None), ("setup_s", r["setup_s"], None),
            ("pretrain_epoch_s", r["pretrain_epoch_s"], TARGETS["pretrain_epoch_s"]),
            ("train_epoch_s", r["train_epoch_s"], TARGETS["train_epoch_s"]),
            ("triplets_per_s", r["triplets_per_s"], None), ("eval_s", r["eval_s"], None),
            ("pretrain_cpu_s/epoch", r["pretrain_cpu_s_per_epoch"], None),
            ("train_cpu_s/epoch", r["train_cpu_s_per_epoch"], None),
            ("peak_rss_gb", r["peak_rss_gb"], TARGETS["peak_rss_gb"])]
    for name, value, target in rows:
        ok = "" if target is None else ("yes" if value <= target else "NO")
        tgt = "" if target is None else f"<= {target:g}"
        lines.append(f"  {name:<22}{value:>12.2f}  {tgt:>8}  {ok}")
    lines.append(f"  batch_size {r['batch_size']} ({r['train_steps_per_epoch']} steps/epoch), pretrain batch "
                 f"{r['pretrain_batch_size']} genes, hidden_channels {r['hidden_channels']}")
    for b in r.get("by_batch_size", []):
        sp = b["step_split_ms"]
        mem = "" if b["peak_cuda_gb"] is None else f", peak GPU {b['peak_cuda_gb']:.2f} GiB"
        lines.append(f"  batch {b['batch_size']:>5}: epoch {b['train_epoch_s']:.2f} s, {b['triplets_per_s']:.0f} "
                     f"triplets/s; step {sp['total']:.1f} ms = forward {sp['forward']:.1f} + backward "
                     f"{sp['backward']:.1f} + optimiser {sp['optimizer']:.1f}{mem}")
    for op in r.get("profile_top_ops", [])[:10]:
        lines.append(f"    {op['op']:<40}{op['ms_per_step']:>9.1f} ms/step  {100 * op['share']:5.1f}%")
    lines.append(f"  written to {out}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
