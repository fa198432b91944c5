# dango_nb: `make report` and `make test` do all set-up on a fresh machine.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTHON := $(BIN)/python
TORCH_VERSION := 2.13.0
PARAMS ?= params
STAMP := $(VENV)/.installed
# make bench DEVICE=cuda BATCH_SIZES=256,1024
DEVICE ?= auto
BATCH_SIZES ?= 256

.PHONY: install test report bench bench-fit bench-sweep lab test-ui clean

install: $(STAMP)

# torch is pinned and installed first so that nothing later pulls a CUDA build.
$(STAMP): pyproject.toml
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q "torch==$(TORCH_VERSION)"
	$(PYTHON) -m pip install -q -e ".[dev]" "torch==$(TORCH_VERSION)"
	$(PYTHON) -c "import torch; assert torch.__version__.split('+')[0] == '$(TORCH_VERSION)', torch.__version__"
	$(PYTHON) -m ipykernel install --sys-prefix --name dango_nb --display-name "Python (dango_nb)" >/dev/null
	touch $(STAMP)

test: install
	$(BIN)/ruff check dango_nb tests
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PYTHON) -m pytest -q tests

report: install
	$(PYTHON) -m dango_nb.report --params $(PARAMS) --out reports

bench: install
	$(PYTHON) -m dango_nb.bench --out reports/bench.json --device $(DEVICE) --batch-sizes $(BATCH_SIZES)

# Time to accuracy: the params/real training recipe against the one it replaced, on the kuzmin preset
# (two full fits, one after the other, about half an hour on a 2-core CPU); docs/performance.md has the table.
BENCH_FIT_ARGS ?=
bench-fit: install
	$(PYTHON) -m dango_nb.bench_fit --out reports/bench_fit.json $(BENCH_FIT_ARGS)

# Sweep execution: Ray start-up, per-task overhead, 1 vs 2 workers (the 40-fit `small` sweep by
# default; e.g. BENCH_SWEEP_ARGS="--limit 6 --epochs 3" for a short one).
BENCH_SWEEP_ARGS ?=
bench-sweep: install
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PYTHON) -m dango_nb.runs.bench --sweep params/sweep.yaml $(BENCH_SWEEP_ARGS) --out reports/bench_sweep.json

# JupyterLab on loopback with Jupyter's token auth (open the printed URL), dango_nb kernel by default.
lab: install
	VENV=$(VENV) scripts/lab.sh

# End-to-end browser test (JupyterLab + Debian chromium via Playwright); screenshots in reports/ui/.
test-ui: install
	scripts/setup_ui_test.sh
	DANGO_UI=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PYTHON) -m pytest -q tests/ui

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
