"""Run as a workload's identity (through the launch prefix) to create or read its files.

An unprivileged control plane cannot ``chown``: it runs this helper as the
identity instead, so the identity itself creates the folder or the file (its
content on stdin). Nor can it read the identity's own 0700 folder: ``read``
prints a file's size on one line, then its bytes from OFFSET (nothing for a
file that is not there; a link or anything but a regular file is refused,
exit 3). Standard library only::

    python -m aifactory.identity.handoff dir PATH MODE
    python -m aifactory.identity.handoff file PATH MODE   < content
    python -m aifactory.identity.handoff remove PATH 0
    python -m aifactory.identity.handoff read PATH OFFSET
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

NOT_A_FILE = 3


def main(argv: list[str]) -> int:
    """Do one handoff; exit 0 on success, 2 on bad arguments."""
    if len(argv) != 3 or argv[0] not in ("dir", "file", "remove", "read"):
        print("usage: handoff dir|file|remove PATH MODE, or read PATH OFFSET", file=sys.stderr)
        return 2
    if argv[0] == "read":
        return read(Path(argv[1]), int(argv[2]))
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


def read(path: Path, offset: int) -> int:
    """Print the size of ``path`` and its bytes from ``offset``; 3 for a link or not a file."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return 0
    except OSError as exc:
        print(f"{path}: {exc.strerror}", file=sys.stderr)
        return NOT_A_FILE
    with os.fdopen(descriptor, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            print(f"{path} is not a regular file", file=sys.stderr)
            return NOT_A_FILE
        handle.seek(min(offset, info.st_size))
        data = handle.read(max(0, info.st_size - offset))
    sys.stdout.buffer.write(b"%d\n" % info.st_size + data)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
