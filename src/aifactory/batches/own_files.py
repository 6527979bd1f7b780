"""Reading a tenant's files as the control plane, without following the tenant's links.

A shard's output lies in its tenant's own folder, which the tenant's jobs
may change at will: a symbolic link there pointing at another tenant's
output (or any file root may read) must not be read by the control plane
and handed back in the tenant's output file. Every folder on the way is
opened with ``O_NOFOLLOW`` from the identity's own directory (whose parent
is the control plane's), and the file must be a regular file of the
tenant's user. An unprivileged control plane (a launch prefix) cannot open
the tenant's 0700 folder at all: the tenant's identity reads its own file
for it, through the prefix, refusing links the same way
(``Privilege.read_file``).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePath

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class NotOwnFile(Exception):
    """A path in the tenant's folder is a link, not a regular file, or not the tenant's."""


@dataclass(frozen=True)
class OwnFolder:
    """An identity's own directory and the user every file read from it must belong to.

    Attributes:
        top: The identity's directory (its parent is the control plane's).
        uid: The owner files must have; None where nothing is handed to
            other users (single-user mode).
        as_owner: Reads a file as its owner (path, offset -> size, bytes; a
            ``ValueError`` for a link): the launch prefix's way. None: read here.
    """

    top: Path
    uid: int | None
    as_owner: Callable[[Path, int], tuple[int, bytes]] | None = None

    def read(self, relative: PurePath, offset: int = 0) -> tuple[int, bytes]:
        """The size of ``top/relative`` and its bytes from ``offset`` (0, b"" when absent).

        Blocking.

        Raises:
            NotOwnFile: a symbolic link on the way, or not a regular file of ``uid``.
        """
        if self.as_owner is not None:
            try:
                return self.as_owner(self.top / relative, offset)
            except ValueError as exc:
                raise NotOwnFile(str(exc)) from exc
        fd = self._open(relative)
        if fd is None:
            return 0, b""
        with os.fdopen(fd, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            handle.seek(min(offset, size))
            return size, handle.read(max(0, size - offset))

    def _open(self, relative: PurePath) -> int | None:
        parent = os.open(self.top, _DIR_FLAGS)
        try:
            for part in relative.parts[:-1]:
                child = os.open(part, _DIR_FLAGS, dir_fd=parent)
                os.close(parent)
                parent = child
            fd = os.open(relative.name, _FILE_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise NotOwnFile(f"{self.top / relative}: {exc.strerror}") from exc
        finally:
            os.close(parent)
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or (self.uid is not None and info.st_uid != self.uid):
            os.close(fd)
            raise NotOwnFile(f"{self.top / relative} is not a file of uid {self.uid}")
        return fd
