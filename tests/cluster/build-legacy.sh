#!/usr/bin/env bash
# Builds kube-scheduler of the older Kubernetes in legacy.env (whose DRA plugin allocates
# through resource.k8s.io/v1beta1) from the wrapper module k8s-legacy/, once, into its own
# cache entry keyed by legacy.env, the wrapper's go.mod/go.sum and the Go version. Only the
# scheduler: the API server, controller-manager and kwok stay the pinned ones of build.sh.
# Only the E2E that needs it runs this (scripts/cluster-ci.sh when its test is selected), so
# a cold CI that does not run that test never pays for it. Prints the bin directory last on stdout.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=legacy.env
source "$HERE/legacy.env"

command -v go >/dev/null || { echo "build-legacy.sh: the Go toolchain (go) is not on PATH" >&2; exit 2; }

CACHE_ROOT="${FAKEGPU_CACHE:-$HOME/.cache/fake-gpu-operator}"
KEY="$( { cat "$HERE/legacy.env" "$HERE/k8s-legacy/go.mod" "$HERE/k8s-legacy/go.sum"; go env GOVERSION; } | sha256sum | cut -c1-16)"
DEST="$CACHE_ROOT/k8s-legacy-$KEY"

if [ -x "$DEST/bin/kube-scheduler" ]; then
  echo "build-legacy.sh: reusing $DEST/bin" >&2
  echo "$DEST/bin"; exit 0
fi

mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/.build-legacy-$KEY.lock"
flock 9
if [ -x "$DEST/bin/kube-scheduler" ]; then echo "$DEST/bin"; exit 0; fi

export GOFLAGS="-p=${GO_PARALLEL:-2} -buildvcs=false -mod=readonly"
export CGO_ENABLED=0
STAGE="$(mktemp -d "$CACHE_ROOT/.stage-legacy-$KEY.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/bin"
start=$SECONDS
MINOR="$(echo "$LEGACY_K8S_VERSION" | cut -d. -f2)"
LD=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  LD="$LD -X $pkg.gitVersion=$LEGACY_K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$MINOR -X $pkg.gitTreeState=clean"
done
echo "build-legacy.sh: building kube-scheduler $LEGACY_K8S_VERSION ..." >&2
(cd "$HERE/k8s-legacy" && go build -trimpath -ldflags "-s -w $LD" -o "$STAGE/bin/" k8s.io/kubernetes/cmd/kube-scheduler)
cp "$HERE/legacy.env" "$STAGE/legacy.env"
rm -rf "$DEST"
mv "$STAGE" "$DEST"
trap - EXIT
echo "build-legacy.sh: kube-scheduler built in $((SECONDS - start)) s into $DEST/bin" >&2
echo "$DEST/bin"
