#!/usr/bin/env bash
# The platform image for the local node, without a registry or Docker: the whole code location
# (what deploy/Dockerfile builds), for `dagster api execute_step` (k8s_job_executor step pods),
# `python -m em2q_assets.step` (Argo containers) and `python -m em2q_msi.steps` (Pipes pods).
# Two layers, each cached in <cache>/images:
#   * base (keyed by the lock, pyproject.toml and this script): a Debian bookworm root file
#     system from mmdebstrap (python3 = CPython 3.11, the lock's interpreter; libglib2.0-0 for
#     pyopenms' Qt, libgomp1 for numba) + the locked RUNTIME packages (pyproject's
#     dependencies held to requirements.lock, no dev extra) installed by uv from its cache
#     (offline when the cache has them) and byte-compiled; user em2q (1000:1000);
#   * code (keyed by the sources too): em2q_msi, em2q_resources, em2q_assets, argo_bridge,
#     em2q, the Thrift IDL and workspace.yaml in /opt/em2q (PYTHONPATH), byte-compiled by
#     this host's python3 when it is 3.11 too — a layer added with `umoci insert`, so a code
#     change costs seconds, not the dependencies' minutes.
# Packed as an OCI archive for `ctr images import`, tagged by a hash of both keys.
# Usage: deploy/local-cluster/platform-image.sh  -> prints the archive's path
#        (image: em2q.local/em2q-platform:<hash>, imagePullPolicy: Never)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
CACHE="${EM2Q_CACHE_DIR:-$ROOT/.cache}"
UV="$ROOT/.venv/bin/uv"
PYTHON="$ROOT/.venv/bin/python"
PROJECT_PACKAGES="em2q_msi em2q_resources em2q_assets argo_bridge em2q"
base_tag="$( { cd "$ROOT"; cat requirements.lock pyproject.toml "$0"; } | sha256sum | cut -c1-12)"
tag="$( { cd "$ROOT"; echo "$base_tag"; cat thrift/em2q.thrift workspace.yaml;
  find $PROJECT_PACKAGES -name '*.py' -print0 | sort -z | xargs -0 cat; } \
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
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
BASE="$OUT/em2q-platform-base-$base_tag"  # an OCI layout (folder), tag "base"
if [ ! -f "$BASE/index.json" ]; then
  ROOTFS="$OUT/debian-bookworm-python3-platform.tar"
  if [ ! -f "$ROOTFS" ]; then
    rm -rf "$ROOTFS" "$ROOTFS.tmp"  # what an interrupted or older build left
    mmdebstrap --variant=minbase --format=tar --include=python3,ca-certificates,libglib2.0-0,libgomp1 \
      bookworm "$ROOTFS.tmp" http://deb.debian.org/debian >&2
    mv "$ROOTFS.tmp" "$ROOTFS"
  fi
  # the runtime subset of the lock: pyproject's dependencies, each at the lock's version
  (cd "$ROOT" && "$UV" pip compile pyproject.toml -p 3.11 -c requirements.lock --no-header \
    --quiet --offline -o "$work/runtime.lock" 2>/dev/null \
    || "$UV" pip compile pyproject.toml -p 3.11 -c requirements.lock --no-header --quiet \
      -o "$work/runtime.lock") >&2
  umoci init --layout "$work/base"
  umoci new --image "$work/base:base"
  umoci unpack --image "$work/base:base" "$work/bundle" >/dev/null
  rootfs="$work/bundle/rootfs"
  tar -C "$rootfs" -xf "$ROOTFS"
  site="$rootfs/usr/local/lib/python3.11/dist-packages"
  mkdir -p "$site" "$rootfs/opt/em2q"
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
  ln -sf python3 "$rootfs/usr/bin/python"
  echo "em2q:x:1000:1000:em2q:/home/em2q:/usr/sbin/nologin" >>"$rootfs/etc/passwd"
  echo "em2q:x:1000:" >>"$rootfs/etc/group"
  install -d -o 1000 -g 1000 "$rootfs/home/em2q"
  # the dependencies import with the image's own interpreter
  env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/tmp NUMBA_CACHE_DIR=/tmp/numba-cache \
    MPLCONFIGDIR=/tmp/matplotlib "$(command -v chroot)" "$rootfs" /usr/bin/python3 -c \
    'import dagster, dagster_k8s, dagster_pipes, numpy, numba, scipy, s3fs, elasticsearch' >&2
  chroot "$rootfs" /usr/local/bin/dagster --version >&2
  rm -rf "$rootfs/tmp/"*
  umoci repack --image "$work/base:base" "$work/bundle"
  rm -rf "$work/bundle"
  rm -rf "$BASE.tmp-$$" && mv "$work/base" "$BASE.tmp-$$"
  mv -T "$BASE.tmp-$$" "$BASE" 2>/dev/null || rm -rf "$BASE.tmp-$$"  # another build won
fi
# the code layer on a copy of the base (blobs are content-addressed: hard links; index.json
# is rewritten, so it is copied)
cp -al "$BASE" "$work/oci"
rm "$work/oci/index.json" && cp "$BASE/index.json" "$work/oci/index.json"
code="$work/code"
mkdir -p "$code/thrift"
for package in $PROJECT_PACKAGES; do
  cp -a "$ROOT/$package" "$code/"
done
cp "$ROOT/thrift/em2q.thrift" "$code/thrift/"
cp "$ROOT/workspace.yaml" "$ROOT/pyproject.toml" "$code/"
find "$code" -name __pycache__ -prune -exec rm -rf {} +
# pods run as 1000, who may not write __pycache__ next to root's files: compile here, with
# the same CPython minor version as the image's (the .pyc magic number)
if [ "$(/usr/bin/python3 -c 'import sys; print(sys.version_info[:2] == (3, 11))' 2>/dev/null)" \
  = True ]; then
  /usr/bin/python3 -m compileall -q -d /opt/em2q "$code" >/dev/null
fi
chown -R 0:0 "$code"
umoci insert --image "$work/oci:base" --tag "$tag" "$code" /opt/em2q
umoci config --image "$work/oci:$tag" \
  --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --config.env PYTHONPATH=/opt/em2q --config.env PYTHONUNBUFFERED=1 \
  --config.env PYTHONDONTWRITEBYTECODE=1 --config.env HOME=/home/em2q \
  --config.env EM2Q_CACHE_DIR=/tmp/em2q-cache --config.env NUMBA_CACHE_DIR=/tmp/numba-cache \
  --config.env MPLCONFIGDIR=/tmp/matplotlib --config.env DAGSTER_HOME=/tmp/dagster-home \
  --config.workingdir /opt/em2q --config.user 1000:1000 --os linux --architecture amd64
umoci rm --image "$work/oci:base"  # one tag in the archive: what `ctr images import` names
umoci gc --layout "$work/oci"
tar -C "$work/oci" -cf "$ARCHIVE.tmp" .
mv "$ARCHIVE.tmp" "$ARCHIVE"
# keep the newest five (worktrees and branches with other sources share the cache)
ls -t "$OUT"/em2q-platform-????????????.tar | tail -n +6 | xargs -r rm -f
ls -dt "$OUT"/em2q-platform-base-* | tail -n +4 | xargs -r rm -rf
echo "$ARCHIVE"
