"""Run as a workload's identity (through the launch prefix) to create its files.

An unprivileged control plane cannot ``chown``: it runs this helper as the
identity instead, so the identity itself creates the folder or the file (its
content on stdin). Standard library only::

    python -m aifactory.identity.handoff dir PATH MODE
    python -m aifactory.identity.handoff file PATH MODE   < content
    python -m aifactory.identity.handoff remove PATH 0
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    """Do one handoff; exit 0 on success, 2 on bad arguments."""
    if len(argv) != 3 or argv[0] not in ("dir", "file", "remove"):
        print("usage: handoff dir|file|remove PATH MODE", file=sys.stderr)
        return 2
    action, path, mode = argv[0], Path(argv[1]), int(argv[2], 8)
    if action == "dir":
        path.mkdir(parents=True, exist_ok=True, mode=mode)
        os.chmod(path, mode)
    elif action == "file":
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
        with os.fdopen(descriptor, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(sys.stdin.buffer.read())
    else:
        path.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
