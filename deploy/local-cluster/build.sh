#!/usr/bin/env bash
# Build etcd, the Kubernetes control plane (kube-apiserver, kube-controller-manager,
# kube-scheduler) and the kubelet from the Go module sources, into .cache/k8s-<version>/bin.
#
# k8s.io/kubernetes cannot be `go install`ed: its go.mod replaces its staging modules
# (k8s.io/api, k8s.io/apiserver, ...) with local paths. So this generates a small wrapper
# module that requires k8s.io/kubernetes at K8S_VERSION, pins every staging module to the
# published v0.X.Y of the same release, and builds the commands from it. etcd is built from
# the same module graph (go.etcd.io/etcd/server/v3 at the version Kubernetes itself pins),
# so the server and the apiserver's etcd client match.
#
# Usage: deploy/local-cluster/build.sh [component ...]   (default: all five)
# A second run finds the binaries and returns at once.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.34.4}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
CACHE="${EM2Q_CACHE_DIR:-$ROOT/.cache}"
OUT="$CACHE/k8s-$K8S_VERSION"
GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
COMPONENTS=("$@")
[ ${#COMPONENTS[@]} -gt 0 ] || COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kubelet)

missing=()
for c in "${COMPONENTS[@]}"; do [ -x "$OUT/bin/$c" ] || missing+=("$c"); done
[ ${#missing[@]} -gt 0 ] || exit 0

test -x "$GO" || { echo "error: Go 1.24+ is needed to build the local Kubernetes control plane" \
  "(tests/cluster start it): install Go, then make again" >&2; exit 1; }

export GOPATH="$CACHE/go" GOMODCACHE="$CACHE/go/mod" GOCACHE="$CACHE/go/build"
export GOFLAGS="-buildvcs=false -modcacherw" CGO_ENABLED=0 GOTOOLCHAIN=local

SRC="$OUT/src"
mkdir -p "$SRC/etcd" "$OUT/bin"
staging_version="v0.${K8S_VERSION#v1.}"
gomod_json="$(cd "$SRC" && "$GO" mod download -json "k8s.io/kubernetes@$K8S_VERSION")"
upstream_mod="$(printf '%s' "$gomod_json" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')"

# The wrapper's go.mod: Kubernetes' own requirements (so the build uses exactly the versions
# the release was tested with), plus the staging modules at their published versions.
{
  echo "module em2q.local/k8s-build"
  echo
  echo "go 1.24.0"
  echo
  echo "godebug default=go1.24"
  echo
  echo "require k8s.io/kubernetes $K8S_VERSION"
  echo
  sed -n '/^require (/,/^)/p' "$upstream_mod"
  echo
  echo "replace ("
  sed -n '/^replace (/,/^)/p' "$upstream_mod" | awk -v v="$staging_version" \
    '$2 == "=>" { print "\t" $1 " => " $1 " " v }'
  echo ")"
} > "$SRC/go.mod.new"
if ! cmp -s "$SRC/go.mod.new" "$SRC/go.mod.gen" 2>/dev/null; then
  cp "$SRC/go.mod.new" "$SRC/go.mod"
  cp "$SRC/go.mod.new" "$SRC/go.mod.gen"
fi
rm -f "$SRC/go.mod.new"
cat > "$SRC/etcd/main.go" <<'GO'
// etcd, built from go.etcd.io/etcd/server/v3 at the version Kubernetes pins.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO

# the version the components report (kubectl version, helm's kubeVersion check), as
# hack/lib/version.sh stamps it in Kubernetes' own build
minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
version_ldflags=""
for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
  version_ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  version_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

cd "$SRC"
for c in "${missing[@]}"; do
  case "$c" in
    etcd) pkg=./etcd ;;
    *) pkg="k8s.io/kubernetes/cmd/$c" ;;
  esac
  start=$(date +%s)
  echo "building $c ($K8S_VERSION) ..." >&2
  "$GO" build -mod=mod -trimpath -ldflags="-s -w$version_ldflags" -o "$OUT/bin/$c.tmp" "$pkg"
  mv "$OUT/bin/$c.tmp" "$OUT/bin/$c"
  echo "built $c in $(( $(date +%s) - start )) s" >&2
done
