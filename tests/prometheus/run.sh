#!/usr/bin/env bash
# Inference utilization against a real Prometheus: installs Debian's `prometheus` into the cache
# (tests/prometheus/install.sh), then runs operator/tests/prometheus_inference.rs, which starts
# Prometheus on loopback with a generated config scraping a test exporter of
# revision_app_request_count/kube_pod_info and our /metrics, and checks the utilization.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
FAKEGPU_PROMETHEUS="${FAKEGPU_PROMETHEUS:-$(tests/prometheus/install.sh)}"
export FAKEGPU_PROMETHEUS
"$FAKEGPU_PROMETHEUS" --version 2>&1 | head -1
CI="${CI:-true}" cargo test -p fake-gpu-operator --test prometheus_inference -- --nocapture
