#!/usr/bin/env bash
# Checks (and where the package registries allow, installs) what the build and tests need:
# Rust (cargo, rustfmt, clippy), a C compiler, Python 3 with venv, and Debian's dpkg/apt.
set -euo pipefail
missing=()
need_apt=()
command -v cc >/dev/null || need_apt+=(gcc libc6-dev)
command -v python3 >/dev/null || need_apt+=(python3 python3-venv)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
command -v nm >/dev/null || need_apt+=(binutils)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_apt[@]}" >&2
  else
    missing+=("${need_apt[@]}")
  fi
fi
command -v cargo >/dev/null || missing+=("cargo (Rust >= 1.80, https://rustup.rs)")
if command -v rustup >/dev/null; then
  rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt >&2 || true
  rustup component list --installed 2>/dev/null | grep -q clippy || rustup component add clippy >&2 || true
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "ensure-toolchain: missing: ${missing[*]}" >&2
  exit 1
fi
