# Two commands from a fresh clone: `make serve` (the bridge on the offline voice) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: serve test call tunnel lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[voice]'
	touch $@

# The test suite needs every extra it tests: the scale extra (gunicorn) runs the scale-out tests.
$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[voice,dev,scale]'
	# the end-of-turn model file ships inside this wheel; none of its own dependencies are needed
	$(BIN)/pip install --quiet --no-deps pipecat-ai
	touch $@ $(VENV)/.installed

serve: $(VENV)/.installed
	$(BIN)/bridge serve --host $(HOST) --port $(PORT)

call: $(VENV)/.installed
	$(BIN)/bridge call http://$(HOST):$(PORT)

$(VENV)/.installed-tunnel: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[voice,tunnel]'
	touch $@

tunnel: $(VENV)/.installed-tunnel
	$(BIN)/bridge tunnel --host $(HOST) --port $(PORT)

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check bridge tests bench
	$(BIN)/mypy

bench: $(VENV)/.installed-dev
	$(BIN)/python -m bench.load

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
