# hexlane: `make demo` runs the main job, `make test` the whole suite. Both set up first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.hexlane-installed

.PHONY: setup system-packages venv test lint typecheck layers unit demo bench proto clean

setup: system-packages venv

system-packages:
	@bash scripts/setup-system.sh

venv: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check -r requirements.lock
	@$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	@touch $@

lint: venv
	$(VENV)/bin/ruff check src tests bench

typecheck: venv
	$(VENV)/bin/mypy

layers: venv
	$(VENV)/bin/lint-imports --no-cache

unit: venv
	$(VENV)/bin/pytest -q

test: setup lint typecheck layers unit

proto: venv  # the Hubble API's Python modules from its .proto files (commit the result)
	$(PY) scripts/hubble_proto.py

demo:  # setup's time is reported apart from the demo's own ("demo done in Ns")
	@start=$$(date +%s); $(MAKE) --no-print-directory setup && \
	  echo "setup done in $$(( $$(date +%s) - start ))s (the demo's own time is reported at its end)"
	$(VENV)/bin/hexlane lab demo --name demo

bench: setup
	@echo "Benchmarks (not part of the suite; each prints its ratios, figures in docs/benchmarks.md):"
	@for b in bench/*.py; do echo "  $(VENV)/bin/python $$b"; done

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
