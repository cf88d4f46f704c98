# EM²Q — two entry points for a fresh machine: `make run` and `make test`.
# Every target sets up what it needs first (virtual environment from the lock file,
# Elasticsearch distribution from Maven Central); nothing is installed by hand.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
UV_VERSION := 0.9.8
STAMP  := $(VENV)/.installed

.PHONY: run test venv elasticsearch interop thrift-compiler lint bench lock clean browser helm maldiquant \
	kubernetes cluster node-packages test-cluster argo cluster-argo

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip sync --quiet --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

## Fetch (mvn) and unpack the Elasticsearch distribution into the project cache.
elasticsearch: $(STAMP)
	$(BIN)/python -m em2q_resources.elasticsearch_server fetch

## Run the platform locally on its embedded defaults with the example data.
run: elasticsearch
	$(BIN)/em2q dev

## The other-language client of the Thrift service tests: Debian's Apache Thrift compiler,
## the Node.js client's locked npm packages and the JavaScript code generated from the IDL.
THRIFT_IDL   := thrift/em2q.thrift
NODE_CLIENT  := tests/interop/node
NODE_GEN     := thrift/gen-nodejs/MetadataService.js
NODE_MODULES := $(NODE_CLIENT)/node_modules/.package-lock.json

interop: thrift-compiler $(NODE_MODULES) $(NODE_GEN)

thrift-compiler:
	@command -v thrift >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; \
	  elif command -v sudo >/dev/null 2>&1; then SUDO=sudo; \
	  else echo "error: the Thrift compiler is missing and this is not root (no sudo either):" \
	    "run 'apt-get update && apt-get install -y thrift-compiler' as root, then make again" >&2; \
	    exit 1; fi; \
	  command -v apt-get >/dev/null 2>&1 || { echo "error: no 'thrift' on PATH and no apt-get:" \
	    "install the Apache Thrift compiler 0.17 with your package manager" >&2; exit 1; }; \
	  echo "installing Debian's thrift-compiler (apt-get)"; \
	  $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq thrift-compiler; }
	@thrift --version

## The web catalog's browser tests: Debian's Chromium and its WebDriver (Selenium drives them).
browser:
	@{ command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; } || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; \
	  elif command -v sudo >/dev/null 2>&1; then SUDO=sudo; \
	  else echo "error: chromium/chromedriver are missing and this is not root (no sudo either):" \
	    "run 'apt-get update && apt-get install -y chromium chromium-driver' as root, then make again" >&2; \
	    exit 1; fi; \
	  command -v apt-get >/dev/null 2>&1 || { echo "error: no chromium/chromedriver on PATH and no" \
	    "apt-get: install Chromium and its matching chromedriver with your package manager" >&2; exit 1; }; \
	  echo "installing Debian's chromium and chromium-driver (apt-get)"; \
	  $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; }
	@chromium --version

## The study benchmark's peer tool (benchmarks/bench_study.py): R with Debian's MALDIquant
## (binPeaks + intensityMatrix). Not part of `make test`; the benchmark skips that column without it.
maldiquant:
	@{ command -v Rscript >/dev/null 2>&1 && Rscript -e 'library(MALDIquant)' >/dev/null 2>&1; } || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; \
	  elif command -v sudo >/dev/null 2>&1; then SUDO=sudo; \
	  else echo "error: R/MALDIquant are missing and this is not root (no sudo either):" \
	    "run 'apt-get update && apt-get install -y r-base-core r-cran-maldiquant' as root, then make again" >&2; \
	    exit 1; fi; \
	  command -v apt-get >/dev/null 2>&1 || { echo "error: no Rscript with MALDIquant and no" \
	    "apt-get: install R and the MALDIquant package (CRAN) with your package manager" >&2; exit 1; }; \
	  echo "installing Debian's r-base-core and r-cran-maldiquant (apt-get)"; \
	  $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    r-base-core r-cran-maldiquant; }
	@Rscript -e 'cat("MALDIquant", as.character(packageVersion("MALDIquant")), "\n")'

$(NODE_MODULES): $(NODE_CLIENT)/package.json $(NODE_CLIENT)/package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "error: npm (Node.js 18+) is needed" \
	  "for the Thrift interop test: apt-get install nodejs npm" >&2; exit 1; }
	npm ci --prefix $(NODE_CLIENT) --no-audit --no-fund
	touch $@

$(NODE_GEN): $(THRIFT_IDL) | thrift-compiler
	rm -rf thrift/gen-nodejs
	thrift --gen js:node -o thrift $(THRIFT_IDL)

