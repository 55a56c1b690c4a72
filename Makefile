# tunereel — `make run` starts every service locally on the offline tiny models; `make test` runs the tests.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
# The CPU build of torch lies on this machine's disk; a bare `torch` would pull a multi-GB CUDA build.
TORCH_PIN ?= torch==2.13.0
MODELS_DIR ?= .cache/tunereel/models
PROTOS := $(wildcard protos/tunereel/v1/*.proto)
STAMP  := $(VENV)/.installed

.PHONY: install protos models run test test-fast clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_PIN)
	mkdir -p tunereel/v1  # the generated package's folder must exist for the editable install
	$(PIP) install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP) protos

tunereel/v1/.stamp: $(PROTOS) $(STAMP)
	mkdir -p tunereel/v1
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=. --pyi_out=. --grpc_python_out=. $(PROTOS)
	touch tunereel/v1/__init__.py tunereel/v1/.stamp

protos: tunereel/v1/.stamp

models: install
	$(PY) -m tunereel.tiny --models-dir $(MODELS_DIR)

# `make run ENVOY=1` also starts Envoy as the grpc-web front of the composer (port 8080).
RUN_ARGS ?=
ifdef ENVOY
RUN_ARGS += --envoy
endif

run: models
	$(PY) -m tunereel.launch --models-dir $(MODELS_DIR) $(RUN_ARGS)

test: models
	$(PY) -m pytest -q

test-fast: models
	$(PY) -m pytest -q -m "not slow"

clean:
	rm -rf tunereel/v1 .cache build *.egg-info
