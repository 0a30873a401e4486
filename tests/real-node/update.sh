#!/usr/bin/env bash
# Regenerates the wrapper Go modules under tests/real-node/{kubelet,containerd} from
# tests/cluster/versions.env (kubelet) and versions.env here (containerd). Run only when bumping a
# version; build.sh never touches go.mod.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../cluster/versions.env
source "$HERE/../cluster/versions.env"
# shellcheck source=versions.env
source "$HERE/versions.env"
export GOFLAGS="${GOFLAGS:--buildvcs=false}"

# The kubelet starts from the control plane's wrapper module, so that the module graph, and with
# it every shared package in the Go build cache, stays the same; only the tool line is added.
rm -rf "$HERE/kubelet"; mkdir -p "$HERE/kubelet"
sed 's#^module .*#module fakegpu.local/realnode/kubelet#' "$HERE/../cluster/k8s/go.mod" >"$HERE/kubelet/go.mod"
cp "$HERE/../cluster/k8s/go.sum" "$HERE/kubelet/go.sum"
(cd "$HERE/kubelet" && go get -tool "k8s.io/kubernetes/cmd/kubelet@$K8S_VERSION" && go mod tidy)

# containerd 2.x has no replace directives, so a plain wrapper module pins it.
rm -rf "$HERE/containerd"; mkdir -p "$HERE/containerd"
(cd "$HERE/containerd" && go mod init fakegpu.local/realnode/containerd >/dev/null 2>&1 \
  && go get -tool "github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD_VERSION" \
       "github.com/containerd/containerd/v2/cmd/ctr@$CONTAINERD_VERSION" \
       "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION" \
  && go mod tidy)
echo "wrapper modules regenerated"
