#!/usr/bin/env python3
"""Write a one-layer OCI image archive built from local files, for `ctr images import`.

No registry is reachable from the dev machines, so the dev cluster's images
are made here: a root filesystem holding Debian's static busybox (and the
applet links named below), with an entrypoint, written as an OCI image
layout in a tar archive on stdout.

    python3 deploy/oci-image.py NAME ENTRYPOINT_JSON > image.tar
    python3 deploy/oci-image.py localhost/pause:aifactory '["/bin/sleep", "2147483647"]'

Only the standard library; run by deploy/k8s-dev-cluster.sh with the
system's python3.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path

BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "sleep", "echo", "cat", "env", "hostname", "ip", "wget", "true", "false", "ls")
DIRECTORIES = {"bin": 0o755, "dev": 0o755, "etc": 0o755, "proc": 0o755, "sys": 0o755, "tmp": 0o1777}


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def _blob(archive: tarfile.TarFile, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    _add(archive, f"blobs/sha256/{digest}", data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def _layer() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as layer:
        for name, mode in DIRECTORIES.items():
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, mode
            layer.addfile(info)
        layer.add(BUSYBOX, "bin/busybox")
        for applet in APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            layer.addfile(info)
    return out.getvalue()


def image_archive(name: str, entrypoint: list[str]) -> bytes:
    """The OCI image layout of a busybox image called ``name``, as tar bytes."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        layer_data = _layer()
        layer = _blob(archive, layer_data)
        config = {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": entrypoint, "Env": ["PATH=/bin"]},
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
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    if not BUSYBOX.exists():
        print(f"error: {BUSYBOX} is missing\nfix: apt-get install busybox-static", file=sys.stderr)
        return 1
    entrypoint = json.loads(sys.argv[2])
    if not isinstance(entrypoint, list) or not all(isinstance(a, str) for a in entrypoint):
        print("error: ENTRYPOINT_JSON must be a JSON list of strings", file=sys.stderr)
        return 2
    sys.stdout.buffer.write(image_archive(sys.argv[1], entrypoint))
    return 0


if __name__ == "__main__":
    sys.exit(main())