## Helm, built from source through the Go module proxy (~2 min once on 2 cores), for the
## chart tests in tests/deploy (`helm template` + kubernetes-validate).
HELM_VERSION := v3.19.0
HELM := .cache/bin/helm
GO ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
$(HELM):
	@test -x "$(GO)" || { echo "error: Go 1.24+ is needed to build helm" \
	  "(tests/deploy render the chart with it): install Go, then make again" >&2; exit 1; }
	GOBIN=$(CURDIR)/.cache/bin GOPATH=$(CURDIR)/.cache/go GOMODCACHE=$(CURDIR)/.cache/go/mod \
	  GOCACHE=$(CURDIR)/.cache/go/build GOFLAGS="-buildvcs=false -modcacherw" CGO_ENABLED=0 \
	  $(GO) install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)

helm: $(HELM)

## A real single-node Kubernetes for tests/cluster: etcd, kube-apiserver,
## kube-controller-manager, kube-scheduler and kubelet built from the Go module sources into
## .cache/k8s-<version>/bin (cold: ~25 min on 2 busy cores; then instant), and Debian's
## containerd, runc, umoci and mmdebstrap for the node, the pause and the step images
## (built here once, cached in .cache; tests/cluster rebuilds the step image when em2q_msi changes).
kubernetes: node-packages $(STAMP)
	GO=$(GO) deploy/local-cluster/build.sh
	deploy/local-cluster/pause-image.sh
	deploy/local-cluster/step-image.sh

## Argo Workflows' workflow-controller and argoexec (v4.0.5, FOR TESTS ONLY: reported security
## flaws) built from the Go module sources into .cache/argo-<version>/bin (cold: ~15 min on 2
## busy cores; then instant), and the argoexec image (umoci) for tests/cluster/test_argo.py.
argo: node-packages
	GO=$(GO) deploy/local-cluster/build-argo.sh
	deploy/local-cluster/argoexec-image.sh

node-packages:
	@{ command -v containerd && command -v runc && command -v umoci && command -v mmdebstrap \
	   && command -v gcc && test -x /usr/lib/cni/loopback; } >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; \
	  elif command -v sudo >/dev/null 2>&1; then SUDO=sudo; \
	  else echo "error: containerd/runc/umoci/mmdebstrap are missing and this is not root (no" \
	    "sudo either): run 'apt-get update && apt-get install -y containerd runc" \
	    "containernetworking-plugins umoci mmdebstrap gcc libc6-dev' as root, then make again" >&2; \
	    exit 1; fi; \
	  command -v apt-get >/dev/null 2>&1 || { echo "error: no containerd/runc/umoci/mmdebstrap" \
	    "and no apt-get: install them with your package manager" >&2; exit 1; }; \
	  echo "installing Debian's containerd, runc, umoci, mmdebstrap (apt-get)"; \
	  $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    containerd runc containernetworking-plugins umoci mmdebstrap gcc libc6-dev; }
	@containerd --version

## Start that control plane on 127.0.0.1 for a person (kubeconfig in .cache/local-kubernetes).
cluster: kubernetes $(STAMP)
	$(BIN)/python -m em2q_resources.local_kubernetes up --node

## The same cluster with a node and Argo's workflow controller (v4.0.5, tests only), and a
## namespace em2q for Workflows from `em2q export-argo` (deploy/local-cluster/README.md).
cluster-argo: kubernetes argo $(STAMP)
	$(BIN)/python -m em2q_resources.local_argo

## Set up and run the whole test suite (starts its own Elasticsearch and S3 API server).
## The cluster tests (tests/cluster) are `make test-cluster`: building Kubernetes from source
## takes ~25 min cold on 2 cores, more than CI's budget leaves (docs: deploy/local-cluster).
test: elasticsearch interop browser helm
	$(BIN)/ruff check .
	$(BIN)/python -m pytest --durations=40 --ignore=tests/cluster

## The real Kubernetes tests: builds (once, cached) and starts the local cluster, then runs
## tests/cluster (server-side dry-runs, helm install, the chunk step as a pod, Workflows on Argo).
test-cluster: elasticsearch kubernetes argo
	$(BIN)/python -m pytest tests/cluster tests/em2q_resources/test_local_kubernetes.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: elasticsearch
	$(BIN)/python -m benchmarks

## Re-resolve the lock file after changing pyproject.toml.
lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --extra dev -p 3.11 -o requirements.lock

clean:
	rm -rf $(VENV) .cache
