# The two set-up commands: `make run` (the main job on the embedded default model) and `make test`.
# Both create .venv, install the project with its extras, and build the default model once.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STILTS := $(VENV)/bin/stilts
EXTRAS ?= train,bench,ray,dev
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)

.PHONY: install model run test lint proto clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

# The q4 parity check runs on the dev pack's sentences where it is beside the project.
PARITY_DATA ?= $(wildcard ../shared/data/bitext-dev/tatoeba)

model: install
	$(STILTS) models install default $(if $(PARITY_DATA),--parity-data $(PARITY_DATA))

# Serve the default model on localhost:50051 with a demo index of examples/sentences.tsv (Ctrl-C stops).
run: model
	$(PY) -m stilts.server.demo --examples examples/sentences.tsv

test: model
	$(PY) -m pytest -q -ra $(PYTEST_ARGS)

proto: install
	$(PY) -m stilts.server.protogen

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) build dist *.egg-info
