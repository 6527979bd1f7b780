"""Pinned models: a version's kept file where a tenant's replicas can read it, and nothing else.

A service deployed with ``model: catalog:T/N@V`` must serve version V's bytes
for as long as it runs, whatever happens to the bucket's file after the
deploy: a replica started a week later reads the pin, never the bucket. The
content store itself stays the control plane's (mode 0700); each deploying
tenant gets a folder of its own (``OBJECTS_ROOT/.aifactory-pins/<tenant id>``,
the control plane's, readable by the tenant's group only) holding the pins of
the versions it deployed, named by their SHA-256.

A pin is a hard link to the kept inode when the tenant's identity can read
that inode (its own files), so it costs no bytes; else (another tenant's
shared model, or a file on another filesystem) a copy handed to the tenant,
mode 0440, hashed while copied. A link shares its inode with the tenant's
own bucket file: an S3 write replaces that file by renaming a new one into
place, so the pin keeps the old bytes; only the tenant itself, writing its
own file in place through POSIX, could change them. Each deploy of a
``catalog:`` model prunes its tenant's pins that no stored service names.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
import uuid
from collections.abc import Collection
from pathlib import Path

from aifactory.identity import Identity

__all__ = ["PRUNE_GRACE_S", "ModelPins", "PinMismatch"]

PRUNE_GRACE_S = 600.0
_CHUNK = 1 << 20
_PIN_MODE = 0o440


class PinMismatch(Exception):
    """Raised when the kept bytes no longer hash to the version's SHA-256."""


class ModelPins:
    """Each tenant's pinned model files.

    Args:
        root: The folder of every tenant's pins (beside the buckets, same filesystem).
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def folder(self, tenant_id: int) -> Path:
        """Where ``tenant_id``'s pins lie."""
        return self.root / str(tenant_id)

    def pin(
        self, kept: Path, sha256: str, size: int, tenant_id: int, identity: Identity | None
    ) -> Path:
        """A path holding exactly ``sha256``'s bytes that ``identity`` (None: any) can read.

        ``kept`` is the content store's file of that version (checked by size
        by the caller). Blocking.

        Raises:
            PinMismatch: the kept bytes changed (a copy is hashed as it is made).
        """
        folder = self._folder(tenant_id, identity)
        target = folder / f"{sha256}.gguf"
        if _is_pin(target, size):
            # A fresh ctime keeps it from a prune running before this deploy is stored.
            os.chmod(target, stat.S_IMODE(target.lstat().st_mode), follow_symlinks=False)
            return target
        staged = folder / f".staged-{uuid.uuid4().hex}"
        try:
            if not _linked(kept, staged, identity):
                _copy_checked(kept, staged, sha256, identity)
            staged.replace(target)
        finally:
            staged.unlink(missing_ok=True)
        return target

    def prune(
        self, tenant_id: int, in_use: Collection[str], older_than_s: float = PRUNE_GRACE_S
    ) -> int:
        """Unlink ``tenant_id``'s pins no path of ``in_use`` names; how many went.

        A pin made (or reused) in the last ``older_than_s`` seconds stays:
        the deploy that made it may not be stored yet. Blocking.
        """
        now = time.time()
        removed = 0
        for path in self._all(self.folder(tenant_id)):
            if str(path) in in_use or now - path.lstat().st_ctime < older_than_s:
                continue
            path.unlink(missing_ok=True)
            removed += 1
        return removed

    def links(self) -> dict[str, int]:
        """How many pins (across tenants) each SHA-256 has (blocking)."""
        counts: dict[str, int] = {}
        for path in self._all():
            sha256 = path.name.removesuffix(".gguf")
            counts[sha256] = counts.get(sha256, 0) + 1
        return counts

    def copied_bytes(self, tenant_id: int) -> int:
        """The bytes of ``tenant_id``'s pins that are copies (their inode is theirs alone)."""
        held = 0
        for path in self._all(self.folder(tenant_id)):
            found = path.lstat()
            held += found.st_size if found.st_nlink == 1 else 0
        return held

    def _all(self, under: Path | None = None) -> list[Path]:
        folders = [under] if under is not None else _entries(self.root)
        return [
            path
            for folder in folders
            for path in _entries(folder)
            if path.name.endswith(".gguf") and stat.S_ISREG(path.lstat().st_mode)
        ]

    def _folder(self, tenant_id: int, identity: Identity | None) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o711)  # replicas pass through to their own tenant's folder
        folder = self.folder(tenant_id)
        folder.mkdir(mode=0o700, exist_ok=True)
        if identity is not None:
            os.chown(folder, os.getuid(), identity.gid)
            folder.chmod(0o750)
        else:
            folder.chmod(0o755)
        return folder


def _entries(folder: Path) -> list[Path]:
    try:
        return [Path(e.path) for e in os.scandir(folder) if not e.is_symlink()]
    except FileNotFoundError:
        return []


def _is_pin(path: Path, size: int) -> bool:
    try:
        found = path.lstat()
    except FileNotFoundError:
        return False
    return stat.S_ISREG(found.st_mode) and found.st_size == size


def _linked(kept: Path, staged: Path, identity: Identity | None) -> bool:
    """Link ``kept`` in when ``identity`` can read its inode and it lies on this filesystem."""
    if identity is not None and not _readable_by(kept.stat(), identity):
        return False
    try:
        os.link(kept, staged, follow_symlinks=False)
    except OSError:
        return False  # another filesystem (a bucket not kept by the content store)
    return True


def _readable_by(found: os.stat_result, identity: Identity) -> bool:
    if found.st_uid == identity.uid:
        return bool(found.st_mode & stat.S_IRUSR)
    if found.st_gid == identity.gid or found.st_gid in identity.groups:
        return bool(found.st_mode & stat.S_IRGRP)
    return bool(found.st_mode & stat.S_IROTH)


def _copy_checked(kept: Path, staged: Path, sha256: str, identity: Identity | None) -> None:
    digest = hashlib.sha256()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    with (
        os.fdopen(os.open(kept, os.O_RDONLY | os.O_NOFOLLOW), "rb") as source,
        os.fdopen(os.open(staged, flags, 0o600), "wb") as target,
    ):
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
            target.write(chunk)
        if identity is not None:
            os.fchown(target.fileno(), identity.uid, identity.gid)
        os.fchmod(target.fileno(), _PIN_MODE)
    if digest.hexdigest() != sha256:
        raise PinMismatch(kept)
