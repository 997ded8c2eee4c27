# orchard: two set-up commands, `make demo` and `make test`; everything installs into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test agents system wheels bench lint typecheck mutants clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The pinned real agent CLIs (claude, codex, gemini; aider in its own venv) that the end-to-end tests drive offline
# against scripted fake models.
agents:
	@bash tools/install-agents.sh
	@bash tools/install-aider.sh

# Wheels (pytest and its dependencies, pinned in tools/wheels.txt) that the Python sample-project tests install
# offline into the venvs their tasks' setup makes.
wheels: $(STAMP)
	@bash tools/fetch-wheels.sh

# Distribution packages the tests need: bubblewrap for the agents' sandbox (apt-get as root, else it says how).
system:
	@bash tools/install-system.sh

demo: $(STAMP)
	$(BIN)/orchard demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks tools

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP) agents system wheels
	$(BIN)/ruff check src tests benchmarks tools
	$(BIN)/mypy
	$(BIN)/python -m pytest -q
	$(BIN)/python tools/mutants.py

# Benchmarks (docs/performance.md): ratios against baselines measured in the same run; `make bench ARGS=--quick`.
bench: $(STAMP)
	$(BIN)/python -m benchmarks $(ARGS)

# Each defence removed in a copy of the tree must make a test fail (tools/mutants.py; about three minutes, also
# the last step of `make test`).
mutants: $(STAMP)
	$(BIN)/python tools/mutants.py

clean:
	rm -rf $(VENV) .tools build dist src/*.egg-info .mypy_cache .ruff_cache .pytest_cache
