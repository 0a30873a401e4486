#!/usr/bin/env bash
# The main job on a fresh machine: build the fake NVML and the fakegpu CLI, fetch NVIDIA's
# own nvidia-smi 535 from Debian, and run it over 8 simulated H100s.
#
#   scripts/demo.sh [PROFILE] [GPUS]
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${1:-h100}
gpus=${2:-8}
scripts/ensure-toolchain.sh
cargo build --release -q -p nvml-shim -p cuda-shim -p fakegpu
root=$(scripts/fetch-nvidia.sh)
smi=$root/usr/lib/nvidia/current/nvidia-smi
fakegpu=target/release/fakegpu
$fakegpu profiles
echo
$fakegpu exec --profile "$profile" --gpus "$gpus" --node demo-node -- "$smi"
$fakegpu exec --profile "$profile" --gpus "$gpus" --node demo-node -- "$smi" -L
$fakegpu exec --profile "$profile" --gpus "$gpus" --node demo-node -- "$smi" \
  --query-gpu=index,name,uuid,pci.bus_id,memory.total,power.limit,clocks.max.sm --format=csv
