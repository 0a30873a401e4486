#!/usr/bin/env bash
# Builds the pinned control-plane binaries (etcd, kwok, helm, kube-apiserver,
# kube-controller-manager, kube-scheduler, kubectl) from the wrapper Go modules next to this
# script, once, into a cache keyed by the versions, the wrapper go.mod/go.sum files and the Go
# version. Later runs reuse the cache. Progress goes to stderr; the bin directory is printed on
# stdout (last line) so callers can do BIN="$(tests/cluster/build.sh)".
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$HERE/versions.env"

command -v go >/dev/null || { echo "build.sh: the Go toolchain (go) is not on PATH" >&2; exit 2; }

CACHE_ROOT="${FAKEGPU_CACHE:-$HOME/.cache/fake-gpu-operator}"
KEY="$( { cat "$HERE/versions.env"; cat "$HERE"/{k8s,etcd,kwok,helm}/go.mod "$HERE"/{k8s,etcd,kwok,helm}/go.sum; go env GOVERSION; } | sha256sum | cut -c1-16)"
DEST="$CACHE_ROOT/k8s-$KEY"
BINS=(etcd kwok helm kube-apiserver kube-controller-manager kube-scheduler kubectl)

complete() { for b in "${BINS[@]}"; do [ -x "$DEST/bin/$b" ] || return 1; done; }

if complete; then
  echo "build.sh: reusing cached binaries in $DEST/bin" >&2
  echo "$DEST/bin"; exit 0
fi

mkdir -p "$CACHE_ROOT"
# Two concurrent builds on 2 cores would each take twice as long; the second waits and reuses.
exec 9>"$CACHE_ROOT/.build-$KEY.lock"
flock 9
if complete; then echo "$DEST/bin"; exit 0; fi

export GOFLAGS="-p=${GO_PARALLEL:-2} -buildvcs=false -mod=readonly"
export CGO_ENABLED=0
STAGE="$(mktemp -d "$CACHE_ROOT/.stage-$KEY.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/bin"
start=$SECONDS

step() { # name dir ldflags packages...
  local name=$1 dir=$2 ld=$3; shift 3
  local t=$SECONDS
  echo "build.sh: building $name ..." >&2
  (cd "$HERE/$dir" && go build -trimpath -ldflags "-s -w $ld" -o "$STAGE/bin/" "$@")
  echo "build.sh: $name done in $((SECONDS - t)) s" >&2
}

step etcd etcd "" go.etcd.io/etcd/server/v3
# go names a /vN module's main after the element before /vN ("server"); older go used "v3".
for n in server v3; do if [ -e "$STAGE/bin/$n" ]; then mv "$STAGE/bin/$n" "$STAGE/bin/etcd"; fi; done
step kwok kwok "-X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}" sigs.k8s.io/kwok/cmd/kwok
step helm helm "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
  helm.sh/helm/v3/cmd/helm
MINOR="$(echo "$K8S_VERSION" | cut -d. -f2)"
KLD=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  KLD="$KLD -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$MINOR -X $pkg.gitTreeState=clean"
done
step kubernetes k8s "$KLD" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl

cp "$HERE/versions.env" "$STAGE/versions.env"
rm -rf "$DEST"
mv "$STAGE" "$DEST"
trap - EXIT
echo "build.sh: all binaries built in $((SECONDS - start)) s into $DEST/bin" >&2
echo "$DEST/bin"
