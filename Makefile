# The two commands a newcomer needs: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-fast soak bench gpu-check lint typecheck clean

venv: $(STAMP)

# torch is installed first and alone, pinned, so pip takes this machine's CPU wheel
# and never resolves a CUDA build through another package's requirement.
$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[agent,dev]'
	touch $(STAMP)

demo: venv
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/cairn demo

test: venv
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -q -p no:cacheprovider -m "not soak" tests

soak: venv
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -q -p no:cacheprovider -m soak tests

bench: venv
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m bench.run_all

# The GPU verification kit (gpu/README.md). No venv prerequisite: on the GPU machine there is
# no network, and the script installs the carried wheels into that machine's python3 itself;
# without CUDA it runs the CPU meaning of each check in $(VENV).
gpu-check:
	bash gpu/run.sh

lint: venv
	$(BIN)/ruff check agent operator tests bench gpu

typecheck: venv
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info
