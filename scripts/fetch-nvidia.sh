#!/usr/bin/env bash
# Downloads NVIDIA's nvidia-smi 535 and nvml.h (+ the real libnvidia-ml for its export list)
# from Debian non-free into a cache, unpacked and never installed. Prints the unpacked root.
#
#   root=$(scripts/fetch-nvidia.sh)   # $root/usr/lib/nvidia/current/nvidia-smi, $root/usr/include/nvml.h
#
# Uses a private APT configuration with contrib and non-free enabled, so the machine's own
# sources stay untouched.
set -euo pipefail
# shellcheck source=lib/debian-nonfree.sh
. "$(dirname "$0")/lib/debian-nonfree.sh"

NVIDIA_VERSION=535.261.03-1
NVML_DEV_VERSION=11.8.86~11.8.0-5~deb12u1
CACHE=${FAKEGPU_CACHE:-$HOME/.cache/fake-gpu-operator}
DEST=$CACHE/nvidia-$NVIDIA_VERSION
ROOT=$DEST/root

if [ -x "$ROOT/usr/lib/nvidia/current/nvidia-smi" ] && [ -f "$ROOT/usr/include/nvml.h" ]; then
  echo "$ROOT"
  exit 0
fi

debian_nonfree_download fetch-nvidia "$DEST" "nvidia-smi=$NVIDIA_VERSION" "libnvidia-ml1=$NVIDIA_VERSION" "libnvidia-ml-dev=$NVML_DEV_VERSION"
rm -rf "$ROOT.tmp" && mkdir -p "$ROOT.tmp"
for deb in "$DEST"/debs/*.deb; do dpkg-deb -x "$deb" "$ROOT.tmp"; done
rm -rf "$ROOT" && mv "$ROOT.tmp" "$ROOT"
echo "$ROOT"
