#!/usr/bin/env bash
# The pod sandbox ("pause") image, built from Kubernetes' own source
# (build/pause/linux/pause.c in the k8s.io/kubernetes module) with gcc and packed as an OCI
# image archive with umoci, for `ctr images import`: no registry.
# Usage: deploy/local-cluster/pause-image.sh  -> prints the archive's path
set -euo pipefail
K8S_VERSION="${K8S_VERSION:-v1.34.4}"
PAUSE_TAG="${PAUSE_TAG:-3.10.1}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
CACHE="${EM2Q_CACHE_DIR:-$ROOT/.cache}"
OUT="$CACHE/k8s-$K8S_VERSION/images"
ARCHIVE="$OUT/pause-$PAUSE_TAG.tar"
if [ -f "$ARCHIVE" ]; then echo "$ARCHIVE"; exit 0; fi
for tool in gcc umoci go; do
  command -v "$tool" >/dev/null || { echo "error: $tool is needed for the pause image" \
    "(apt-get install gcc libc6-dev umoci)" >&2; exit 1; }
done
export GOPATH="$CACHE/go" GOMODCACHE="$CACHE/go/mod" GOFLAGS="-modcacherw"
src="$(cd /tmp && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" \
  | sed -n 's/.*"Dir": "\(.*\)",*/\1/p')/build/pause/linux/pause.c"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
gcc -Os -Wall -Werror -static -DVERSION="v$PAUSE_TAG-em2q" -o "$work/pause" "$src"
umoci init --layout "$work/oci"
umoci new --image "$work/oci:$PAUSE_TAG"
umoci unpack --image "$work/oci:$PAUSE_TAG" "$work/bundle" >/dev/null
install -m 0755 "$work/pause" "$work/bundle/rootfs/pause"
umoci repack --image "$work/oci:$PAUSE_TAG" "$work/bundle"
umoci config --image "$work/oci:$PAUSE_TAG" --config.entrypoint /pause \
  --config.user 65535:65535 --os linux --architecture amd64
mkdir -p "$OUT"
tar -C "$work/oci" -cf "$ARCHIVE.tmp" .
mv "$ARCHIVE.tmp" "$ARCHIVE"
echo "$ARCHIVE"
