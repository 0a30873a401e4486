#!/usr/bin/env python3
"""Checks the repo's Dockerfile against the workspace without a Docker engine (CI has none):
the packages its build stage builds exist and `Cargo.lock` satisfies `--locked`; every file it
copies out of target/release is an artifact of those packages; every `COPY --from=build` source
is produced by the build stage; the runtime image runs as a non-root user and its entrypoint is
the copied operator binary, whose subcommands the chart uses.

Usage: check_dockerfile.py. Prints one line per check and 'N passed, N failed'."""
import json
import os
import re
import shlex
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
passed, failed = 0, 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok   {name}")
    else:
        failed += 1
        print(f"FAIL {name} {detail}")


def instructions(text):
    """(stage index, INSTRUCTION, rest) with line continuations joined and comments dropped."""
    out, stage, buf = [], -1, ""
    for line in text.splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        buf += line.rstrip("\\").rstrip() + " " if line.rstrip().endswith("\\") else line
        if line.rstrip().endswith("\\"):
            continue
        word, _, rest = buf.strip().partition(" ")
        if word.upper() == "FROM":
            stage += 1
        out.append((stage, word.upper(), rest.strip()))
        buf = ""
    return out


steps = instructions(open(os.path.join(ROOT, "Dockerfile")).read())
froms = [r for _, w, r in steps if w == "FROM"]
check("two stages: a build stage named `build` and a runtime stage", len(froms) == 2 and froms[0].lower().endswith(" as build"), str(froms))

meta = subprocess.run(["cargo", "metadata", "--locked", "--no-deps", "--format-version", "1"], cwd=ROOT, capture_output=True, text=True)
check("Cargo.lock satisfies --locked", meta.returncode == 0, meta.stderr[-300:])
packages = {p["name"]: p for p in json.loads(meta.stdout)["packages"]} if meta.returncode == 0 else {}

build_runs = " && ".join(r for s, w, r in steps if s == 0 and w == "RUN")
cargo = re.search(r"cargo build ([^&]*)", build_runs)
built = re.findall(r"-p\s+([\w-]+)", cargo.group(1)) if cargo else []
check("the build stage runs `cargo build --release --locked`", bool(cargo) and "--release" in cargo.group(1) and "--locked" in cargo.group(1))
for name in built:
    check(f"package {name} is in the workspace", name in packages)

# What target/release holds after building those packages: bins by name, cdylibs as lib<name>.so.
artifacts = set()
for name in built:
    for t in packages.get(name, {}).get("targets", []):
        if "bin" in t["kind"]:
            artifacts.add(t["name"])
        if "cdylib" in t["kind"]:
            artifacts.add(f"lib{t['name'].replace('-', '_')}.so")

produced = set()
for part in build_runs.split("&&"):
    words = shlex.split(part.strip())
    if words[:1] == ["cp"]:
        *sources, dest = words[1:]
        for src in sources:
            if src.startswith("target/release/"):
                check(f"build stage copies an artifact of the built packages: {src}", src.removeprefix("target/release/") in artifacts, str(sorted(artifacts)))
            produced.add(dest if not dest.endswith("/") else dest + os.path.basename(src))
copies = [r.split() for s, w, r in steps if s == 1 and w == "COPY" and r.startswith("--from=build")]
for c in copies:
    check(f"COPY --from=build source is produced by the build stage: {c[1]}", c[1] in produced, str(sorted(produced)))
runtime_files = {c[2] for c in copies}

user = [r for s, w, r in steps if s == 1 and w == "USER"]
check("the runtime stage runs as a non-root user", bool(user) and user[-1].split(":")[0] not in ("0", "root"), str(user))
entry = [r for s, w, r in steps if s == 1 and w == "ENTRYPOINT"]
entry_path = json.loads(entry[-1])[0] if entry else ""
check("the entrypoint is the operator binary copied into the image", entry_path in runtime_files and entry_path.endswith("/fake-gpu-operator"), entry_path)

# The mock backend's node agent (DaemonSet nvml-mock-<pool>) runs this image and copies the
# libraries and nvidia-smi from the paths operator-core/src/nvml_mock/mod.rs names.
mock_src = open(os.path.join(ROOT, "operator-core", "src", "nvml_mock", "mod.rs")).read()
consts = dict(re.findall(r'pub const (IMAGE_[A-Z_]+): &str = "([^"]+)";', mock_src))
check("nvml_mock names the image's paths", {"IMAGE_BINARY", "IMAGE_NVIDIA_SMI", "IMAGE_LIB_DIR"} <= set(consts), str(consts))
for path in [consts.get("IMAGE_BINARY", ""), consts.get("IMAGE_NVIDIA_SMI", "")] + [
    consts.get("IMAGE_LIB_DIR", "") + "/" + lib for lib in ("libnvidia-ml.so.1", "libcuda.so.1")
]:
    check(f"the mock agent's {path} is in the image", path in runtime_files, str(sorted(runtime_files)))

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
