#!/usr/bin/env bash
# Build Argo Workflows' workflow-controller and argoexec from the Go module sources, into
# .cache/argo-<version>/bin. FOR TESTS ONLY: v4.0.5 is the one version the module proxy here
# serves, and it has reported security flaws; nothing outside tests/cluster may run it.
#
# github.com/argoproj/argo-workflows/v4 has no replace directives, so a small wrapper module
# that requires it at ARGO_VERSION builds its commands with exactly the release's module
# graph (from a copy of the module: see the symlink note below). Binaries are static
# (CGO_ENABLED=0, as Argo's own Makefile builds them: argoexec is copied into every Workflow
# pod by the emissary executor) and stamped with the release version as the Makefile does
# (-X github.com/argoproj/argo-workflows/v4.version=...).
#
# Usage: deploy/local-cluster/build-argo.sh [workflow-controller|argoexec ...]  (default: both)
# A second run finds the binaries and returns at once.
set -euo pipefail

ARGO_VERSION="${ARGO_VERSION:-v4.0.5}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
CACHE="${EM2Q_CACHE_DIR:-$ROOT/.cache}"
OUT="$CACHE/argo-$ARGO_VERSION"
GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
MODULE=github.com/argoproj/argo-workflows/v4
COMPONENTS=("$@")
[ ${#COMPONENTS[@]} -gt 0 ] || COMPONENTS=(workflow-controller argoexec)

missing=()
for c in "${COMPONENTS[@]}"; do [ -x "$OUT/bin/$c" ] || missing+=("$c"); done
[ ${#missing[@]} -gt 0 ] || exit 0

test -x "$GO" || { echo "error: Go 1.25+ is needed to build the local Argo workflow controller" \
  "(tests/cluster start it): install Go, then make again" >&2; exit 1; }

export GOPATH="$CACHE/go" GOMODCACHE="$CACHE/go/mod" GOCACHE="$CACHE/go/build"
export GOFLAGS="-buildvcs=false -modcacherw" CGO_ENABLED=0 GOTOOLCHAIN=local

SRC="$OUT/src"
mkdir -p "$SRC" "$OUT/bin"
info="$(cd "$SRC" && "$GO" mod download -json "$MODULE@$ARGO_VERSION")"
commit="$(printf '%s' "$info" | sed -n 's/.*"Hash": "\(.*\)",*/\1/p')"
go_version="$(sed -n 's/^go \(.*\)/\1/p' "$(printf '%s' "$info" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')")"

# Upstream's workflow/executor/osspecific/signal_linux.go is a symlink to signal_darwin.go,
# and module zips leave symlinks out (argoproj/argo-workflows#9590 shows the same link), so
# argoexec does not build from the module as served ("undefined: Setpgid"; Go refuses build
# overlays inside the module cache). The wrapper therefore builds a copy of the module (its
# Go sources: docs, manifests and the UI left out) with the link restored, through a replace.
module_dir="$(printf '%s' "$info" | sed -n 's/.*"Dir": "\(.*\)",*/\1/p')"
copy="$SRC/argo-workflows"
if [ ! -f "$copy/.complete" ]; then
  rm -rf "$copy"
  mkdir -p "$copy"
  tar -C "$module_dir" --exclude=./docs --exclude=./manifests --exclude=./ui --exclude=./sdks \
    -cf - . | tar -C "$copy" -xf -
  chmod -R u+w "$copy"
  ln -sf signal_darwin.go "$copy/workflow/executor/osspecific/signal_linux.go"
  touch "$copy/.complete"
fi
printf 'module em2q.local/argo-build\n\ngo %s\n\nrequire %s %s\n\nreplace %s => ./argo-workflows\n' \
  "$go_version" "$MODULE" "$ARGO_VERSION" "$MODULE" > "$SRC/go.mod"

ldflags="-s -w"
for kv in "version=$ARGO_VERSION" "gitTag=$ARGO_VERSION" "gitCommit=$commit" \
  "gitTreeState=clean" "buildDate=1970-01-01T00:00:00Z"; do
  ldflags+=" -X $MODULE.$kv"
done

cd "$SRC"
for c in "${missing[@]}"; do
  start=$(date +%s)
  echo "building $c ($ARGO_VERSION, tests only) ..." >&2
  nice -n "${BUILD_NICE:-10}" "$GO" build -mod=mod -trimpath -ldflags="$ldflags" \
    -o "$OUT/bin/$c.tmp" "$MODULE/cmd/$c"
  mv "$OUT/bin/$c.tmp" "$OUT/bin/$c"
  echo "built $c in $(( $(date +%s) - start )) s" >&2
done
