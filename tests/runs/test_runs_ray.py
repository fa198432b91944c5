"""Sweeps on a real local Ray (2 CPUs): end to end, equal to in-process runs, a killed worker,
a run that keeps dying, resume and Ctrl-C."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dango_nb.__main__ import main
from dango_nb.runs import RunFolder, load_sweep, run_many, run_sweep, sweep_from_mapping, sweep_specs, train_run
from dango_nb.runs.folder import MARKER, partial_path

TINY_SWEEP = Path(__file__).resolve().parents[2] / "params" / "tiny" / "sweep.yaml"

pytestmark = pytest.mark.usefixtures("ray_local")

KILLED = "schedule-LinearUntilUniform_transition_epoch-0"


def test_tiny_sweep_end_to_end_equals_in_process_runs(tmp_path, fault_dir, capsys):
    (fault_dir / f"kill-{KILLED}").write_text("")  # this run's worker dies after its first epoch
    out = tmp_path / "sweep"
    rc = main(["sweep", str(TINY_SWEEP), "--out", str(out), "--workers", "2", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    assert not (fault_dir / f"kill-{KILLED}").exists(), "the worker was not killed"
    table = pd.read_csv(out / "results.csv")
    assert len(table) == 4 and set(table["status"]) == {"done"}
    assert {"train.schedule", "train.transition_epoch", "best_epoch", "val_pearson", "test_pearson", "fit_s",
            "device"} <= set(table.columns)
    assert (out / "figures" / "val_pearson_vs_transition_epoch.png").stat().st_size > 0
    assert (out / "sweep.yaml").is_file() and (out / "provenance.json").is_file()

    # the same runs one after another in this process (same seeds): the same numbers,
    # including the run that was killed and resumed from its checkpoint by Ray's retry
    sweep = load_sweep(TINY_SWEEP)
    for spec in sweep_specs(sweep, tmp_path / "inline"):
        ref = train_run(spec.params, spec.out, progress=False, threads=1)
        row = table[table["run_id"] == spec.run_id].iloc[0]
        assert row["best_epoch"] == ref["best_epoch"]
        for part in ("val", "test"):
            for m in ("pearson", "spearman", "mse"):
                assert row[f"{part}_{m}"] == pytest.approx(ref["metrics"][part][m], rel=1e-9, abs=1e-12), (spec.run_id, part, m)
        ray_hist = RunFolder.open(out / "runs" / spec.run_id).history
        pd.testing.assert_frame_equal(ray_hist.drop(columns="time_s"), RunFolder.open(spec.out).history.drop(columns="time_s"))


def _small_sweep(epochs=2, seeds=(0, 1)):
    return sweep_from_mapping({"base": {"data": {"preset": "tiny"},
                                        "train": {"epochs": epochs, "batch_size": 128, "lr": 0.01, "transition_epoch": 1,
                                                  "keep_top_k": 1, "progress": False, "model": {"hidden_channels": 8}}},
                               "axes": {"seed": list(seeds)}}, "test-sweep")


def test_a_run_that_keeps_dying_is_reported_and_the_rerun_redoes_only_it(tmp_path, fault_dir):
    sweep = _small_sweep()
    (fault_dir / "kill-always-seed-1").write_text("")
    try:
        result = run_sweep(sweep, tmp_path, workers=2, max_retries=1, progress=False)
    finally:
        (fault_dir / "kill-always-seed-1").unlink()
    status = dict(zip(result.table["run_id"], result.table["status"]))
    assert status == {"seed-0": "done", "seed-1": "failed"}
    err = result.table.set_index("run_id").loc["seed-1", "error"]
    assert "died" in err.lower() or "crash" in err.lower() or "exit" in err.lower(), err
    assert pd.read_csv(tmp_path / "results.csv").set_index("run_id").loc["seed-1", "status"] == "failed"
    done_marker = (tmp_path / "runs" / "seed-0" / MARKER).stat().st_mtime_ns
    assert (partial_path(tmp_path / "runs" / "seed-1") / "checkpoints" / "last.pt").is_file()

    again = run_sweep(sweep, tmp_path, workers=2, progress=False)
    status = dict(zip(again.table["run_id"], again.table["status"]))
    assert status == {"seed-0": "skipped", "seed-1": "done"}
    assert (tmp_path / "runs" / "seed-0" / MARKER).stat().st_mtime_ns == done_marker
    assert not partial_path(tmp_path / "runs" / "seed-1").exists()
    # resumed after the epoch it died in, it equals an uninterrupted run
    ref = train_run(sweep.runs[1].params, tmp_path / "ref", progress=False, threads=1)
    got = again.table.set_index("run_id").loc["seed-1"]
    assert got["test_pearson"] == pytest.approx(ref["metrics"]["test"]["pearson"], rel=1e-9)


def test_ctrl_c_keeps_finished_runs_and_the_rerun_continues(tmp_path):
    sweep = _small_sweep(seeds=(0, 1, 2))
    specs = sweep_specs(sweep, tmp_path)

    def interrupt(outcome):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(sweep, tmp_path, workers=1, on_result=interrupt, progress=False)
    first = pd.read_csv(tmp_path / "results.csv")
    assert list(first["status"]).count("done") == 1 and list(first["status"]).count("interrupted") == 2
    finished = [s for s in specs if (s.out / MARKER).is_file()]
    assert len(finished) == 1
    RunFolder.open(finished[0].out)  # intact

    outcomes = run_many(specs, workers=2, progress=False)
    assert sorted(o.status for o in outcomes) == ["done", "done", "skipped"]
    assert next(o for o in outcomes if o.status == "skipped").run_id == finished[0].run_id
    assert all(np.isfinite(o.record["metrics"]["test"]["pearson"]) for o in outcomes)


def test_local_ray_listens_on_loopback_only(ray_local):
    """The Ray the package starts (``ray_local`` is the executor's ``ray_session``) accepts no
    connection from another machine: every listening socket of it, its GCS, raylet, agents and
    workers is bound to a loopback address."""
    import ipaddress

    import psutil

    assert ray_local.get(ray_local.remote(lambda: 1).remote()) == 1  # a worker process is up too
    me = psutil.Process()
    listening, names = [], set()
    for proc in [me, *me.children(recursive=True)]:
        try:
            sockets = proc.net_connections(kind="inet")
            name = proc.name()
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        for c in sockets:
            if c.status == psutil.CONN_LISTEN:
                listening.append((name, proc.pid, c.laddr.ip, c.laddr.port))
                names.add(name)
    assert {"gcs_server", "raylet"} <= names, listening

    def loopback(ip):
        addr = ipaddress.ip_address(ip)
        return (addr.ipv4_mapped or addr).is_loopback if addr.version == 6 else addr.is_loopback

    exposed = [s for s in listening if not loopback(s[2])]
    assert not exposed, f"Ray listens beyond loopback: {exposed}"
