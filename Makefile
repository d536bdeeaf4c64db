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
		-e './operator[test]' -e './runtime[test]' -r requirements-dev.txt
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
manifests: $(STAMP) ## Generate crds/ from the pydantic models in gemma_operator.api.
	$(VENV)/bin/gemma-operator crds --output-dir crds

.PHONY: verify
verify: manifests ## Regenerate everything generated and fail if git sees a difference.
	git diff --exit-code
	test -z "$$(git status --porcelain --untracked-files=all)" || { git status --short; exit 1; }

##@ Local cluster (real control plane built from Go modules)

.PHONY: cluster-binaries
cluster-binaries: $(STAMP) ## Find or build etcd, kube-*, kubectl, kwok and helm into ~/.cache/gemma-operator.
	$(PY) -m tests.cluster.harness binaries

.PHONY: cluster
cluster: cluster-binaries ## Start the control plane with fake GKE node pools in the foreground (Ctrl-C stops it).
	$(PY) -m tests.cluster.harness up

##@ Demo and benchmarks

.PHONY: demo
demo: cluster-binaries ## Run the main job on the local control plane (grows with each issue; see README).
	$(PY) -m tests.cluster.harness demo

.PHONY: bench
bench: cluster-binaries ## Benchmarks into bench/report.md (today: the operator; serving and training land with issue 12).
	$(PY) -m tests.bench.operator_bench --servers 200 --total 1000 --output bench/operator.json
	$(PY) -m tests.bench.report

##@ Images and deployment (placeholders until issue 11)

.PHONY: docker-build docker-push kind-create kind-load kind-delete deploy undeploy helm-lint test-e2e
docker-build: ## Placeholder (issue 11): build the operator and runtime images.
docker-push: ## Placeholder (issue 11): push the images (IMG, TAG).
kind-create: ## Placeholder (issue 11): create a kind cluster.
kind-load: ## Placeholder (issue 11): load the images into kind.
kind-delete: ## Placeholder (issue 11): delete the kind cluster.
deploy: ## Placeholder (issue 11): install the operator with Helm into the current context.
undeploy: ## Placeholder (issue 11): uninstall the operator.
helm-lint: ## Placeholder (issue 11): lint the Helm chart.
test-e2e: ## Placeholder (issue 11): kind e2e tests (need Docker).
docker-build docker-push kind-create kind-load kind-delete deploy undeploy helm-lint test-e2e:
	@echo "make $@: not built yet (issue 11: images, chart and kind e2e)" >&2; exit 2

.PHONY: clean
clean: ## Remove the virtual environment and caches (the cluster binary cache is kept).
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
