#!/usr/bin/env bash
# Builds the binaries that are injected into GPU containers — the fake libnvidia-ml.so.1 and
# our nvidia-smi — against glibc 2.17 (NVIDIA's own driver libraries' floor), so that they run
# in old and slim images (Ubuntu 16.04, UBI 8, busybox + glibc), and checks that they need no
# newer glibc symbol version. Uses cargo-zigbuild with Zig as the linker (both from PyPI,
# installed once into a venv cached under ~/.cache/fake-gpu-operator).
#
#   scripts/build-portable.sh            # prints the output directory
#   PORTABLE_PROFILE=debug scripts/build-portable.sh
#
# Output ($PORTABLE_OUT, default target/portable/<profile>):
#   lib/libnvidia-ml.so.1   bin/nvidia-smi   (+ any crate added to CRATES below)
set -euo pipefail
cd "$(dirname "$0")/.."

ZIGBUILD_VERSION=0.24.0
ZIG_VERSION=0.17.0
GLIBC_FLOOR=2.17
TARGET=x86_64-unknown-linux-gnu
PROFILE=${PORTABLE_PROFILE:-release}

# One line per injected artifact: <cargo package> <built file> <installed as (relative to $OUT_DIR)>.
# A new crate (e.g. the fake libcuda) is one more line here.
CRATES=(
  "nvml-shim   libnvidia_ml.so  lib/libnvidia-ml.so.1"
  "nvidia-smi  nvidia-smi       bin/nvidia-smi"
  "cuda-shim   libcuda.so       lib/libcuda.so.1"
)

cache=${XDG_CACHE_HOME:-$HOME/.cache}/fake-gpu-operator/zigbuild-$ZIGBUILD_VERSION-zig-$ZIG_VERSION
if [ ! -x "$cache/bin/cargo-zigbuild" ]; then
  echo "installing cargo-zigbuild $ZIGBUILD_VERSION and ziglang $ZIG_VERSION into $cache" >&2
  rm -rf "$cache.tmp"
  python3 -m venv "$cache.tmp"
  "$cache.tmp/bin/pip" install -q "cargo-zigbuild==$ZIGBUILD_VERSION" "ziglang==$ZIG_VERSION" >&2
  rm -rf "$cache" && mv "$cache.tmp" "$cache"
  # The venv's scripts name the interpreter by its path at creation: recreate in place.
  python3 -m venv "$cache" >/dev/null
fi
# cargo-zigbuild finds zig through `python3 -m ziglang` when zig is not on PATH.
export PATH="$cache/bin:$PATH"

target_dir=${CARGO_TARGET_DIR:-$PWD/target}
out=${PORTABLE_OUT:-$target_dir/portable/$PROFILE}
flag=(); [ "$PROFILE" = release ] && flag=(--release)
packages=()
for line in "${CRATES[@]}"; do
  read -r pkg _ _ <<<"$line"
  packages+=(-p "$pkg")
done

start=$SECONDS
cargo-zigbuild build -q --locked "${flag[@]}" --target "$TARGET.$GLIBC_FLOOR" "${packages[@]}" >&2
echo "portable build: $((SECONDS - start)) s" >&2

mkdir -p "$out"
for line in "${CRATES[@]}"; do
  read -r _ built installed <<<"$line"
  mkdir -p "$out/$(dirname "$installed")"
  cp -f "$target_dir/$TARGET/$PROFILE/$built" "$out/$installed"
done
[ -e "$out/lib/libnvidia-ml.so" ] || ln -s libnvidia-ml.so.1 "$out/lib/libnvidia-ml.so"

# The highest GLIBC_x.y any of them needs must be at most the floor.
python3 - "$GLIBC_FLOOR" "$out" <<'PY' >&2
import os, re, subprocess, sys
floor = tuple(int(x) for x in sys.argv[1].split("."))
worst = []
for root, _, files in os.walk(sys.argv[2]):
    for name in files:
        path = os.path.join(root, name)
        if os.path.islink(path):
            continue
        syms = subprocess.run(["objdump", "-T", path], capture_output=True, text=True, check=True).stdout
        versions = {tuple(int(x) for x in v.split(".")) for v in re.findall(r"GLIBC_(\d+(?:\.\d+)+)", syms)}
        top = max(versions, default=(0,))
        print(f"{os.path.relpath(path, sys.argv[2])}: highest GLIBC symbol version {'.'.join(map(str, top))}")
        if top > floor:
            worst.append(f"{path} needs GLIBC_{'.'.join(map(str, top))} > {sys.argv[1]}")
if worst:
    sys.exit("\n".join(worst))
PY
# The two run together: our nvidia-smi lists the fake NVML's GPUs.
listed=$(env -u LD_PRELOAD LD_LIBRARY_PATH="$out/lib" FAKEGPU_PROFILE=t4 FAKEGPU_GPUS=2 FAKEGPU_NODE=portable "$out/bin/nvidia-smi" -L)
if [ "$(grep -c '^GPU [01]: Tesla T4 (UUID: GPU-' <<<"$listed")" != 2 ]; then
  echo "portable nvidia-smi -L over the portable libnvidia-ml.so.1 printed:" >&2
  echo "$listed" >&2
  exit 1
fi
echo "$out"
