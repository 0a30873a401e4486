#!/usr/bin/env bash
# Builds the fake NVML (release unless PROFILE=debug) and prints a directory that holds it
# under the names clients load: libnvidia-ml.so.1 and libnvidia-ml.so.
#
#   export LD_LIBRARY_PATH=$(scripts/fake-lib-dir.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${PROFILE:-release}
flag=(); [ "$PROFILE" = release ] && flag=(--release)
cargo build -q -p nvml-shim "${flag[@]}" >&2
target=${CARGO_TARGET_DIR:-$PWD/target}/$PROFILE
dir=$target/fakegpu-lib
mkdir -p "$dir"
ln -sfn ../libnvidia_ml.so "$dir/libnvidia-ml.so.1"
ln -sfn ../libnvidia_ml.so "$dir/libnvidia-ml.so"
echo "$dir"
