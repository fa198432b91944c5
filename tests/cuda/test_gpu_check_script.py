"""``scripts/gpu_check.sh`` in its CPU dry mode: runs the chosen steps under their budgets and
writes ``summary.json`` (with the fit's numbers) and the log archive to ``$OUT``, at most 8 files."""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_dry_run_writes_summary_and_logs(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out), DANGO_GPU_CHECK_DRY="1", DANGO_GPU_CHECK_STEPS="fit",
               PY=sys.executable, DANGO_DATA_DIR=str(tmp_path / "data"), OMP_NUM_THREADS="1")
    r = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh")], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and {"summary.json", "fit.json", "logs.tgz"} <= set(files), files
    s = json.loads((out / "summary.json").read_text())
    assert s["dry"] is True and s["device"] == "cpu" and s["env"]["torch"]
    by = {st["step"]: st for st in s["steps"]}
    assert by["fit"]["rc"] == 0 and not by["fit"]["timed_out"] and by["fit"]["wall_s"] <= by["fit"]["budget_s"]
    assert by["bench"]["skipped"] and by["report"]["skipped"] and by["sweep"]["skipped"]
    fit = s["fit"]
    assert fit["preset"] == "tiny" and 0 <= fit["best_epoch"] < fit["epochs_run"] <= 12
    assert 0 < fit["time_to_best_s"] <= fit["fit_wall_s"] and -1 <= fit["best_val_pearson"] <= 1
    with tarfile.open(out / "logs.tgz") as t:
        assert {"fit.log", "env.json"} <= set(t.getnames())
