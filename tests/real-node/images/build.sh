#!/usr/bin/env bash
# Writes the real node's images as OCI archives with scripts/oci-image.py (no Docker, no
# registry, no base image): the pod sandbox (pause), a minimal GPU-pod image (busybox + the host's
# glibc) and the operator image (the same files the Dockerfile's runtime stage holds: the operator,
# and the glibc 2.17 builds of nvidia-smi, the fake NVML and the fake CUDA library that the plugins
# inject into GPU containers; CA certificates, user 65532; busybox + glibc stand in for
# debian:bookworm-slim).
#
#   tests/real-node/images/build.sh [OUT_DIR]          # default target/images
#   FAKEGPU_IMAGE_PROFILE=debug ...                     # binaries from target/debug (default release)
#   FAKEGPU_IMAGES="pause gpu-pod"                      # only these (default: pause gpu-pod operator)
#   FAKEGPU_IMAGES="... nvidia-k8s" FAKEGPU_NVIDIA_K8S_DIR=DIR  # NVIDIA's device plugin + GFD from DIR
#
# The builds are the caller's: cargo build --release -p fake-gpu-operator, and
# scripts/build-portable.sh for what is injected (FAKEGPU_INJECT_DIR, default target/portable/release).
# Prints one line per archive: name, digest, size.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
OUT="${1:-$ROOT/target/images}"
PROFILE="${FAKEGPU_IMAGE_PROFILE:-release}"
BIN="$ROOT/target/$PROFILE"
INJ="${FAKEGPU_INJECT_DIR:-$ROOT/target/portable/release}"
IMAGES="${FAKEGPU_IMAGES:-pause gpu-pod operator}"
VERSION="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$ROOT/helm/fake-gpu-operator/Chart.yaml")"
OCI=(python3 "$ROOT/scripts/oci-image.py")
mkdir -p "$OUT"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# ldd exits 1 for a static binary, hence no pipe (pipefail).
static_busybox() { local out; out=$(ldd /bin/busybox 2>&1 || true); grep -q 'not a dynamic executable' <<<"$out"; }

need_busybox() {
  [ -x /bin/busybox ] && static_busybox && return 0
  local SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
  echo "images: installing busybox-static from Debian" >&2
  $SUDO apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq busybox-static >&2
  static_busybox || { echo "images: /bin/busybox is not static (install busybox-static)" >&2; exit 1; }
}

# busybox and a link per applet, so `sh -c`, `ls`, `cat`, `env`, `sleep` work in the image.
busybox_args() {
  echo "--file=/bin/busybox:/bin/busybox:0755"
  /bin/busybox --list | while read -r applet; do
    [ "$applet" = busybox ] || echo "--symlink=/bin/$applet:busybox"
  done
}

need_bin() {
  for f in "$@"; do
    [ -f "$BIN/$f" ] || { echo "images: $BIN/$f is missing; run cargo build --${PROFILE/debug/profile=dev} -p fake-gpu-operator" >&2; exit 1; }
  done
}

need_injected() {
  for f in bin/nvidia-smi lib/libnvidia-ml.so.1 lib/libcuda.so.1; do
    [ -f "$INJ/$f" ] || { echo "images: $INJ/$f is missing; run scripts/build-portable.sh" >&2; exit 1; }
  done
}

