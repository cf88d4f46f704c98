#!/usr/bin/env bash
# The argoexec image for the local node, without a registry: the static argoexec built by
# build-argo.sh (CGO_ENABLED=0) on an empty root file system with what Argo's own
# distroless-static image adds (/etc/mime.types, /etc/nsswitch.conf, /tmp), packed as an OCI
# archive with umoci for `ctr images import`. The emissary executor runs it as each Workflow
# pod's init container (which copies argoexec into the pod's main container) and wait sidecar.
# FOR TESTS ONLY (Argo v4.0.5 has reported security flaws).
# Usage: deploy/local-cluster/argoexec-image.sh  -> prints the archive's path
set -euo pipefail
ARGO_VERSION="${ARGO_VERSION:-v4.0.5}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
CACHE="${EM2Q_CACHE_DIR:-$ROOT/.cache}"
BINARY="$CACHE/argo-$ARGO_VERSION/bin/argoexec"
OUT="$CACHE/images"
ARCHIVE="$OUT/argoexec-$ARGO_VERSION.tar"
if [ -f "$ARCHIVE" ] && [ "$ARCHIVE" -nt "$BINARY" ]; then echo "$ARCHIVE"; exit 0; fi
"$ROOT/deploy/local-cluster/build-argo.sh" argoexec
command -v umoci >/dev/null || { echo "error: umoci is needed for the argoexec image" \
  "(apt-get install umoci)" >&2; exit 1; }
if file "$BINARY" | grep -q "dynamically linked"; then
  echo "error: $BINARY is dynamically linked; the image has no libc (build with CGO_ENABLED=0)" >&2
  exit 1
fi
mkdir -p "$OUT"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
umoci init --layout "$work/oci"
umoci new --image "$work/oci:$ARGO_VERSION"
umoci unpack --image "$work/oci:$ARGO_VERSION" "$work/bundle" >/dev/null
rootfs="$work/bundle/rootfs"
mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/tmp"
chmod 1777 "$rootfs/tmp"
install -m 0755 "$BINARY" "$rootfs/bin/argoexec"
echo "hosts: files dns" > "$rootfs/etc/nsswitch.conf"
[ -f /etc/mime.types ] && cp /etc/mime.types "$rootfs/etc/"
umoci repack --image "$work/oci:$ARGO_VERSION" "$work/bundle"
umoci config --image "$work/oci:$ARGO_VERSION" --config.entrypoint argoexec \
  --config.env PATH=/bin --os linux --architecture amd64
tar -C "$work/oci" -cf "$ARCHIVE.tmp" .
mv "$ARCHIVE.tmp" "$ARCHIVE"
echo "$ARCHIVE"
