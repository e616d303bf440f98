# The two commands: `make run` and `make test`. Both set up .venv from this repository's files.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
export FOVEAL_HOME ?= $(CURDIR)/.foveal
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: run test setup serve sample clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch first and alone: pip then takes the CPU build of the pinned version from this machine's disk.
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

setup: $(VENV)/.installed

sample: setup
	$(BIN)/foveal ingest samples/documents.jsonl --index default --if-empty

run: sample
	$(BIN)/foveal serve --host $(HOST) --port $(PORT)

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .foveal
