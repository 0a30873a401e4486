#!/usr/bin/env bash
# Inference utilization against a real Prometheus: installs Debian's `prometheus` package into the
# cache (apt-get download + dpkg-deb -x, the system is not touched), then runs the Rust test
# operator/tests/prometheus_inference.rs, which starts Prometheus on loopback with a generated
# config scraping a test exporter of revision_app_request_count/kube_pod_info and checks the
# utilization the status-exporter's client computes.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${FAKEGPU_CACHE:-$HOME/.cache/fake-gpu-operator}/prometheus"
BIN="$CACHE/root/usr/bin/prometheus"
if [ -z "${FAKEGPU_PROMETHEUS:-}" ]; then
  if [ ! -x "$BIN" ]; then
    mkdir -p "$CACHE" && cd "$CACHE"
    ls prometheus_*.deb >/dev/null 2>&1 || apt-get download prometheus || { apt-get update -qq && apt-get download prometheus; }
    rm -rf root && dpkg-deb -x "$(ls prometheus_*.deb | head -1)" root
  fi
  export FAKEGPU_PROMETHEUS="$BIN"
fi
"$FAKEGPU_PROMETHEUS" --version 2>&1 | head -1
cd "$ROOT"
export CI="${CI:-true}"
cargo test -p fake-gpu-operator --test prometheus_inference -- --nocapture
