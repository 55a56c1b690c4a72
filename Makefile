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
	$(PIP) install -q -e ".[dev,melody]"
	$(PY) -m tunereel.music.torchaudio_cpu  # CPU torch: torchaudio without its CUDA extension (melody presets)
	touch $(STAMP)

install: $(STAMP) protos

# googleapis' .proto files that protos/ import (google.api.field_behavior), copied out of the googleapis-common-protos
# wheel (no network to the Buf registry): protoc's include path below, and a module of buf's workspace (buf.yaml).
GOOGLEAPIS := build/googleapis
GOOGLEAPIS_PROTOS := google/api/field_behavior.proto

$(GOOGLEAPIS)/.stamp: $(STAMP)
	rm -rf $(GOOGLEAPIS) && mkdir -p $(GOOGLEAPIS)
	cd "$$($(PY) -c 'import pathlib, google.api.field_behavior_pb2 as m; print(pathlib.Path(m.__file__).parents[2])')" \
	  && cp --parents $(GOOGLEAPIS_PROTOS) $(CURDIR)/$(GOOGLEAPIS)/
	touch $@

tunereel/v1/.stamp: $(PROTOS) $(STAMP) $(GOOGLEAPIS)/.stamp
	mkdir -p tunereel/v1
	$(PY) -m grpc_tools.protoc -Iprotos -I$(GOOGLEAPIS) --python_out=. --pyi_out=. --grpc_python_out=. $(PROTOS)
	touch tunereel/v1/__init__.py tunereel/v1/.stamp

protos: tunereel/v1/.stamp

# The contracts stay a promise: `buf lint` (buf.yaml says which rules, and where we follow Google's AIPs), then
# `buf breaking` against the last released contract. That contract is a committed Buf image (tag v1-contract, built by
# `make proto-release`), not a git ref: CI's fresh clone may be shallow and without tags, and an image carries its
# imports, so it needs no googleapis copy of its own.
BUF := $(VENV)/bin/buf
RELEASED_CONTRACT := protos/released/v1.binpb
.PHONY: proto-check proto-release
proto-check: $(STAMP) $(GOOGLEAPIS)/.stamp
	$(BUF) lint protos
	$(BUF) breaking protos --against $(RELEASED_CONTRACT)

# Only when releasing a contract (then tag the commit): what `proto-check` compares against from then on.
proto-release: $(STAMP) $(GOOGLEAPIS)/.stamp
	$(BUF) build protos --exclude-source-info -o $(RELEASED_CONTRACT)

models: install
	$(PY) -m tunereel.tiny --models-dir $(MODELS_DIR)

# `make run ENVOY=1` also starts Envoy as the grpc-web front of the composer (port 8080).
RUN_ARGS ?=
ifdef ENVOY
RUN_ARGS += --envoy
endif
# `make run MUSIC_REPLICAS=2 VIDEO_REPLICAS=2` starts several music/video processes, each on its own port; the
# composer balances its streams over them (round robin, health-checked), as it does over DNS in Kubernetes.
ifdef MUSIC_REPLICAS
RUN_ARGS += --music-replicas $(MUSIC_REPLICAS)
endif
ifdef VIDEO_REPLICAS
RUN_ARGS += --video-replicas $(VIDEO_REPLICAS)
endif

# e.g. `make run MUSIC_PRESET=tiny-ace-step VIDEO_PRESET=tiny-ltx2` (presets: `tunereel models`)
MUSIC_PRESET ?= tiny
VIDEO_PRESET ?= tiny
run: models
	$(PY) -m tunereel.launch --models-dir $(MODELS_DIR) --music-preset $(MUSIC_PRESET) --video-preset $(VIDEO_PRESET) $(RUN_ARGS)

# The UI tests drive Debian's chromium with Playwright (its own browser downloads are not used).
.PHONY: browser
browser:
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)

# Code rules, fast and before any test: complexity (ruff C901, max 12, set in pyproject's [tool.ruff]), no private
# names across modules, a service config for every gRPC service (tests/unit/test_code_rules.py).
.PHONY: lint
lint: install
	$(VENV)/bin/ruff check --select C901 services gateway tunereel
	$(PY) -m pytest -q tests/unit/test_code_rules.py

test: models browser proto-check lint
	$(PY) -m pytest -q

test-fast: models proto-check lint
	$(PY) -m pytest -q -m "not slow"

# deploy/: lint the Dockerfile, render both Kustomize overlays into build/k8s and validate every object against the
# Kubernetes schemas, then the semantic checks (tests/deploy). All offline, with the tools of the `dev` extra.
K8S_OVERLAYS := cpu-tiny gpu
.PHONY: deploy-check docker-requirements images k8s-secrets
k8s-secrets:  # random Secret values for the cpu-tiny overlay (kept once made; never committed)
	$(PY) deploy/k8s/overlays/cpu-tiny/make_secrets.py

deploy-check: install k8s-secrets
	$(VENV)/bin/hadolint deploy/docker/Dockerfile
	mkdir -p build/k8s
	for overlay in $(K8S_OVERLAYS); do \
	  $(VENV)/bin/kubectl kustomize deploy/k8s/overlays/$$overlay > build/k8s/$$overlay.yaml && \
	  $(VENV)/bin/kubernetes-validate --strict --quiet build/k8s/$$overlay.yaml || exit 1; \
	done
	$(PY) -m pytest -q tests/deploy

# Pin the images' Python dependencies to the versions installed here (after tests pass with them).
docker-requirements: install
	$(PY) deploy/docker/pin_requirements.py

# Build the four images (needs Docker with BuildKit): `make images IMAGE_PREFIX=ghcr.io/you/tunereel- IMAGE_TAG=0.1.0`
IMAGE_PREFIX ?= tunereel/
IMAGE_TAG ?= 0.1.0
images:
	for target in music video composer gateway; do \
	  docker build -f deploy/docker/Dockerfile --target $$target -t $(IMAGE_PREFIX)$$target:$(IMAGE_TAG) . || exit 1; \
	done

clean:
	rm -rf tunereel/v1 .cache build *.egg-info
