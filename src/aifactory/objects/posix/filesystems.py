"""Whether a directory tree lies on local filesystems only (its metadata work is quick).

On a local filesystem, opening, creating and renaming a file in the page
cache takes microseconds, less than handing the work to a thread and back;
on a network or parallel filesystem (NFS, Lustre, GPFS, CephFS, FUSE) the
same call can wait on a server for seconds and must not hold anything up.
Mounts come and go, so the answer is read again after a while.
"""

from __future__ import annotations

import os
import re
import time

MOUNTINFO = "/proc/self/mountinfo"
LOCAL_TYPES = frozenset(
    {"ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "f2fs", "tmpfs", "ramfs", "overlay"}
)
RECHECK_S = 30.0
_OCTAL = re.compile(r"\\([0-7]{3})")


def mounts(mountinfo: str = MOUNTINFO) -> list[tuple[str, str]]:
    """(mount point, filesystem type) of every mount this process sees."""
    found = []
    with open(mountinfo) as handle:
        for line in handle:
            fields, _, described = line.partition(" - ")
            parts, kind = fields.split(), described.split()[:1]
            if len(parts) >= 5 and kind:
                found.append((_unescape(parts[4]), kind[0]))
    return found


def tree_is_local(path: str, mountinfo: str = MOUNTINFO) -> bool:
    """Whether ``path`` and every mount below it are on local filesystems.

    False when the mounts cannot be read: then nothing is assumed quick.
    """
    target = os.path.realpath(path)
    try:
        table = mounts(mountinfo)
    except OSError:
        return False
    holder, holder_type = "", ""
    for mount_point, kind in table:
        if _within(target, mount_point) and len(mount_point) >= len(holder):
            holder, holder_type = mount_point, kind
        if _within(mount_point, target) and kind not in LOCAL_TYPES:
            return False
    return holder_type in LOCAL_TYPES


class LocalTree:
    """``tree_is_local`` of one directory, read again every ``RECHECK_S`` seconds."""

    def __init__(self, path: str, mountinfo: str = MOUNTINFO) -> None:
        self._path = path
        self._mountinfo = mountinfo
        self._answer = False
        self._checked_at = -RECHECK_S

    def __call__(self) -> bool:
        """Whether the tree is local, as of at most ``RECHECK_S`` seconds ago."""
        now = time.monotonic()
        if now - self._checked_at >= RECHECK_S:
            self._answer = tree_is_local(self._path, self._mountinfo)
            self._checked_at = now
        return self._answer


def _within(inner: str, outer: str) -> bool:
    return inner == outer or inner.startswith(outer.rstrip("/") + "/")


def _unescape(field: str) -> str:
    """Mount points in mountinfo escape space, tab, newline and backslash as octal."""
    return _OCTAL.sub(lambda match: chr(int(match[1], 8)), field)
