# cxrlab — `make demo` and `make test` work on a fresh machine with Python 3.11.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO_DATA ?= data/phantom

.PHONY: install demo test test-slow ui lint bench clean-demo

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch/torchvision first, pinned: the versions this project is built and tested with.
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e ".[dev,timm,dicom]"
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install cxrlab with dev extras

demo: install  ## phantom data -> train (explains every epoch) -> evaluate --explain, all in mlruns/
	$(BIN)/cxrlab data phantom $(DEMO_DATA) --n-per-class 150 --size 128 --seed 0
	$(BIN)/cxrlab train --config phantom_demo --data.root $(DEMO_DATA)
	$(BIN)/cxrlab evaluate "$$(ls -t mlruns/checkpoints/*/*/checkpoints/best-*.ckpt | head -n 1)" \
		--explain --out mlruns/demo-report
	@echo "Report: mlruns/demo-report/report.html   Runs: make ui  (MLflow UI on http://127.0.0.1:5000)"

test: install  ## the CI suite (fast tests)
	$(BIN)/python -m pytest -m "not slow" -q

test-slow: install  ## the long tests CI skips
	$(BIN)/python -m pytest -m slow -q

ui: install  ## MLflow UI on 127.0.0.1:5000 over mlruns/
	$(BIN)/cxrlab ui

lint: install
	$(BIN)/ruff check .

clean-demo:
	rm -rf $(DEMO_DATA) mlruns/mlflow.db mlruns/artifacts mlruns/checkpoints
