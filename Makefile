# The two set-up commands: `make run` (the main job on the embedded default model) and `make test`.
# Both create .venv, install the project with its extras, and build the default model once.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STILTS := $(VENV)/bin/stilts
EXTRAS ?= train,bench,ray,dev,openvino
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)

.PHONY: install model run test lint proto clean image

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

# The suite runs on TEST_WORKERS processes (pytest-xdist; a test file's tests stay together, so its
# module fixtures are built once); TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2

test: model
	$(PY) -m pytest -q -ra $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile) $(PYTEST_ARGS)

proto: install
	$(PY) -m stilts.server.protogen

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

# The server image (Dockerfile target cpu or gpu) with docker (when its daemon answers), else
# buildah, else podman (in docker format, which keeps the HEALTHCHECK); BUILDER=docker|buildah|podman
# picks one. IMAGE_ARGS: more build options,
# e.g. --build-arg TORCH_INDEX_URL= --build-arg PIP_OPTIONS="--find-links /wheels".
IMAGE ?= stilts
TARGET ?= cpu
IMAGE_ARGS ?=
BUILDER ?=
image:
	@builder="$(BUILDER)"; \
	if [ -z "$$builder" ]; then \
	  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then builder=docker; \
	  elif command -v buildah >/dev/null 2>&1; then builder=buildah; \
	  elif command -v podman >/dev/null 2>&1; then builder=podman; \
	  else echo "make image: needs docker (with a daemon), buildah or podman" >&2; exit 1; fi; \
	fi; \
	case "$$builder" in buildah) cmd="buildah bud --format docker";; \
	  podman) cmd="podman build --format docker";; *) cmd="$$builder build";; esac; \
	echo "$$cmd --target $(TARGET) -t $(IMAGE):$(TARGET) $(IMAGE_ARGS) ."; \
	$$cmd --target $(TARGET) -t $(IMAGE):$(TARGET) $(IMAGE_ARGS) .

clean:
	rm -rf $(VENV) build dist *.egg-info
