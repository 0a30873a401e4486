#!/usr/bin/env bash
# Chart checks without a cluster: `helm lint` (default and every values file) and the template
# tests (template_test.py). Uses the helm the cluster harness builds (tests/cluster/build.sh),
# or $HELM.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
if [ -z "${HELM:-}" ]; then
  BIN="${FAKEGPU_K8S_BIN_DIR:-$(tests/cluster/build.sh)}"
  HELM="$BIN/helm"
fi
python3 -c 'import yaml' 2>/dev/null || python3 -m pip install -q pyyaml
echo "== helm lint ($("$HELM" version --short))"
"$HELM" lint --strict helm/fake-gpu-operator
for v in tests/helm/values/*.yaml; do
  "$HELM" lint --strict helm/fake-gpu-operator -f "$v" >/dev/null || { echo "lint failed with $v" >&2; exit 1; }
done
echo "== template tests"
python3 tests/helm/template_test.py "$HELM"
