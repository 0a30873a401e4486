#!/usr/bin/env python3
"""The operator image archive holds what the Dockerfile's runtime stage holds: every `COPY
--from=build` destination, the files its RUN lines create (the libnvidia-ml.so link, the
ld.so.conf.d entry), the user, exposed ports, entrypoint and command.

Usage: image_matches_dockerfile.py OPERATOR_TAR [DOCKERFILE]. Prints one line per check."""
import json
import os
import re
import shlex
import sys
import tarfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
archive = sys.argv[1]
dockerfile = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "Dockerfile")
failed = 0


def check(name, ok, detail=""):
    global failed
    print(("ok   " if ok else "FAIL ") + name + ("" if ok else f" {detail}"))
    failed += 0 if ok else 1


text = open(dockerfile).read().replace("\\\n", " ")
runtime = text[text.rindex("\nFROM ") :]
t = tarfile.open(archive)
index = json.load(t.extractfile("index.json"))
manifest = json.load(t.extractfile("blobs/sha256/" + index["manifests"][0]["digest"][7:]))
config = json.load(t.extractfile("blobs/sha256/" + manifest["config"]["digest"][7:]))["config"]
layer = tarfile.open(fileobj=t.extractfile("blobs/sha256/" + manifest["layers"][0]["digest"][7:]))
paths = {"/" + m.name: m for m in layer.getmembers()}

for src, dest in re.findall(r"^COPY --from=build (\S+) (\S+)", runtime, re.M):
    check(f"COPY {src} -> {dest} is in the image", dest in paths and paths[dest].isfile())
for link, target in re.findall(r"ln -s (\S+) (\S+)", runtime):
    # `ln -s libnvidia-ml.so.1 /usr/local/lib/fake-gpu-operator/libnvidia-ml.so`
    check(f"link {target} -> {link}", target in paths and paths[target].issym() and paths[target].linkname == link)
for content, dest in re.findall(r"echo (\S+) > (\S+)", runtime):
    data = layer.extractfile(dest[1:]).read().decode().strip() if dest in paths else None
    check(f"{dest} holds {content}", data == content, str(data))
user = re.search(r"^USER (\S+)", runtime, re.M).group(1)
check(f"USER {user}", config.get("User") == user, str(config.get("User")))
ports = {f"{p}/tcp" for p in re.search(r"^EXPOSE (.+)$", runtime, re.M).group(1).split()}
check(f"EXPOSE {sorted(ports)}", set(config.get("ExposedPorts", {})) == ports, str(config.get("ExposedPorts")))
for key in ("ENTRYPOINT", "CMD"):
    want = json.loads(re.search(rf"^{key} (\[.*\])$", runtime, re.M).group(1))
    got = config.get(key.capitalize() if key == "CMD" else "Entrypoint")
    check(f"{key} {shlex.join(want)}", got == want, str(got))
check("CA certificates for the API server", "/etc/ssl/certs/ca-certificates.crt" in paths)
check("the non-root user exists in /etc/passwd", ":65532:65532:" in layer.extractfile("etc/passwd").read().decode())
sys.exit(1 if failed else 0)
