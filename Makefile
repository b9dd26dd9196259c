# Two entry points: `make search` and `make test`. Both create .venv on first use.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU wheel by default (no CUDA download). GPU users: make TORCH="torch --index-url <your CUDA index>"
TORCH ?= torch==2.13.0
SPACE ?= search_spaces/longseq.yaml
ARGS ?=

.PHONY: install search test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[dev]"
	@touch $@

search: install
	$(BIN)/autoeff search --space $(SPACE) $(ARGS)

# two pytest-xdist workers (tests that share a Ray cluster or a fixture stay on one: tests/conftest.py);
# make test ARGS="-n 0" runs them in one process
test: install
	$(BIN)/python -m pytest tests -n 2 --dist loadgroup $(ARGS)

bench: install
	$(BIN)/autoeff bench attention $(ARGS)

clean:
	rm -rf $(VENV) mlflow.db mlartifacts autoeff.db autoeff_runs *-report.html
