"""How many objects and bytes a bucket's tree holds, counted on the filesystem."""

from __future__ import annotations

import contextlib
import os

from aifactory.objects.posix.paths import RESERVED_PREFIX

__all__ = ["count_files"]


def count_files(directory: str, limit: int | None = 100_000) -> tuple[int, int]:
    """Files and bytes under ``directory`` (temporary files aside), counting up to ``limit``."""
    files = size = 0
    for parent, _dirs, names in os.walk(directory):
        for name in names:
            if name.startswith(RESERVED_PREFIX):
                continue
            with contextlib.suppress(OSError):
                size += os.lstat(os.path.join(parent, name)).st_size
                files += 1
            if limit is not None and files >= limit:
                return files, size
    return files, size
