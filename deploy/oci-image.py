#!/usr/bin/env python3
"""Write a one-layer OCI image archive built from local files, for `ctr images import`.

No registry is reachable from the dev machines, so the dev cluster's images
are made here: a root filesystem holding Debian's static busybox (and the
applet links named below), with an entrypoint, written as an OCI image
layout in a tar archive on stdout.

    python3 deploy/oci-image.py NAME ENTRYPOINT_JSON [--python PYTHON] > image.tar
    python3 deploy/oci-image.py localhost/pause:aifactory '["/bin/sleep", "2147483647"]'

``--python PYTHON`` adds that interpreter's runtime at the paths it has on
this host: its executable, its standard library (without tests, IDLE, tkinter
and its own site-packages) and every shared library that the executable, the
standard library's extension modules and the extension modules of PYTHON's
environment (a venv) need, found with ``ldd``. The venv itself is not copied:
the dev cluster mounts it (and the source) read-only from the host, so a
replica in a pod runs exactly the code of the checkout.

Only the standard library; run by deploy/k8s-dev-cluster.sh with the
system's python3.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "sleep", "echo", "cat", "env", "hostname", "ip", "wget", "true", "false", "ls")
# /root is open: a pyenv interpreter lives under it, and Pods run as tenants' uids.
DIRECTORIES = {
    "bin": 0o755,
    "dev": 0o755,
    "etc": 0o755,
    "proc": 0o755,
    "root": 0o755,
    "sys": 0o755,
    "tmp": 0o1777,
}
# Parts of the standard library a replica never imports (about 200 MB with tests).
STDLIB_SKIP = {"site-packages", "test", "idlelib", "tkinter", "turtledemo", "lib2to3", "ensurepip"}
# What the interpreter says about itself, as JSON.
PROBE = """
import json, os, site, sys, sysconfig
print(json.dumps({
    "executable": os.path.realpath(sys.executable),
    "stdlib": sysconfig.get_paths()["stdlib"],
    "site": site.getsitepackages(),
}))
"""
LDD_LINE = re.compile(r"(?:=>\s*)?(/\S+)\s+\(0x[0-9a-f]+\)")


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def _blob(archive: tarfile.TarFile, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    _add(archive, f"blobs/sha256/{digest}", data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def _elf_files(root: Path) -> Iterator[Path]:
    for path in root.rglob("*.so*"):
        if path.is_file() and not path.is_symlink() and path.read_bytes()[:4] == b"\x7fELF":
            yield path


def _libraries(elf_files: list[Path], skip: list[Path]) -> set[Path]:
    """The shared libraries (by the path the loader finds them at) that ``elf_files`` need."""
    found: set[Path] = set()
    for chunk in range(0, len(elf_files), 200):
        names = [str(p) for p in elf_files[chunk : chunk + 200]]
        # ldd prints "path:" headers and "not a dynamic executable" lines too; only paths count.
        out = subprocess.run(["ldd", *names], capture_output=True, text=True).stdout
        for match in LDD_LINE.finditer(out):
            library = Path(match.group(1))
            if not any(library.is_relative_to(s) for s in skip):
                found.add(library)
    return found


def _wanted_stdlib(relative: Path) -> bool:
    top, name = relative.parts[0], relative.name
    skipped = top in STDLIB_SKIP or top.startswith("config-") or name.startswith("_tkinter")
    return not skipped and ".opt-" not in name


def _python_files(python: str) -> dict[Path, Path | None]:
    """Host paths for the image (value: a symlink's target, None for a copy)."""
    facts = json.loads(
        subprocess.run([python, "-c", PROBE], capture_output=True, text=True, check=True).stdout
    )
    executable = Path(facts["executable"])
    files: dict[Path, Path | None] = {executable: None}
    for entry in executable.parent.iterdir():
        # python3 -> python3.11 and the like: venvs point at these names.
        if entry.is_symlink() and entry.resolve() == executable:
            files[entry] = Path(os.readlink(entry))
    stdlib = Path(facts["stdlib"])
    for path in stdlib.rglob("*"):
        if _wanted_stdlib(path.relative_to(stdlib)) and path.is_file() and not path.is_symlink():
            files[path] = None
    environments = [Path(s) for s in facts["site"] if not Path(s).is_relative_to(stdlib)]
    elf = [executable, *(p for p in files if p.suffix == ".so")]
    for site in environments:
        elf.extend(_elf_files(site))
    for library in _libraries(elf, skip=environments):
        files[library] = None
    return files


def _directory(layer: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, mode
    layer.addfile(info)


def _layer(python: str | None) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as layer:
        for name, mode in DIRECTORIES.items():
            _directory(layer, name, mode)
        layer.add(BUSYBOX, "bin/busybox")
        for applet in APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            layer.addfile(info)
        _add(layer, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
        _add(layer, "etc/group", b"root:x:0:\n")
        if python is None:
            return out.getvalue()
        files = _python_files(python)
        made = {Path(name) for name in DIRECTORIES}
        for path in sorted(files):
            for parent in reversed(path.relative_to("/").parents[:-1]):
                if parent not in made:
                    _directory(layer, str(parent))
                    made.add(parent)
            name = str(path.relative_to("/"))
            target = files[path]
            if target is None:
                # The loader finds a library by the name ldd printed; store its content there.
                layer.add(path.resolve(), name, recursive=False)
            else:
                info = tarfile.TarInfo(name)
                info.type, info.linkname = tarfile.SYMTYPE, str(target)
                layer.addfile(info)
    return out.getvalue()


def image_archive(name: str, entrypoint: list[str], python: str | None = None) -> bytes:
    """The OCI image layout of a busybox image called ``name``, as tar bytes."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        layer_data = _layer(python)
        layer = _blob(archive, layer_data)
        config = {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": entrypoint, "Env": ["PATH=/bin", "HOME=/root"]},
            "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]},
        }
        config_ref = _blob(archive, json.dumps(config).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config_ref},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **layer}],
        }
        manifest_ref = _blob(archive, json.dumps(manifest).encode())
        index = {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    **manifest_ref,
                    "annotations": {
                        "io.containerd.image.name": name,
                        "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1],
                    },
                }
            ],
        }
        _add(archive, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        _add(archive, "index.json", json.dumps(index).encode())
    return out.getvalue()


def main() -> int:
    """Write the archive named on the command line to stdout."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name")
    parser.add_argument("entrypoint", help="a JSON list of strings")
    parser.add_argument("--python", help="add this interpreter's runtime (see above)")
    args = parser.parse_args()
    if not BUSYBOX.exists():
        print(f"error: {BUSYBOX} is missing\nfix: apt-get install busybox-static", file=sys.stderr)
        return 1
    entrypoint = json.loads(args.entrypoint)
    if not isinstance(entrypoint, list) or not all(isinstance(a, str) for a in entrypoint):
        print("error: ENTRYPOINT_JSON must be a JSON list of strings", file=sys.stderr)
        return 2
    try:
        data = image_archive(args.name, entrypoint, args.python)
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"error: cannot collect the Python runtime of {args.python}: {exc}", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
