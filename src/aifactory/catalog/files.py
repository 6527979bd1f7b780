"""An entry's files: found under its prefix, hashed by the server, kept by content.

Each file is hard-linked into a content-addressed directory beside the buckets
(``OBJECTS_ROOT/.aifactory-catalog/sha256/``) *before* it is hashed, so the
hash describes the very inode kept. S3 writes replace an object by renaming a
new file into place, so the old inode, and with it every older version's
bytes, stays readable there. A file changed in place (through POSIX) changes
the kept inode too: reading it back checks its hash and answers 410 then.

Registrations hold the store's lock shared from the first file kept to their
version saved; a delete holds it alone while it finds and unlinks the files
no version lists any more. Otherwise a delete could unlink a kept file that a
registration of identical bytes (in another entry) found already there and
is about to list. The lock is a ``flock`` on a file in the store, so it holds
across the control plane's processes on one host.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import stat
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aifactory.objects import RESERVED_PREFIX

__all__ = ["DESCRIPTION_FILE", "CatalogFile", "ContentStore", "no_links_on_the_way", "scan_prefix"]

DESCRIPTION_FILE = "catalog.yaml"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class CatalogFile:
    """One file of a version: its path under the prefix, size and SHA-256."""

    path: str
    size: int
    sha256: str
    kept: bool

    def as_dict(self) -> dict[str, object]:
        """The stored form."""
        return {"path": self.path, "size": self.size, "sha256": self.sha256, "kept": self.kept}


def sha256_of(path: Path) -> str:
    """The hex SHA-256 of a file, read a megabyte at a time (never through a symbolic link)."""
    digest = hashlib.sha256()
    with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def no_links_on_the_way(path: Path) -> bool:
    """Whether no component of ``path`` is a symbolic link.

    The control plane reads tenants' trees with more rights than the tenant:
    a link a tenant's job planted (to ``DATA_DIR/admin.key``, another tenant's
    bucket) must never be followed.
    """
    return os.path.realpath(path) == os.path.normpath(os.path.abspath(path))


class ContentStore:
    """Files kept by their SHA-256, as hard links to the inodes that were hashed.

    Args:
        root: The directory of kept files (on the buckets' filesystem).
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    @contextlib.asynccontextmanager
    async def keeping(self) -> AsyncIterator[None]:
        """Held (shared) while files are kept and their version saved."""
        async with self._locked(fcntl.LOCK_SH):
            yield

    @contextlib.asynccontextmanager
    async def freeing(self) -> AsyncIterator[None]:
        """Held alone while a delete finds and unlinks the files no version lists."""
        async with self._locked(fcntl.LOCK_EX):
            yield

    @contextlib.asynccontextmanager
    async def _locked(self, operation: int) -> AsyncIterator[None]:
        taking = asyncio.ensure_future(asyncio.to_thread(self._lock, operation))
        try:
            descriptor = await asyncio.shield(taking)
        except asyncio.CancelledError:
            # The thread may still get the lock: let go of it whenever it does.
            taking.add_done_callback(_close_when_taken)
            raise
        try:
            yield
        finally:
            os.close(descriptor)

    def _lock(self, operation: int) -> int:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        descriptor = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(descriptor, operation)
        except BaseException:
            os.close(descriptor)
            raise
        return descriptor

    def path_of(self, sha256: str) -> Path:
        """Where the file with ``sha256`` is kept."""
        return self.root / sha256[:2] / sha256

    def keep(self, source: Path) -> CatalogFile:
        """Link ``source`` in, hash the linked inode, and file it under its hash.

        Without a link (another filesystem) the file is hashed in place and
        marked not kept: its version then reads only while it is unchanged.
        """
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        staged = self.root / f"staged-{uuid.uuid4().hex}"
        try:
            os.link(source, staged, follow_symlinks=False)
        except OSError:
            return CatalogFile(source.name, source.lstat().st_size, sha256_of(source), kept=False)
        try:
            if not stat.S_ISREG(staged.lstat().st_mode):
                raise FileNotFoundError(source)  # swapped for a link after the scan saw it
            sha256 = sha256_of(staged)
            size = staged.stat().st_size
            target = self.path_of(sha256)
            target.parent.mkdir(exist_ok=True, mode=0o700)
            if target.exists():
                staged.unlink()
            else:
                staged.rename(target)
        except BaseException:
            staged.unlink(missing_ok=True)
            raise
        return CatalogFile(source.name, size, sha256, kept=True)


def _close_when_taken(taking: asyncio.Future[int]) -> None:
    if not taking.cancelled() and taking.exception() is None:
        os.close(taking.result())


def scan_prefix(directory: Path, content: ContentStore) -> list[CatalogFile]:
    """Every file under ``directory`` (but ``catalog.yaml`` at its top), kept and hashed.

    Raises:
        FileNotFoundError: ``directory`` is not a directory.
    """
    if not no_links_on_the_way(directory) or not directory.is_dir():
        raise FileNotFoundError(directory)
    found = []
    for folder, subfolders, names in os.walk(directory):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(RESERVED_PREFIX))
        for name in sorted(names):
            path = Path(folder) / name
            relative = path.relative_to(directory).as_posix()
            if name.startswith(RESERVED_PREFIX) or relative == DESCRIPTION_FILE:
                continue
            if path.is_symlink() or not path.is_file():
                continue
            try:
                kept = content.keep(path)
            except FileNotFoundError:
                continue  # gone, or replaced by a link, since the walk saw it
            found.append(CatalogFile(relative, kept.size, kept.sha256, kept.kept))
    return found
