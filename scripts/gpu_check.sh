#!/usr/bin/env bash
# The whole GPU check in one run (under 9 minutes on one H100/H200), from the repo root:
#   bash scripts/gpu_check.sh            # on the device, with .whl/ carried (scripts/fetch_device_wheels.sh)
#   DANGO_GPU_CHECK_DRY=1 bash scripts/gpu_check.sh   # the same steps on the CPU, tiny preset, no wheels
# Writes to $OUT (default ./gpu_check_out) at most 8 files: summary.json (every step's status and
# numbers), bench.json, fit.json, report.tgz (the report's top-level files), logs.tgz (one log per step).
# Each step has its own time budget; a step that fails or runs out is recorded and the next runs.
# DANGO_GPU_CHECK_STEPS=tests,bench,fit,sweep,report (the default) runs a subset.
set -uo pipefail
OUT=${OUT:-$PWD/gpu_check_out}
mkdir -p "$OUT"
DRY=${DANGO_GPU_CHECK_DRY:-0}
PY=${PY:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [[ "$DRY" == 1 ]]; then
  DEVICE=cpu PRESET=tiny BENCH_EXTRA="--hidden-channels 16 --split-steps 3" PARAMS=params/tiny GPUS_PER_RUN=0
  B_TESTS=120 B_BENCH=120 B_FIT=120 B_SWEEP=240 B_REPORT=300 FIT_EPOCHS=12
else
  DEVICE=cuda PRESET=kuzmin BENCH_EXTRA="" PARAMS=params/gpu GPUS_PER_RUN=0.25
  B_TESTS=100 B_BENCH=90 B_FIT=90 B_SWEEP=90 B_REPORT=160 FIT_EPOCHS=60  # 530 s in all
  if ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      > "$OUT/wheels.log" 2>&1 || echo "wheel install failed (see wheels.log)" >&2
    export PYTHONPATH="$PYTHONPATH:/tmp/site"  # after the machine's own packages: its torch stays
  fi
fi
export DANGO_DATA_DIR=${DANGO_DATA_DIR:-/tmp/dango_data}
STEPS=()
WANT=",${DANGO_GPU_CHECK_STEPS:-tests,bench,fit,sweep,report},"

step() {  # step NAME BUDGET_S COMMAND...
  local name=$1 budget=$2; shift 2
  if [[ "$WANT" != *",$name,"* ]]; then
    STEPS+=("{\"step\": \"$name\", \"rc\": null, \"skipped\": \"not in DANGO_GPU_CHECK_STEPS\"}")
    return
  fi
  local t0=$SECONDS rc
  echo "== $name (budget ${budget}s)"
  timeout -k 5 "$budget" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  local dt=$((SECONDS - t0))
  echo "   rc=$rc in ${dt}s"
  STEPS+=("{\"step\": \"$name\", \"rc\": $rc, \"wall_s\": $dt, \"budget_s\": $budget, \"timed_out\": $([[ $rc == 124 || $rc == 137 ]] && echo true || echo false)}")
}

$PY - > "$OUT/env.json" 2>&1 <<'PYEOF'
import json, platform, torch, torch_geometric
print(json.dumps({"torch": torch.__version__, "cuda": torch.version.cuda, "pyg": torch_geometric.__version__,
                  "python": platform.python_version(),
                  "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}))
PYEOF

if [[ "$DRY" == 1 ]]; then
  step tests "$B_TESTS" $PY -m pytest -q -rs -s -m cuda tests/cuda  # skipped on the CPU, with the reason
else
  step tests "$B_TESTS" $PY -m pytest -q -rs -s -m cuda tests/cuda
fi
step bench "$B_BENCH" $PY -m dango_nb.bench --preset "$PRESET" --device "$DEVICE" --batch-sizes 256,1024 \
  --out "$OUT/bench.json" $BENCH_EXTRA

step fit "$B_FIT" $PY - "$PRESET" "$DEVICE" "$OUT/fit.json" "$((B_FIT - 25))" "$FIT_EPOCHS" <<'PYEOF'
import json, sys, time
import torch
from dango_nb.data.study import load_study
from dango_nb.fileio import atomic_write_json
from dango_nb.train import Callback, TrainConfig, fit

preset, device, out, budget, epochs = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5])


class Budget(Callback):
    """Stops the fit when its time budget is spent, so the result is written either way."""

    def __init__(self):
        self.t0, self.hit = time.perf_counter(), False

    def on_epoch_end(self, loop, epoch, row):
        print(f"epoch {epoch}: val_pearson {row['val_pearson']:.4f}, {row['time_s']:.2f} s", flush=True)
        self.hit = time.perf_counter() - self.t0 > budget
        return self.hit


study = load_study(preset, seed=0)
t = study.triplets
perm = torch.randperm(len(t), generator=torch.Generator().manual_seed(0))
n_tr, n_va = int(0.8 * len(t)), int(0.1 * len(t))
train, val = t.subset(perm[:n_tr]), t.subset(perm[n_tr:n_tr + n_va])
lambdas = study.planted_lambdas()
cfg = TrainConfig(epochs=epochs, batch_size=256, transition_epoch=5, early_stopping_patience=5, device=device,
                  progress=False, model={"hidden_channels": 64} if preset != "tiny" else {"hidden_channels": 16})
t0 = time.perf_counter()
stop = Budget()
res = fit(study.cell_graph, train, val, cfg, lambdas, callbacks=[stop])
wall = time.perf_counter() - t0
h = res.history
best = int(res.best_epoch)
to_best = float(h["time_s"].iloc[: best + 1].sum())
peak = torch.cuda.max_memory_allocated() / 1024 ** 3 if torch.cuda.is_available() and device != "cpu" else None
r = {"preset": preset, "device": device, "epochs_run": len(h), "best_epoch": best,
     "best_val_pearson": float(h["val_pearson"].iloc[best]), "time_to_best_s": to_best, "fit_wall_s": wall,
     "median_epoch_s": float(h["time_s"].median()), "stopped_early": bool(res.stopped_early), "stopped_by_time_budget": stop.hit,
     "n_train": len(train), "n_val": len(val), "peak_cuda_gb": peak}
atomic_write_json(r, out)
print(json.dumps(r))
PYEOF

if [[ "$WANT" != *",sweep,"* ]]; then
  STEPS+=("{\"step\": \"sweep\", \"rc\": null, \"skipped\": \"not in DANGO_GPU_CHECK_STEPS\"}")
elif $PY -c "import ray" > /dev/null 2>&1; then
  # several fits share the GPU (a quarter each); the folder stays in /tmp, its table comes back
  step sweep "$B_SWEEP" $PY -m dango_nb sweep "$PARAMS/sweep.yaml" --out /tmp/gpu_check_sweep --workers 4 \
    --gpus-per-run "$GPUS_PER_RUN" --no-progress
  cp /tmp/gpu_check_sweep/results.csv "$OUT/sweep_results.csv" 2>/dev/null || true
else
  echo "== sweep: skipped (ray is not importable: carry its wheels with WITH_RAY=1 when they fit)"
  STEPS+=("{\"step\": \"sweep\", \"rc\": null, \"skipped\": \"ray not importable\"}")
fi

step report "$B_REPORT" $PY -m dango_nb.report --params "$PARAMS" --out "$OUT/report"
# only files two folders down come back, 8 at most: the report and the logs go in two archives
# (the report's sub-folders are left out if the archive would pass 15 MiB)
if [[ -d "$OUT/report" ]]; then
  ( cd "$OUT" && tar czf report.tgz report && if (( $(stat -c %s report.tgz) > 15728640 )); then
      find report -mindepth 2 -type f -delete; tar czf report.tgz report; fi; rm -rf report )
fi

$PY - "$OUT" "$DRY" "$DEVICE" "$PRESET" "${STEPS[@]}" > "$OUT/summary.json" <<'PYEOF'
import json, os, re, sys
out, dry, device, preset, steps = sys.argv[1], sys.argv[2] == "1", sys.argv[3], sys.argv[4], sys.argv[5:]
def load(name):
    try:
        with open(os.path.join(out, name)) as f:
            return json.loads(f.read().strip().splitlines()[-1] if name.endswith(".log") else f.read())
    except (OSError, ValueError, IndexError):
        return None
summary = {"dry": dry, "device": device, "preset": preset, "env": load("env.json"),
           "steps": [json.loads(s) for s in steps]}
try:
    tail = open(os.path.join(out, "tests.log")).read().strip().splitlines()[-1]
    summary["tests"] = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|error)", tail)}
    summary["tests_line"] = tail
except (OSError, IndexError):
    summary["tests"] = None
bench = load("bench.json")
if bench:
    summary["bench"] = {k: bench.get(k) for k in ("device_name", "torch_version", "cuda_version", "pretrain_epoch_s",
                                                  "peak_cuda_gb", "data_load_s", "setup_s")}
    summary["bench"]["by_batch_size"] = bench.get("by_batch_size")
summary["fit"] = load("fit.json")
print(json.dumps(summary, indent=1))
PYEOF
( cd "$OUT" && tar czf logs.tgz *.log env.json 2>/dev/null && rm -f *.log env.json )
cat "$OUT/summary.json"
