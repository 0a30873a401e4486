#!/usr/bin/env bash
# Loads each image archive of DIR with podman (Debian's, daemonless) into a private store, both
# ways the archive can be read — `podman load` (which takes the Docker-archive `manifest.json`, as
# `docker load` does) and `podman pull oci-archive:` (the OCI layout: `index.json`, blobs) — and
# checks that podman lists the image under the name the archive carries: loaders besides
# containerd's `ctr images import` (Docker and kind need a Docker engine, which this machine lacks).
# The store lives in a temporary directory; the global paths podman creates for root
# (/run/libpod, /var/lib/containers) are removed again when they did not exist before.
#
#   tests/real-node/images/podman-load.sh DIR      (needs root: installs podman when missing)
set -euo pipefail
DIR=$1
if ! command -v podman >/dev/null; then
  echo "podman-load: installing podman from Debian" >&2
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends podman >&2
fi
created=()
for p in /run/libpod /var/lib/containers; do [ -e "$p" ] || created+=("$p"); done
WORK=$(mktemp -d)
cleanup() { rm -rf "$WORK"; [ ${#created[@]} -eq 0 ] || rm -rf "${created[@]}"; }
trap cleanup EXIT
printf '[storage]\ndriver = "vfs"\nrunroot = "%s/run"\ngraphroot = "%s/root"\n' "$WORK" "$WORK" >"$WORK/storage.conf"
pm() { CONTAINERS_STORAGE_CONF="$WORK/storage.conf" podman --cgroup-manager=cgroupfs --events-backend=none --tmpdir "$WORK/tmp" "$@"; }
status=0
for tar in "$DIR"/*.tar; do
  name=$(python3 -c 'import json,sys,tarfile; t=tarfile.open(sys.argv[1]); print(json.load(t.extractfile("index.json"))["manifests"][0]["annotations"]["io.containerd.image.name"])' "$tar")
  if pm load -q -i "$tar" >"$WORK/load.txt" 2>&1 && pm image exists "$name"; then
    echo "ok   podman load $(basename "$tar") -> $name"
  else
    echo "FAIL podman load $(basename "$tar"): $(tail -2 "$WORK/load.txt")"
    status=1
  fi
  pm rmi -f "$name" >/dev/null 2>&1 || true
  if pm pull -q "oci-archive:$tar" >"$WORK/pull.txt" 2>&1 && pm image exists "$name"; then
    echo "ok   podman pull oci-archive:$(basename "$tar") -> $name"
  else
    echo "FAIL podman pull oci-archive:$(basename "$tar"): $(tail -2 "$WORK/pull.txt")"
    status=1
  fi
done
exit $status