for image in $IMAGES; do
  start=$(date +%s%N)
  case "$image" in
    pause)
      gcc -static -Os -s -o "$WORK/pause" "$ROOT/tests/real-node/images/pause.c"
      d=$("${OCI[@]}" --name localhost/fakegpu/pause:1 --out "$OUT/pause.tar" \
        --file "$WORK/pause:/pause:0755" --entrypoint '["/pause"]' --user 65535:65535)
      ;;
    gpu-pod)
      need_busybox; need_injected
      mapfile -t bb < <(busybox_args)
      # libc only: exactly what the injected (glibc 2.17) binaries load, from this host.
      d=$("${OCI[@]}" --name localhost/fakegpu/gpu-pod:1 --out "$OUT/gpu-pod.tar" "${bb[@]}" \
        --libs-of "$INJ/bin/nvidia-smi" --libs-of "$INJ/lib/libnvidia-ml.so.1" --libs-of "$INJ/lib/libcuda.so.1" --dir /tmp:1777 \
        --text "/etc/passwd:root:x:0:0:root:/root:/bin/sh\n" --text "/etc/group:root:x:0:\n" \
        --entrypoint '["/bin/sh"]')
      ;;
    operator)
      need_busybox; need_bin fake-gpu-operator; need_injected
      strip -o "$WORK/fake-gpu-operator" "$BIN/fake-gpu-operator"
      strip -o "$WORK/nvidia-smi" "$INJ/bin/nvidia-smi"
      strip -o "$WORK/libnvidia_ml.so" "$INJ/lib/libnvidia-ml.so.1"
      strip -o "$WORK/libcuda.so" "$INJ/lib/libcuda.so.1"
      d=$("${OCI[@]}" --name "ghcr.io/fake-gpu-operator/fake-gpu-operator:$VERSION" --out "$OUT/operator.tar" \
        --file /bin/busybox:/bin/busybox:0755 --symlink /bin/sh:busybox \
        --file "$WORK/fake-gpu-operator:/usr/local/bin/fake-gpu-operator:0755" \
        --file "$WORK/nvidia-smi:/usr/local/bin/nvidia-smi:0755" \
        --file "$WORK/libnvidia_ml.so:/usr/local/lib/fake-gpu-operator/libnvidia-ml.so.1:0755" \
        --symlink /usr/local/lib/fake-gpu-operator/libnvidia-ml.so:libnvidia-ml.so.1 \
        --file "$WORK/libcuda.so:/usr/local/lib/fake-gpu-operator/libcuda.so.1:0755" \
        --symlink /usr/local/lib/fake-gpu-operator/libcuda.so:libcuda.so.1 \
        --text "/etc/ld.so.conf.d/fake-gpu-operator.conf:/usr/local/lib/fake-gpu-operator\n" \
        --libs-of "$WORK/fake-gpu-operator" --libs-of "$WORK/nvidia-smi" \
        --file /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:0644 \
        --text "/etc/passwd:root:x:0:0:root:/root:/bin/sh\nnonroot:x:65532:65532::/nonexistent:/usr/sbin/nologin\n" \
        --text "/etc/group:root:x:0:\nnonroot:x:65532:\n" --dir /tmp:1777 \
        --user 65532:65532 --expose 9400 --expose 8080 \
        --entrypoint '["/usr/local/bin/fake-gpu-operator"]' --cmd '["version"]')
      ;;
    nvidia-k8s)
      # NVIDIA's device plugin and GFD (tests/gfd/build.sh) for the mock backend's E2E, with the
      # libraries the driver root's fake NVML loads (libm, libdl, libpthread), as NVIDIA's glibc
      # base image has them.
      need_busybox; need_injected
      K8S="${FAKEGPU_NVIDIA_K8S_DIR:?set FAKEGPU_NVIDIA_K8S_DIR to the directory tests/gfd/build.sh prints}"
      mapfile -t bb < <(busybox_args)
      d=$("${OCI[@]}" --name localhost/fakegpu/nvidia-k8s:1 --out "$OUT/nvidia-k8s.tar" "${bb[@]}" \
        --file "$K8S/nvidia-device-plugin:/usr/bin/nvidia-device-plugin:0755" \
        --file "$K8S/gpu-feature-discovery:/usr/bin/gpu-feature-discovery:0755" \
        --libs-of "$K8S/nvidia-device-plugin" --libs-of "$K8S/gpu-feature-discovery" \
        --libs-of "$INJ/lib/libnvidia-ml.so.1" --libs-of "$INJ/lib/libcuda.so.1" --dir /tmp:1777 \
        --text "/etc/passwd:root:x:0:0:root:/root:/bin/sh\n" --text "/etc/group:root:x:0:\n" \
        --entrypoint '["/usr/bin/nvidia-device-plugin"]')
      ;;
    *) echo "images: unknown image $image (pause, gpu-pod, operator, nvidia-k8s)" >&2; exit 2 ;;
  esac
  echo "images: $image built in $(( ($(date +%s%N) - start) / 1000000 )) ms" >&2
  echo "$image $d $(stat -c %s "$OUT/$image.tar")"
done
