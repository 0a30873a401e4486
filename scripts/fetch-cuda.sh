#!/usr/bin/env bash
# Downloads NVIDIA's CUDA driver library 535 (libcuda1, for its export list) and cuda.h
# (nvidia-cuda-dev 11.8) from Debian non-free into a cache, unpacked and never installed.
# Only the files the tests read are kept (the -dev package is ~770 MB). Prints the root.
#
#   root=$(scripts/fetch-cuda.sh)  # $root/usr/lib/x86_64-linux-gnu/nvidia/current/libcuda.so.535.261.03,
#                                  # $root/usr/include/cuda.h
#
# A cache of its own (not scripts/fetch-nvidia.sh's), so that cache's key stays as it is.
set -euo pipefail
# shellcheck source=lib/debian-nonfree.sh
. "$(dirname "$0")/lib/debian-nonfree.sh"

NVIDIA_VERSION=535.261.03-1
CUDA_DEV_VERSION=11.8.89~11.8.0-5~deb12u1
CACHE=${FAKEGPU_CACHE:-$HOME/.cache/fake-gpu-operator}
DEST=$CACHE/nvidia-cuda-$NVIDIA_VERSION
ROOT=$DEST/root
LIB=usr/lib/x86_64-linux-gnu/nvidia/current/libcuda.so.${NVIDIA_VERSION%-*}

if [ -f "$ROOT/$LIB" ] && [ -f "$ROOT/usr/include/cuda.h" ]; then
  echo "$ROOT"
  exit 0
fi

debian_nonfree_download fetch-cuda "$DEST" "libcuda1=$NVIDIA_VERSION" "nvidia-cuda-dev=$CUDA_DEV_VERSION"
rm -rf "$ROOT.tmp" && mkdir -p "$ROOT.tmp"
dpkg-deb -x "$DEST"/debs/libcuda1_*.deb "$ROOT.tmp"
# Headers only: the driver API's cuda.h and what it includes.
dpkg-deb --fsys-tarfile "$DEST"/debs/nvidia-cuda-dev_*.deb | tar -x -C "$ROOT.tmp" --wildcards \
  './usr/include/cuda.h' './usr/include/cudaTypedefs.h' './usr/include/cudaProfilerTypedefs.h'
rm -f "$DEST"/debs/nvidia-cuda-dev_*.deb
[ -f "$ROOT.tmp/$LIB" ] || { echo "fetch-cuda: $LIB missing from libcuda1" >&2; exit 1; }
rm -rf "$ROOT" && mv "$ROOT.tmp" "$ROOT"
echo "$ROOT"
