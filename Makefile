# EM²Q — two entry points for a fresh machine: `make run` and `make test`.
# Every target sets up what it needs first (virtual environment from the lock file,
# Elasticsearch distribution from Maven Central); nothing is installed by hand.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
UV_VERSION := 0.9.8
STAMP  := $(VENV)/.installed

.PHONY: run test venv elasticsearch interop thrift-compiler lint bench lock clean browser helm maldiquant \
	kubernetes control-plane cluster node-packages test-cluster argo cluster-argo cluster-parts

## Bytecode is compiled at install (uv does not by default): where PYTHONDONTWRITEBYTECODE is
## set, as on CI, every process would otherwise compile Dagster, pandas, sklearn and numba from
## source at each start (13 s instead of 4 s for a run worker's imports on 2 cores).

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip sync --quiet --compile-bytecode --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	$(BIN)/python -m compileall -q -j 0 $(patsubst %/__init__.py,%,$(wildcard */__init__.py))
	touch $(STAMP)

venv: $(STAMP)

## Fetch (mvn) and unpack the Elasticsearch distribution into the project cache.
elasticsearch: $(STAMP)
	$(BIN)/python -m em2q_resources.elasticsearch_server fetch

## Run the platform locally on its embedded defaults with the example data.
run: elasticsearch
	$(BIN)/em2q dev

## $(call debian-packages,CHECK,PACKAGES[,APT-OPTIONS]): unless the shell test CHECK passes,
## install Debian's PACKAGES with apt-get (as root, or through sudo), or say how to.
define debian-packages
@{ $(1); } >/dev/null 2>&1 || { \
  if [ "$$(id -u)" = 0 ]; then SUDO=; \
  elif command -v sudo >/dev/null 2>&1; then SUDO=sudo; \
  else echo "error: $(2) missing and this is not root (no sudo either):" \
    "run 'apt-get update && apt-get install -y $(2)' as root, then make again" >&2; \
    exit 1; fi; \
  command -v apt-get >/dev/null 2>&1 || { echo "error: $(2) missing and no apt-get:" \
    "install them with your package manager" >&2; exit 1; }; \
  echo "installing Debian's $(2) (apt-get)"; \
  $$SUDO apt-get update -qq && \
  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(3) $(2); }
endef

## The other-language client of the Thrift service tests: Debian's Apache Thrift compiler,
## the Node.js client's locked npm packages and the JavaScript code generated from the IDL.
THRIFT_IDL   := thrift/em2q.thrift
NODE_CLIENT  := tests/interop/node
NODE_GEN     := thrift/gen-nodejs/MetadataService.js
NODE_MODULES := $(NODE_CLIENT)/node_modules/.package-lock.json

interop: thrift-compiler $(NODE_MODULES) $(NODE_GEN)

thrift-compiler:
	$(call debian-packages,command -v thrift,thrift-compiler)
	@thrift --version

## The web catalog's browser tests: Debian's Chromium and its WebDriver (Selenium drives them).
browser:
	$(call debian-packages,command -v chromium && command -v chromedriver,chromium chromium-driver)
	@chromium --version

## The study benchmark's peer tool (benchmarks/bench_study.py): R with Debian's MALDIquant
## (binPeaks + intensityMatrix). Not part of `make test`; the benchmark skips that column without it.
maldiquant:
	$(call debian-packages,Rscript -e 'library(MALDIquant)',r-base-core r-cran-maldiquant,--no-install-recommends)
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
## .cache/k8s-<version>/bin (cold: ~800 CPU s of Go builds; then instant), and Debian's
## containerd, runc, umoci and mmdebstrap for the node, the pause and the step images
## (built here once, cached in .cache; tests/cluster rebuilds the step image when em2q_msi changes).
kubernetes: node-packages control-plane
	GO=$(GO) deploy/local-cluster/build.sh kube-controller-manager kube-scheduler kubelet
	deploy/local-cluster/pause-image.sh
	deploy/local-cluster/step-image.sh

## Argo Workflows' workflow-controller and argoexec (v4.0.5, FOR TESTS ONLY: reported security
## flaws) built from the Go module sources into .cache/argo-<version>/bin (cold: ~15 min on 2
## busy cores; then instant), and the argoexec image (umoci) for tests/cluster/test_argo.py.
argo: node-packages
	GO=$(GO) deploy/local-cluster/build-argo.sh
	deploy/local-cluster/argoexec-image.sh

## Stage 1 alone (etcd and kube-apiserver: no controllers, no node; cold ~590 CPU s of Go) and
## ECK's CRDs (from its Go module): what `make test` needs for the server-side dry-runs and the
## helm install on a real apiserver.
control-plane: $(STAMP)
	GO=$(GO) deploy/local-cluster/build.sh etcd kube-apiserver
	GO=$(GO) deploy/local-cluster/eck-crds.sh >/dev/null

node-packages:
	$(call debian-packages,command -v containerd && command -v runc && command -v umoci && command -v mmdebstrap && command -v gcc && test -x /usr/lib/cni/loopback,containerd runc containernetworking-plugins umoci mmdebstrap gcc libc6-dev,--no-install-recommends)
	@containerd --version

## Start that control plane on 127.0.0.1 for a person (kubeconfig in .cache/local-kubernetes).
cluster: kubernetes $(STAMP)
	$(BIN)/python -m em2q_resources.local_kubernetes up --node

## The same cluster with a node and Argo's workflow controller (v4.0.5, tests only), and a
## namespace em2q for Workflows from `em2q export-argo` (deploy/local-cluster/README.md).
cluster-argo: kubernetes argo $(STAMP)
	$(BIN)/python -m em2q_resources.local_argo

## Everything tests/cluster runs: the Kubernetes and Argo binaries and the images (pause, step,
## platform, argoexec), each built once and cached in .cache.
cluster-parts: kubernetes argo
	deploy/local-cluster/platform-image.sh

## Set up and run the whole test suite (starts its own Elasticsearch and S3 API server) and
## stage 1 of the real cluster: tests/cluster's server-side dry-runs and helm install on a
## control plane built from source (etcd + kube-apiserver, cold ~9 min on 2 cores with its module
## downloads, then cached in .cache).
## The node and Argo stages (NODE_AND_ARGO_TESTS) are `make test-cluster`: their cold parts
## (kubelet, Argo ~9 min, images ~5 min) and tests (~6 min) do not fit CI's 40-45 min budget
## beside the suite (numbers: deploy/local-cluster/README.md).
NODE_AND_ARGO_TESTS := tests/cluster/test_step_pods.py tests/cluster/test_step_jobs.py \
	tests/cluster/test_argo.py
test: elasticsearch interop browser helm control-plane
	$(BIN)/ruff check .
	$(BIN)/python -m pytest --durations=40 $(NODE_AND_ARGO_TESTS:%=--ignore=%)

## The real Kubernetes tests alone: builds (once, cached) and starts the local cluster, then
## runs tests/cluster (server-side dry-runs, helm install, steps as pods, Workflows on Argo).
test-cluster: elasticsearch cluster-parts
	$(BIN)/python -m pytest -rs tests/cluster tests/em2q_resources/test_local_kubernetes.py

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
