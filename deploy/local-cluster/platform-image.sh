#!/usr/bin/env bash
# The platform image for the local node, without a registry or Docker: the whole code location
# (what deploy/Dockerfile builds), for `dagster api execute_step` (k8s_job_executor step pods),
# `python -m em2q_assets.step` (Argo containers) and `python -m em2q_msi.steps` (Pipes pods).
#   * a Debian bookworm root file system from mmdebstrap (python3 = CPython 3.11, the lock's
#     interpreter; libglib2.0-0 for pyopenms' Qt, libgomp1 for numba), cached;
#   * the locked RUNTIME packages (pyproject's dependencies held to requirements.lock, no dev
#     extra) installed by uv from its cache (offline when the cache has them), byte-compiled;
#   * the project's packages em2q_msi, em2q_resources, em2q_assets, argo_bridge, em2q, the
#     Thrift IDL and workspace.yaml in /opt/em2q (PYTHONPATH), user em2q (1000:1000);
# packed as an OCI archive with umoci for `ctr images import`, tagged by a hash of the lock,
# the sources and this script, cached in <cache>/images.
# Usage: deploy/local-cluster/platform-image.sh  -> prints the archive's path
#        (image: em2q.local/em2q-platform:<hash>, imagePullPolicy: Never)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
CACHE="${EM2Q_CACHE_DIR:-$ROOT/.cache}"
UV="$ROOT/.venv/bin/uv"
PYTHON="$ROOT/.venv/bin/python"
PROJECT_PACKAGES="em2q_msi em2q_resources em2q_assets argo_bridge em2q"
tag="$( { cd "$ROOT"; cat requirements.lock pyproject.toml thrift/em2q.thrift workspace.yaml;
  find $PROJECT_PACKAGES -name '*.py' -print0 | sort -z | xargs -0 cat; cat "$0"; } \
  | sha256sum | cut -c1-12)"
OUT="$CACHE/images"
ARCHIVE="$OUT/em2q-platform-$tag.tar"
if [ -f "$ARCHIVE" ]; then echo "$ARCHIVE"; exit 0; fi
for tool in mmdebstrap umoci; do
  command -v "$tool" >/dev/null || { echo "error: $tool is needed for the platform image" \
    "(apt-get install mmdebstrap umoci)" >&2; exit 1; }
done
[ -x "$UV" ] || { echo "error: $UV is missing: make venv first" >&2; exit 1; }
mkdir -p "$OUT"
ROOTFS="$OUT/debian-bookworm-python3-platform.tar"
if [ ! -f "$ROOTFS" ]; then
  mmdebstrap --variant=minbase --include=python3,ca-certificates,libglib2.0-0,libgomp1 \
    bookworm "$ROOTFS.tmp" http://deb.debian.org/debian >&2
  mv "$ROOTFS.tmp" "$ROOTFS"
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# the runtime subset of the lock: pyproject's dependencies, each at the lock's version
(cd "$ROOT" && "$UV" pip compile pyproject.toml -p 3.11 -c requirements.lock --no-header \
  --quiet --offline -o "$work/runtime.lock" 2>/dev/null \
  || "$UV" pip compile pyproject.toml -p 3.11 -c requirements.lock --no-header --quiet \
    -o "$work/runtime.lock") >&2
umoci init --layout "$work/oci"
umoci new --image "$work/oci:$tag"
umoci unpack --image "$work/oci:$tag" "$work/bundle" >/dev/null
rootfs="$work/bundle/rootfs"
tar -C "$rootfs" -xf "$ROOTFS"
site="$rootfs/usr/local/lib/python3.11/dist-packages"
mkdir -p "$site" "$rootfs/opt/em2q/thrift"
install=("$UV" pip install --no-deps --target "$site" --python "$PYTHON" --link-mode copy
  --compile-bytecode --quiet -r "$work/runtime.lock")
"${install[@]}" --offline >&2 2>/dev/null || "${install[@]}" >&2
# console scripts (dagster, ...) for the image's interpreter
for script in "$site"/bin/*; do
  [ -f "$script" ] || continue
  if head -c 2 "$script" | grep -q '#!'; then
    sed -i '1s|^#!.*python.*$|#!/usr/bin/python3|' "$script"
  fi
  mv "$script" "$rootfs/usr/local/bin/"
done
rm -rf "$site/bin"
for package in $PROJECT_PACKAGES; do
  cp -a "$ROOT/$package" "$rootfs/opt/em2q/"
done
cp "$ROOT/thrift/em2q.thrift" "$rootfs/opt/em2q/thrift/"
cp "$ROOT/workspace.yaml" "$ROOT/pyproject.toml" "$rootfs/opt/em2q/"
find "$rootfs/opt/em2q" -name __pycache__ -prune -exec rm -rf {} +
ln -sf python3 "$rootfs/usr/bin/python"
echo "em2q:x:1000:1000:em2q:/home/em2q:/usr/sbin/nologin" >>"$rootfs/etc/passwd"
echo "em2q:x:1000:" >>"$rootfs/etc/group"
install -d -o 1000 -g 1000 "$rootfs/home/em2q"
# byte-compile the project with the image's own interpreter (pods run as 1000, who may not
# write __pycache__ next to root's files), and check that the code location imports
chroot "$rootfs" /usr/bin/python3 -m compileall -q /opt/em2q >/dev/null
env -i PATH=/usr/local/bin:/usr/bin:/bin PYTHONPATH=/opt/em2q HOME=/tmp \
  NUMBA_CACHE_DIR=/tmp/numba-cache MPLCONFIGDIR=/tmp/matplotlib DAGSTER_HOME=/tmp \
  "$(command -v chroot)" "$rootfs" /usr/bin/python3 -c \
  'import em2q_msi.steps, em2q_assets.step, em2q_assets.definitions, dagster_k8s, argo_bridge' >&2
chroot "$rootfs" /usr/local/bin/dagster --version >&2
rm -rf "$rootfs/tmp/"*
umoci repack --image "$work/oci:$tag" "$work/bundle"
umoci config --image "$work/oci:$tag" \
  --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --config.env PYTHONPATH=/opt/em2q --config.env PYTHONUNBUFFERED=1 \
  --config.env PYTHONDONTWRITEBYTECODE=1 --config.env HOME=/home/em2q \
  --config.env EM2Q_CACHE_DIR=/tmp/em2q-cache --config.env NUMBA_CACHE_DIR=/tmp/numba-cache \
  --config.env MPLCONFIGDIR=/tmp/matplotlib --config.env DAGSTER_HOME=/tmp/dagster-home \
  --config.workingdir /opt/em2q --config.user 1000:1000 --os linux --architecture amd64
tar -C "$work/oci" -cf "$ARCHIVE.tmp" .
mv "$ARCHIVE.tmp" "$ARCHIVE"
# keep the newest three (worktrees and branches with other sources share the cache)
ls -t "$OUT"/em2q-platform-*.tar | tail -n +4 | xargs -r rm -f
echo "$ARCHIVE"
