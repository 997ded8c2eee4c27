# orchard: two set-up commands, `make demo` and `make test`; everything installs into .venv.
# `make install` puts orchard for your own repositories into a venv of its own (below).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# orchard (editable) with the test tools: `make test` and everything else
STAMP := $(VENV)/.installed
# orchard (editable) and its runtime dependencies only: `make demo`
RUNTIME_STAMP := $(VENV)/.installed-runtime

.PHONY: demo test agents system wheels bench lint typecheck mutants clean install uninstall

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,ray]'
	touch $(STAMP) $(RUNTIME_STAMP)

# What the demo needs and no more (seconds on a fresh machine); a venv with the test tools already has it.
$(RUNTIME_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $(RUNTIME_STAMP)

# The pinned real agent CLIs (claude, codex, gemini; aider in its own venv) that the end-to-end tests drive offline
# against scripted fake models.
agents:
	@bash tools/install-agents.sh
	@bash tools/install-aider.sh

# Wheels the tests install offline: pytest and its dependencies (tools/wheels.txt) into the venvs the Python
# sample-project tests' setup makes, orchard's runtime dependencies and build backend (tools/wheels-orchard.txt) for
# the install tests.
wheels: $(STAMP)
	@bash tools/fetch-wheels.sh

# Distribution packages the tests need: bubblewrap for the agents' sandbox, sqlite3, headless Chromium and its
# chromedriver for the browser tests (apt-get as root, else it says how).
system:
	@bash tools/install-system.sh

# The demo prints where its repository is and how to look at it; orchard itself is not on your PATH (see install).
demo: $(RUNTIME_STAMP)
	@dir="$$(mktemp -d "$${TMPDIR:-/tmp}/orchard-demo-XXXXXX")"; \
	$(BIN)/orchard demo --dir "$$dir"; code=$$?; \
	echo "and with orchard: $(abspath $(BIN))/orchard -C $$dir/sample status (or runs, show TASK, logs TASK)"; \
	exit $$code

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks tools examples

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP) agents system wheels
	$(BIN)/ruff check src tests benchmarks tools examples
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

# `make install`: orchard for your own repositories, in a venv of its own (never your project's environment, whose
# `pytest` must stay your project's), and the `orchard` command linked onto your PATH: the venv in
# $(PREFIX)/share/orchard/venv, the link in $(PREFIX)/bin. `make install` again updates it from this checkout;
# PIP_ARGS go to pip (the tests install offline: PIP_ARGS="--no-index --find-links .tools/wheels").
PREFIX ?= $(HOME)/.local
INSTALL_DIR = $(abspath $(PREFIX))
INSTALL_VENV = $(INSTALL_DIR)/share/orchard/venv
INSTALL_LINK = $(INSTALL_DIR)/bin/orchard
PIP_ARGS ?=

install:
	@if [ -z "$(strip $(PREFIX))" ]; then echo "make install: PREFIX is empty" >&2; exit 2; fi
	@if { [ -e "$(INSTALL_LINK)" ] || [ -L "$(INSTALL_LINK)" ]; } && \
	    [ "$$(readlink "$(INSTALL_LINK)")" != "$(INSTALL_VENV)/bin/orchard" ]; then \
	    echo "make install: $(INSTALL_LINK) exists and is not this install's link (pipx's, uv's?): remove it first" >&2; \
	    exit 1; fi
	$(PYTHON) -m venv "$(INSTALL_VENV)"
	rm -rf build  # setuptools' staging area: it would still hold modules removed since the last build
	"$(INSTALL_VENV)/bin/python" -m pip install --quiet --disable-pip-version-check $(PIP_ARGS) .
	mkdir -p "$(INSTALL_DIR)/bin"
	ln -sfn "$(INSTALL_VENV)/bin/orchard" "$(INSTALL_LINK)"
	@echo "installed: $(INSTALL_LINK) -> $(INSTALL_VENV)/bin/orchard ($$("$(INSTALL_LINK)" --version))"
	@case ":$$PATH:" in *":$(INSTALL_DIR)/bin:"*) ;; \
	    *) echo "$(INSTALL_DIR)/bin is not on your PATH: add it (export PATH=\"$(INSTALL_DIR)/bin:\$$PATH\")";; esac

uninstall:
	@if [ -z "$(strip $(PREFIX))" ]; then echo "make uninstall: PREFIX is empty" >&2; exit 2; fi
	@if [ -L "$(INSTALL_LINK)" ] && [ "$$(readlink "$(INSTALL_LINK)")" = "$(INSTALL_VENV)/bin/orchard" ]; then \
	    rm "$(INSTALL_LINK)"; echo "removed $(INSTALL_LINK)"; fi
	rm -rf "$(INSTALL_VENV)"
	@rmdir "$(INSTALL_DIR)/share/orchard" 2>/dev/null || true

clean:
	rm -rf $(VENV) .tools build dist src/*.egg-info .mypy_cache .ruff_cache .pytest_cache
