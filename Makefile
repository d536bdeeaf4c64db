# Every target uses the virtual environment in .venv/ and creates it when missing,
# so `make test` on a fresh clone needs nothing else. `make help` lists the targets.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
TPU_WORKERS ?= 1
BENCH_SERVE_ARGS ?=

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make \033[36m<target>\033[0m\n"} \
		/^[a-zA-Z0-9_-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } \
		/^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

$(STAMP): operator/pyproject.toml runtime/pyproject.toml requirements-dev.txt constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade "pip>=24"
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt \
		-e './operator[test]' -e './runtime[test,tpu-plan]' -r requirements-dev.txt
	@touch $@

.PHONY: install
install: $(STAMP) ## Create .venv/ and install both packages editable with test and lint tools.

.PHONY: lock
lock: $(STAMP) ## Re-pin constraints.txt from what is installed in .venv/.
	$(PY) -m pip freeze --exclude-editable | grep -v '^-e ' > constraints.txt

.PHONY: lint
lint: $(STAMP) ## ruff check, ruff format --check, mypy and the import-linter layer contracts.
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

.PHONY: format
format: $(STAMP) ## Format and auto-fix with ruff.
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

.PHONY: test
test: $(STAMP) ## Run the tests: unit, runtime and cluster tiers (builds the cluster binaries once).
	$(PY) -m pytest $(PYTEST_ARGS)

.PHONY: test-unit
test-unit: $(STAMP) ## Run only the tests that need no control plane.
	$(PY) -m pytest -m 'not cluster' $(PYTEST_ARGS)

.PHONY: manifests
manifests: $(STAMP) ## Generate crds/, the chart's crds/ and README table, manifests/install.yaml and argocd/.
	$(VENV)/bin/gemma-operator crds --output-dir crds
	$(PY) -m tests.unit.packaging.generate

.PHONY: tpu-figures
tpu-figures: $(STAMP) ## Compile the README table's stale cells for their TPU hosts (libtpu) into tests/tpu/serving-figures.json (TPU_WORKERS=2).
	$(PY) -m tests.tpu.generate --workers $(TPU_WORKERS)

.PHONY: verify
verify: manifests ## Regenerate everything generated and fail if git sees a difference.
	git diff --exit-code
	test -z "$$(git status --porcelain --untracked-files=all)" || { git status --short; exit 1; }

##@ Local cluster (real control plane built from Go modules)

NODE_PACKAGES := containerd runc containernetworking-plugins iptables docker.io debootstrap gcc libc6-dev

.PHONY: node-deps
node-deps: ## Install the real-pod tier's Debian packages (containerd, runc, CNI plugins, iptables, docker.io, debootstrap) without starting any service; needs root.
	@missing=$$(for p in $(NODE_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing" ]; then echo "node-deps: installed"; exit 0; fi; \
	if ! command -v apt-get >/dev/null || [ "$$(id -u)" != 0 ]; then \
		echo "node-deps: install these as root with apt-get: $$missing" >&2; exit 1; fi; \
	echo "node-deps: installing" $$missing; \
	policy=/usr/sbin/policy-rc.d; own=0; \
	if [ ! -e $$policy ]; then printf '#!/bin/sh\nexit 101\n' > $$policy; chmod +x $$policy; own=1; fi; \
	status=0; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null || status=$$?; \
	if [ $$own = 1 ]; then rm -f $$policy; fi; exit $$status

.PHONY: cluster-binaries
cluster-binaries: $(STAMP) ## Find or build etcd, kube-*, kubectl, kwok, helm, fake-gcs-server, gcsfuse, JobSet and the Inference Gateway's endpoint picker into ~/.cache/gemma-operator.
	$(PY) -m tests.cluster.harness binaries

.PHONY: cluster
cluster: cluster-binaries ## Start the control plane with fake GKE node pools in the foreground (Ctrl-C stops it).
	$(PY) -m tests.cluster.harness up

##@ Demo and benchmarks

.PHONY: demo
demo: cluster-binaries ## Run the main job on the local control plane (grows with each issue; see README).
	$(PY) -m tests.cluster.harness demo

.PHONY: kind-demo
kind-demo: $(STAMP) ## The demo with real pods on kind: build the images, helm install, serve and train the tiny samples (needs Docker).
	$(PY) -m tests.e2e.demo

.PHONY: bench
bench: cluster-binaries ## Benchmarks into bench/report.md: operator, serving, training, and Gemma 7B/2B compiled beside MaxText for v5e-256 (BENCH_SERVE_ARGS=--quick for a short serving run).
	$(PY) -m tests.bench.operator_bench --servers 200 --total 1000 --output bench/operator.json
	$(PY) -m tests.bench.train_bench --output bench/train.json
	$(PY) -m tests.bench.loss_curve --output bench/loss.json
	$(PY) -m tests.bench.serve_bench $(BENCH_SERVE_ARGS) --output bench/serve.json
	$(PY) -m tests.bench.batch_sweep --output bench/sweep.json
	$(PY) -m tests.bench.sharded_bench --output bench/sharded.json
	$(PY) -m tests.bench.load_bench --output bench/load.json
	$(PY) -m tests.bench.compile_cache_bench --output bench/compile_cache.json
	$(PY) -m tests.bench.maxtext_bench --output bench/maxtext.json
	$(PY) -m tests.bench.report

##@ Images and deployment

REGISTRY ?= ghcr.io/gemma-operator
IMG ?= $(REGISTRY)/gemma-operator
RUNTIME_IMG ?= $(REGISTRY)/gemma-runtime
TAG ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
JAX_VARIANT ?= cpu
DOCKER ?= docker
KIND ?= kind
KIND_CLUSTER ?= gemma
NAMESPACE ?= gemma-system
# helm on PATH, else the pinned one the cluster tier uses (found or built by `make cluster-binaries`).
HELM ?= $(or $(shell command -v helm 2>/dev/null),$(shell $(PY) -m tests.cluster.harness binaries 2>/dev/null)/helm)

.PHONY: docker-build docker-push kind-create kind-load kind-delete deploy undeploy helm-lint test-e2e
docker-build: $(STAMP) ## Build IMG:TAG and RUNTIME_IMG:TAG (JAX_VARIANT=cpu|cuda12|tpu) with BuildKit: the engine that answers, else dockerd started here; the public Python base, else one made with debootstrap; pip's CA bundle as a build secret.
	$(PY) -m tests.cluster.harness images --operator-image $(IMG):$(TAG) --runtime-image $(RUNTIME_IMG):$(TAG) \
		--jax-variant $(JAX_VARIANT)

docker-push: ## Push IMG:TAG and RUNTIME_IMG:TAG.
	$(DOCKER) push $(IMG):$(TAG)
	$(DOCKER) push $(RUNTIME_IMG):$(TAG)

kind-create: ## Create the kind cluster KIND_CLUSTER (tests/e2e/kind-config.yaml).
	$(KIND) create cluster --name $(KIND_CLUSTER) --config tests/e2e/kind-config.yaml --wait 180s

kind-load: ## Load IMG:TAG and RUNTIME_IMG:TAG (built by docker-build) into the kind cluster.
	$(KIND) load docker-image --name $(KIND_CLUSTER) $(IMG):$(TAG) $(RUNTIME_IMG):$(TAG)

kind-delete: ## Delete the kind cluster KIND_CLUSTER.
	$(KIND) delete cluster --name $(KIND_CLUSTER)

deploy: ## helm upgrade --install the chart into the current context (NAMESPACE) with IMG, RUNTIME_IMG, TAG.
	$(HELM) upgrade --install gemma-operator charts/gemma-operator --namespace $(NAMESPACE) --create-namespace \
		--set image.repository=$(IMG) --set image.tag=$(TAG) \
		--set runtime.image.repository=$(RUNTIME_IMG) --set runtime.image.tag=$(TAG) --wait --timeout 5m

undeploy: ## helm uninstall the operator (the CRDs, and so every GemmaServer/GemmaTraining, stay).
	$(HELM) uninstall gemma-operator --namespace $(NAMESPACE) --wait

helm-lint: $(STAMP) ## helm lint --strict the chart and render it with default values.
	$(HELM) lint --strict charts/gemma-operator
	$(HELM) template gemma-operator charts/gemma-operator --namespace $(NAMESPACE) > /dev/null

test-e2e: $(STAMP) ## kind e2e: build, load, helm install, serve and train the tiny samples (skips without Docker).
	$(PY) -m pytest tests/e2e $(PYTEST_ARGS)

.PHONY: clean
clean: ## Remove the virtual environment and caches (the cluster binary cache is kept).
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
