#!/usr/bin/env bash
# Installs Debian's `prometheus` package into the cache without touching the system
# (apt-get download + dpkg-deb -x) and prints the binary's path. A no-op when it is there.
set -euo pipefail
CACHE="${FAKEGPU_CACHE:-$HOME/.cache/fake-gpu-operator}/prometheus"
BIN="$CACHE/root/usr/bin/prometheus"
if [ ! -x "$BIN" ]; then
  mkdir -p "$CACHE" && cd "$CACHE"
  if ! ls prometheus_*.deb >/dev/null 2>&1; then
    apt-get download prometheus >&2 || { apt-get update -qq >&2 && apt-get download prometheus >&2; }
  fi
  rm -rf root.tmp && dpkg-deb -x "$(ls prometheus_*.deb | head -1)" root.tmp && mv root.tmp root
fi
echo "$BIN"
