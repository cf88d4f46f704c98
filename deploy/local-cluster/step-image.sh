#!/usr/bin/env bash
# A step image for the local node, without a registry: a Debian bookworm root file system
# from mmdebstrap (python3 = CPython 3.11, the interpreter the lock file targets), the
# runtime packages the step CLI (python -m em2q_msi.steps) imports copied from the project's
# virtual environment (the locked versions, cp311 wheels), and the project's em2q_msi;
# packed as an OCI archive with umoci for `ctr images import`.
# Usage: deploy/local-cluster/step-image.sh  -> prints the archive's path (tag: em2q-step:<hash>)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
CACHE="${EM2Q_CACHE_DIR:-$ROOT/.cache}"
VENV_SITE="$(cd "$ROOT" && .venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
# what `python -m em2q_msi.steps chunk` with s3:// storage and Dagster Pipes imports
PACKAGES="numpy numpy.libs dagster_pipes fsspec s3fs aiobotocore botocore aiohttp aiohappyeyeballs
aioitertools aiosignal attr attrs frozenlist multidict propcache yarl idna jmespath dateutil six
urllib3 wrapt certifi click typing_extensions httpx httpcore h11 anyio sniffio rich pygments
markdown_it mdurl pyimzml"
tag="$( { cat "$ROOT/requirements.lock"; find "$ROOT/em2q_msi" -name '*.py' -print0 | sort -z \
  | xargs -0 cat; cat "$0"; } | sha256sum | cut -c1-12)"
OUT="$CACHE/images"
ARCHIVE="$OUT/em2q-step-$tag.tar"
if [ -f "$ARCHIVE" ]; then echo "$ARCHIVE"; exit 0; fi
for tool in mmdebstrap umoci; do
  command -v "$tool" >/dev/null || { echo "error: $tool is needed for the step image" \
    "(apt-get install mmdebstrap umoci)" >&2; exit 1; }
done
mkdir -p "$OUT"
ROOTFS="$OUT/debian-bookworm-python3.tar"
if [ ! -f "$ROOTFS" ]; then
  rm -rf "$ROOTFS" "$ROOTFS.tmp"  # what an interrupted or older build left
  mmdebstrap --variant=minbase --format=tar --include=python3,ca-certificates bookworm "$ROOTFS.tmp" \
    http://deb.debian.org/debian >&2
  mv "$ROOTFS.tmp" "$ROOTFS"
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
umoci init --layout "$work/oci"
umoci new --image "$work/oci:$tag"
umoci unpack --image "$work/oci:$tag" "$work/bundle" >/dev/null
tar -C "$work/bundle/rootfs" -xf "$ROOTFS"
site="$work/bundle/rootfs/usr/local/lib/python3.11/dist-packages"
mkdir -p "$site" "$work/bundle/rootfs/opt/em2q"
for package in $PACKAGES; do
  for path in "$VENV_SITE/$package" "$VENV_SITE/$package.py" "$VENV_SITE/${package}"-*.dist-info; do
    [ -e "$path" ] && cp -a "$path" "$site/"
  done
done
cp -a "$ROOT/em2q_msi" "$work/bundle/rootfs/opt/em2q/"
find "$work/bundle/rootfs/opt/em2q" -name __pycache__ -prune -exec rm -rf {} +
ln -sf python3 "$work/bundle/rootfs/usr/bin/python"
umoci repack --image "$work/oci:$tag" "$work/bundle"
umoci config --image "$work/oci:$tag" --config.env PYTHONPATH=/opt/em2q \
  --config.workingdir /opt/em2q --config.user 1000:1000 --os linux --architecture amd64
tar -C "$work/oci" -cf "$ARCHIVE.tmp" .
rm -f "$OUT"/em2q-step-*.tar  # the images of older sources
mv "$ARCHIVE.tmp" "$ARCHIVE"
echo "$ARCHIVE"
