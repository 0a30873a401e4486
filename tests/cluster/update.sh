#!/usr/bin/env bash
# Regenerates the wrapper Go modules (go.mod/go.sum) under tests/cluster/{k8s,etcd,kwok,helm}
# from versions.env. Run only when bumping a version; build.sh never touches go.mod.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$HERE/versions.env"
export GOFLAGS="${GOFLAGS:--buildvcs=false}"

fresh_module() { # dir modpath
  rm -rf "$HERE/$1"; mkdir -p "$HERE/$1"; cd "$HERE/$1"
  go mod init "$2" >/dev/null 2>&1
}

# k8s.io/kubernetes requires its staging modules at v0.0.0 and resolves them with local replaces
# that do not apply to a dependent module, so every such line gets a replace to the staging tag.
fresh_module k8s fakegpu.local/cluster/k8s
GOMOD=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
for m in $(awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" {print $1}' "$GOMOD"); do
  go mod edit -replace="$m=$m@$K8S_STAGING_VERSION"
done
go get -tool "k8s.io/kubernetes/cmd/kube-apiserver@$K8S_VERSION" \
  "k8s.io/kubernetes/cmd/kube-controller-manager@$K8S_VERSION" \
  "k8s.io/kubernetes/cmd/kube-scheduler@$K8S_VERSION" \
  "k8s.io/kubernetes/cmd/kubectl@$K8S_VERSION"
go mod tidy

# etcd, kwok and helm each get their own module so MVS cannot lift one's dependencies for another.
fresh_module etcd fakegpu.local/cluster/etcd
go get -tool "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
go mod tidy

fresh_module kwok fakegpu.local/cluster/kwok
go get -tool "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
go mod tidy

fresh_module helm fakegpu.local/cluster/helm
go get -tool "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
go mod tidy
echo "wrapper modules regenerated from versions.env"
