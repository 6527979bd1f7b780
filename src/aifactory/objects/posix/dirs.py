"""A bucket's directories, reached one component at a time without following symbolic links.

A tenant owns its bucket's directories (``ownership``), so its jobs may
replace any of them with a symbolic link at any moment, between a check of
the path and its use. Resolving each component with ``O_NOFOLLOW`` from an
open descriptor of the bucket keeps every read, write and delete inside the
bucket all the same, even for a control plane running as root: a symbolic
link is never followed, and never an object.
"""

from __future__ import annotations

import os
import stat

from aifactory.identity import Identity
from aifactory.objects.errors import S3Error
from aifactory.objects.posix.ownership import hand_dir

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def split_key(key: str) -> tuple[list[str], str]:
    """The directory names above a (checked) key and its last name (``a/b/`` -> ``[a], b``)."""
    *parents, name = key.rstrip("/").split("/")
    return parents, name


def descend(
    bucket_fd: int, names: list[str], key: str, create: bool, owner: Identity | None = None
) -> int:
    """A descriptor of the directory ``names`` under ``bucket_fd`` (which this closes).

    With ``create``, missing directories are made and handed to ``owner``.

    Raises:
        S3Error: AccessDenied for a symbolic link on the way; with ``create``,
            ObjectParentIsFile for a file on the way, else NoSuchKey.
    """
    fd = bucket_fd
    for name in names:
        try:
            child = _child(fd, name, create, owner)
        except (FileNotFoundError, NotADirectoryError):
            error = _refusal(fd, name, key, create)
            os.close(fd)
            raise error from None
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        fd = child
    return fd


def _child(parent: int, name: str, create: bool, owner: Identity | None) -> int:
    try:
        return os.open(name, DIR_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        if not create:
            raise
    try:
        # 0700 until it is handed over: nobody passes through a directory of the wrong owner.
        os.mkdir(name, 0o700 if owner is not None else 0o777, dir_fd=parent)
    except FileExistsError:
        return os.open(name, DIR_FLAGS, dir_fd=parent)  # a concurrent writer made it
    fd = os.open(name, DIR_FLAGS, dir_fd=parent)
    try:
        hand_dir(fd, owner)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _refusal(parent: int, name: str, key: str, create: bool) -> S3Error:
    try:
        mode = os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
    except OSError:
        mode = 0
    if stat.S_ISLNK(mode):
        return S3Error(
            "AccessDenied",
            f"The key {key!r} leads through a symbolic link, which this server never follows.",
            resource=key,
        )
    if create and mode:
        return S3Error(
            "ObjectParentIsFile",
            f"A parent of {key!r} is an object, so it cannot also be a directory.",
            fix="delete that object or choose another key",
            resource=key,
        )
    return S3Error("NoSuchKey", resource=key)
