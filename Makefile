# cxrlab — `make demo` and `make test` work on a fresh machine with Python 3.11.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO_DATA ?= data/phantom
# Demo scale; tests/test_readme.py runs `make demo` with these made tiny (sizes and epochs only).
DEMO_N    ?= 100
DEMO_SIZE ?= 128
DEMO_ARGS ?=
# The seed of the phantom images and of training; the README's demo table is its range over 0-4.
DEMO_SEED ?= 0

.PHONY: install demo test test-slow ui lint bench clean-demo

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch/torchvision first, pinned: the versions this project is built and tested with.
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	# The editable install maps cxrlab.* onto the folders here; setuptools' caution about a folder
	# named like the package (cxrlab/, which is that package) asks nothing of the user.
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/python -m pip install -q -e ".[dev,timm,dicom]"
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install cxrlab with dev extras

# The newest best checkpoint: the one the train line just before wrote.
LAST_CKPT = "$$(ls -t mlruns/checkpoints/*/*/checkpoints/best-*.ckpt | head -n 1)"
DEMO_METRICS = val/acc,test/acc,explain/lung_focus,explain/border_focus,explain/lesion_focus,explain/aopc_gap,test/explain/lung_focus,test/explain/border_focus

demo: install  ## a clean and a shortcut model on phantom data, both evaluated on clean test data, compared
	$(BIN)/cxrlab data phantom $(DEMO_DATA) --n_per_class $(DEMO_N) --size $(DEMO_SIZE) --seed $(DEMO_SEED) --quiet
	# The same images with a class-coded corner marker on 90 %: the artefact a model can cheat with.
	$(BIN)/cxrlab data phantom $(DEMO_DATA)-shortcut --n_per_class $(DEMO_N) --size $(DEMO_SIZE) --seed $(DEMO_SEED) --shortcut 0.9 --quiet
	$(BIN)/cxrlab train --config phantom_demo --data.root $(DEMO_DATA) --tracking.run_name clean --seed $(DEMO_SEED) $(DEMO_ARGS)
	$(BIN)/cxrlab evaluate $(LAST_CKPT) --data.root $(DEMO_DATA) --out mlruns/demo-report/clean --quiet
	$(BIN)/cxrlab train --config phantom_demo --data.root $(DEMO_DATA)-shortcut --tracking.run_name shortcut --seed $(DEMO_SEED) $(DEMO_ARGS)
	$(BIN)/cxrlab evaluate $(LAST_CKPT) --data.root $(DEMO_DATA) --out mlruns/demo-report/shortcut --quiet
	$(BIN)/cxrlab compare --experiment phantom-demo --metrics $(DEMO_METRICS) --out mlruns/demo-report/compare
	$(BIN)/python -m cxrlab.experiments.evaluation.demo_summary --experiment phantom-demo
	@echo "Reports: mlruns/demo-report/{clean,shortcut}/report.html   Runs: make ui, then the link it prints"

test: install  ## the CI suite (fast tests)
	# Two processes, one per CI core; a test file stays on one (its module fixtures, the README's
	# blocks in order). --durations shows where the time goes.
	$(BIN)/python -m pytest -m "not slow" -q -n 2 --dist loadfile --durations=15

test-slow: install  ## the long tests CI skips
	$(BIN)/python -m pytest -m slow -q

ui: install  ## MLflow UI on 127.0.0.1:5000 over mlruns/
	$(BIN)/cxrlab ui

lint: install
	$(BIN)/ruff check .

clean-demo:
	rm -rf $(DEMO_DATA) $(DEMO_DATA)-shortcut mlruns/mlflow.db mlruns/artifacts mlruns/checkpoints
