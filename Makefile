# The two commands: `make run` and `make test`. Both set up .venv from this repository's files.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
export FOVEAL_HOME ?= $(CURDIR)/.foveal
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: run test setup serve sample clean compose-tool browser-tool shell

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch first and alone: pip then takes the CPU build of the pinned version from this machine's disk.
# constraints.txt pins what the direct dependencies pull in, so a fresh clone resolves the same tree.
$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

setup: $(VENV)/.installed

sample: setup
	$(BIN)/foveal ingest samples/documents.jsonl --index default --if-empty

# `make run HOST=0.0.0.0 PORT=9000` serves elsewhere (another host than loopback needs API keys).
run: sample
	$(BIN)/foveal serve --host $(HOST) --port $(PORT)

# A shell with .venv/bin on PATH and FOVEAL_HOME as `make run` uses it: then `foveal search "tides"` just works.
shell: setup
	@echo "foveal is on PATH and FOVEAL_HOME=$(FOVEAL_HOME); exit to leave"
	@PATH="$(CURDIR)/$(BIN):$$PATH" $${SHELL:-/bin/bash} -i

# tests/test_compose.py validates docker-compose.yml with Debian's docker-compose (no Docker engine needed).
compose-tool:
	@command -v docker-compose >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null; } \
	  || echo "docker-compose is not installed (apt-get install docker-compose): the compose test will be skipped"

# tests/web drive the page in Debian's chromium through Playwright (the pip package, no browser download).
browser-tool:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	  || echo "chromium is not installed (apt-get install chromium): the browser tests will be skipped"

test: setup compose-tool browser-tool
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .foveal
