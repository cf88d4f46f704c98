#!/usr/bin/env bash
# ECK's custom resource definitions (Elasticsearch, Kibana, ...) from the operator's own Go
# module (config/crds/v1/all-crds.yaml of github.com/elastic/cloud-on-k8s/v3), fetched through
# the Go module proxy into the project cache: tests/cluster installs them on the local
# apiserver and dry-runs deploy/elasticsearch/eck-*.yaml against their schemas. No operator runs.
# Usage: deploy/local-cluster/eck-crds.sh  -> prints the CRD file's path
set -euo pipefail
ECK_VERSION="${ECK_VERSION:-v3.5.0}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
CACHE="${EM2Q_CACHE_DIR:-$ROOT/.cache}"
GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
test -x "$GO" || { echo "error: Go is needed to fetch ECK's CRDs from the module proxy" >&2; exit 1; }
export GOPATH="$CACHE/go" GOMODCACHE="$CACHE/go/mod" GOFLAGS="-modcacherw" GOTOOLCHAIN=local
dir="$(cd /tmp && "$GO" mod download -json "github.com/elastic/cloud-on-k8s/v3@$ECK_VERSION" \
  | sed -n 's/.*"Dir": "\(.*\)",*/\1/p')"
crds="$dir/config/crds/v1/all-crds.yaml"
test -f "$crds" || { echo "error: $crds missing from the ECK module $ECK_VERSION" >&2; exit 1; }
echo "$crds"
