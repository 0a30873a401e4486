#!/usr/bin/env bash
# Benchmarks the fake NVML (release cdylib): getter latency on 1 and 8 threads, dlopen +
# nvmlInit in fresh processes, RSS and threads added by loading, and NVIDIA's
# `nvidia-smi -q` on 8 simulated H100s. Prints Markdown; docs/benchmarks.md records a run.
#
#   scripts/bench-nvml.sh                  # all of it (fetches nvidia-smi on first use)
#   NO_SMI=1 scripts/bench-nvml.sh         # without nvidia-smi (no apt/network needed)
#   BENCH_LOADS=500 BENCH_SMI_RUNS=50 scripts/bench-nvml.sh
set -euo pipefail
cd "$(dirname "$0")/.."

smi=
if [ -z "${NO_SMI:-}" ]; then
  if root=$(scripts/fetch-nvidia.sh); then
    smi=$root/usr/lib/nvidia/current/nvidia-smi
  else
    echo "bench-nvml: nvidia-smi unavailable (scripts/fetch-nvidia.sh failed); skipping its runs" >&2
  fi
fi
# The bench profile inherits release: this builds target/release/libnvidia_ml.so, which the
# benchmark dlopens (override with FAKEGPU_NVML_LIB).
cargo bench -q -p nvml-shim --bench nvml --no-run >&2
echo "rustc: $(rustc --version); CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); $(nproc) CPUs"
NVIDIA_SMI=$smi cargo bench -q -p nvml-shim --bench nvml
