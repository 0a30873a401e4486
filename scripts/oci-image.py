#!/usr/bin/env python3
"""Writes a container image as an OCI image archive without Docker or a registry.

One uncompressed layer built from host files (uid/gid 0, mtime 0, entries sorted), an image
config with `rootfs.diff_ids`, an OCI manifest, `index.json` naming the image (both the
containerd and the OCI annotations), `oci-layout`, and a Docker-style `manifest.json` beside them,
so that `ctr images import`, `docker load`, `podman load` and `kind load image-archive` all take
the same file. The same inputs give the same bytes, hence the same digest.

Usage:
  oci-image.py --name REF --out FILE [--file HOST:PATH[:MODE]]... [--dir PATH[:MODE]]...
               [--symlink PATH:TARGET]... [--text PATH:CONTENT]... [--libs-of HOST]...
               [--entrypoint JSON] [--cmd JSON] [--user U[:G]] [--env K=V]... [--workdir DIR]
               [--expose PORT]... [--label K=V]...

--libs-of HOST adds the shared libraries that HOST (an ELF file) loads, as `ldd` resolves them on
this machine, at the paths ldd prints (content of the resolved file). Prints the manifest digest."""
import argparse
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile

ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)


def fail(msg):
    print(f"oci-image.py: {msg}", file=sys.stderr)
    sys.exit(2)


def parse_mode(text, default):
    if text is None:
        return default
    try:
        return int(text, 8)
    except ValueError:
        fail(f"mode {text!r} is not octal")


class Tree:
    """The image's file system: path -> (kind, payload, mode); parents are added implicitly."""

    def __init__(self):
        self.entries = {}

    def _parents(self, path):
        parts = path.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            p = "/".join(parts[:i])
            self.entries.setdefault(p, ("dir", None, 0o755))

    def add(self, path, kind, payload, mode):
        path = os.path.normpath("/" + path).lstrip("/")
        if not path:
            fail("a path of / cannot be added")
        self._parents(path)
        self.entries[path] = (kind, payload, mode)

    def layer(self):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(self.entries):
                kind, payload, mode = self.entries[path]
                info = tarfile.TarInfo(path)
                info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode = 0, 0, 0, "", "", mode
                if kind == "dir":
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                elif kind == "symlink":
                    info.type, info.linkname = tarfile.SYMTYPE, payload
                    tar.addfile(info)
                else:
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
        return buf.getvalue()


def read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        fail(f"cannot read {path}: {e.strerror}")


def shared_libs(elf):
    """Paths `ldd` prints for `elf`: the loader and each resolved library."""
    out = subprocess.run(["ldd", elf], capture_output=True, text=True)
    if out.returncode != 0:
        fail(f"ldd {elf} failed: {out.stderr.strip() or out.stdout.strip()}")
    libs = []
    for line in out.stdout.splitlines():
        m = re.search(r"=>\s*(/\S+)", line) or re.match(r"\s*(/\S+)\s+\(", line)
        if m:
            libs.append(m.group(1))
    return libs


def blob(blobs, data, media_type):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


def dumps(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", required=True, help="image reference, e.g. localhost/fakegpu/pause:1")
    ap.add_argument("--out", required=True)
    ap.add_argument("--file", action="append", default=[])
    ap.add_argument("--dir", action="append", default=[])
    ap.add_argument("--symlink", action="append", default=[])
    ap.add_argument("--text", action="append", default=[])
    ap.add_argument("--libs-of", action="append", default=[])
    ap.add_argument("--entrypoint")
    ap.add_argument("--cmd")
    ap.add_argument("--user")
    ap.add_argument("--env", action="append", default=[])
    ap.add_argument("--workdir")
    ap.add_argument("--expose", action="append", default=[])
    ap.add_argument("--label", action="append", default=[])
    a = ap.parse_args()
    if not re.fullmatch(r"[a-z0-9./_-]+(:[\w.-]+)?", a.name):
        fail(f"--name {a.name!r} is not an image reference like localhost/fakegpu/pause:1")
    name = a.name if ":" in a.name.rsplit("/", 1)[-1] else a.name + ":latest"

    tree = Tree()
    for spec in a.dir:
        path, _, mode = spec.partition(":")
        tree.add(path, "dir", None, parse_mode(mode or None, 0o755))
    for spec in a.file:
        parts = spec.split(":")
        if len(parts) not in (2, 3):
            fail(f"--file {spec!r}: want HOST:PATH[:MODE]")
        host, path = parts[0], parts[1]
        default = os.stat(host).st_mode & 0o777 if os.path.exists(host) else 0o644
        tree.add(path, "file", read(host), parse_mode(parts[2] if len(parts) == 3 else None, default))
    for spec in a.text:
        parts = spec.split(":", 1)
        if len(parts) != 2:
            fail(f"--text {spec!r}: want PATH:CONTENT")
        path, content = parts
        # "\n" in the argument stands for a newline, so that a shell line can carry a file.
        tree.add(path, "file", content.replace("\\n", "\n").encode(), 0o644)
    for spec in a.symlink:
        path, sep, target = spec.partition(":")
        if not sep or not target:
            fail(f"--symlink {spec!r}: want PATH:TARGET")
        tree.add(path, "symlink", target, 0o777)
    for elf in a.libs_of:
        for lib in shared_libs(elf):
            tree.add(lib, "file", read(os.path.realpath(lib)), 0o755)

    config = {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] + a.env}
    for key, value in (("Entrypoint", a.entrypoint), ("Cmd", a.cmd)):
        if value is not None:
            try:
                config[key] = json.loads(value)
            except json.JSONDecodeError:
                fail(f"--{key.lower()} {value!r} is not a JSON list")
    if a.user:
        config["User"] = a.user
    if a.workdir:
        config["WorkingDir"] = a.workdir
    if a.expose:
        config["ExposedPorts"] = {f"{p}/tcp": {} for p in a.expose}
    if a.label:
        config["Labels"] = dict(kv.split("=", 1) for kv in a.label)

    layer = tree.layer()
    blobs = {}
    layer_desc = blob(blobs, layer, "application/vnd.oci.image.layer.v1.tar")
    image_config = {
        "architecture": ARCH,
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [layer_desc["digest"]]},
        "history": [{"created_by": "scripts/oci-image.py"}],
    }
    config_desc = blob(blobs, dumps(image_config), "application/vnd.oci.image.config.v1+json")
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": [layer_desc],
    }
    manifest_desc = blob(blobs, dumps(manifest), manifest["mediaType"])
    manifest_desc["annotations"] = {
        "io.containerd.image.name": name,
        "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1],
    }
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [manifest_desc]}
    docker_manifest = [
        {
            "Config": "blobs/sha256/" + config_desc["digest"][7:],
            "RepoTags": [name],
            "Layers": ["blobs/sha256/" + layer_desc["digest"][7:]],
        }
    ]

    files = {
        "oci-layout": dumps({"imageLayoutVersion": "1.0.0"}),
        "index.json": dumps(index),
        "manifest.json": dumps(docker_manifest),
    }
    for digest, data in blobs.items():
        files["blobs/sha256/" + digest[7:]] = data
    tmp = a.out + ".tmp"
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        for path in sorted(files):
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(files[path]), 0o644, 0
            tar.addfile(info, io.BytesIO(files[path]))
    os.replace(tmp, a.out)
    print(manifest_desc["digest"])


if __name__ == "__main__":
    main()
