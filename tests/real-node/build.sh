#!/usr/bin/env bash
# Builds the real node's binaries once into a cache entry of their own (the control plane's
# entry, tests/cluster/build.sh, is left alone): the kubelet (same k8s module set and flags as the
# control plane, so the Go build cache it warmed is reused) and containerd 2.x with ctr and
# containerd-shim-runc-v2. runc, the CNI plugins and socat (the Service VIP forwarder) come from
# Debian (installed when missing and allowed: root or sudo). The bin directory is printed on stdout (last line).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../cluster/versions.env
source "$HERE/../cluster/versions.env"
# shellcheck source=versions.env
source "$HERE/versions.env"

command -v go >/dev/null || { echo "real-node build.sh: the Go toolchain (go) is not on PATH" >&2; exit 2; }

CACHE_ROOT="${FAKEGPU_CACHE:-$HOME/.cache/fake-gpu-operator}"
KEY="$( { cat "$HERE/versions.env" "$HERE/../cluster/versions.env"; cat "$HERE"/{kubelet,containerd}/go.mod "$HERE"/{kubelet,containerd}/go.sum; go env GOVERSION; } | sha256sum | cut -c1-16)"
DEST="$CACHE_ROOT/node-$KEY"
BINS=(kubelet containerd ctr containerd-shim-runc-v2)

# runc and the CNI plugins: Debian packages, because they are plain C/Go tools the runtime execs.
debian_tools() {
  if command -v runc >/dev/null && command -v socat >/dev/null && command -v ip >/dev/null \
    && [ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] && [ -x /usr/lib/cni/loopback ]; then
    return 0
  fi
  local SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
  echo "real-node build.sh: installing runc, containernetworking-plugins, socat, iproute2 from Debian" >&2
  $SUDO apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq runc containernetworking-plugins socat iproute2 >&2
}
debian_tools

complete() { for b in "${BINS[@]}"; do [ -x "$DEST/bin/$b" ] || return 1; done; }
if complete; then
  echo "real-node build.sh: reusing cached binaries in $DEST/bin" >&2
  echo "$DEST/bin"; exit 0
fi

mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/.build-node-$KEY.lock"
flock 9
if complete; then echo "$DEST/bin"; exit 0; fi

export GOFLAGS="-p=${GO_PARALLEL:-2} -buildvcs=false -mod=readonly"
export CGO_ENABLED=0
STAGE="$(mktemp -d "$CACHE_ROOT/.stage-node-$KEY.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/bin"
start=$SECONDS

step() { # name dir ldflags packages... (build tags in $TAGS)
  local name=$1 dir=$2 ld=$3; shift 3
  local t=$SECONDS
  echo "real-node build.sh: building $name ..." >&2
  (cd "$HERE/$dir" && go build -trimpath ${TAGS:+-tags "$TAGS"} -ldflags "-s -w $ld" -o "$STAGE/bin/" "$@")
  echo "real-node build.sh: $name done in $((SECONDS - t)) s" >&2
}

# containerd first: by then a control-plane build running beside it has warmed the Go cache
# the kubelet shares.
# btrfs needs cgo (and is excluded without it); devmapper and zfs snapshotters are not used.
TAGS="no_btrfs no_devmapper no_zfs" step containerd containerd \
  "-X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION" \
  github.com/containerd/containerd/v2/cmd/containerd github.com/containerd/containerd/v2/cmd/ctr \
  github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2

# Same -X stamps as tests/cluster/build.sh: the kubelet reports the pinned version.
MINOR="$(echo "$K8S_VERSION" | cut -d. -f2)"
KLD=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  KLD="$KLD -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$MINOR -X $pkg.gitTreeState=clean"
done
step kubelet kubelet "$KLD" k8s.io/kubernetes/cmd/kubelet
cp "$HERE/versions.env" "$STAGE/versions.env"
rm -rf "$DEST"
mv "$STAGE" "$DEST"
trap - EXIT
echo "real-node build.sh: all binaries built in $((SECONDS - start)) s into $DEST/bin" >&2
echo "$DEST/bin"
