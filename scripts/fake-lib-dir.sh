#!/usr/bin/env bash
# Builds the fake NVML and the fake CUDA driver (release unless PROFILE=debug) and prints a
# directory that holds them under the names clients load: libnvidia-ml.so.1, libnvidia-ml.so,
# libcuda.so.1, libcuda.so and libcuda.so.<driver version>.
#
#   export LD_LIBRARY_PATH=$(scripts/fake-lib-dir.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${PROFILE:-release}
flag=(); [ "$PROFILE" = release ] && flag=(--release)
cargo build -q -p nvml-shim -p cuda-shim "${flag[@]}" >&2
target=${CARGO_TARGET_DIR:-$PWD/target}/$PROFILE
dir=$target/fakegpu-lib
mkdir -p "$dir"
ln -sfn ../libnvidia_ml.so "$dir/libnvidia-ml.so.1"
ln -sfn ../libnvidia_ml.so "$dir/libnvidia-ml.so"
for name in libcuda.so.1 libcuda.so libcuda.so.535.261.03; do ln -sfn ../libcuda.so "$dir/$name"; done
echo "$dir"
