"""Bucket files belong to the bucket's tenant, so POSIX access from a job agrees with S3's.

When the control plane runs as root, a bucket's directories are owned by the
tenant's identity with mode ``2750`` and its object files ``0640``: the
tenant's user reads and writes, its group reads (sharing by group membership
is read-only), everybody else has no access. The setgid bit keeps every new
file and directory in the tenant's group, whoever creates it. Group write is
left out on purpose: a member of the group could otherwise put files owned by
itself into the bucket, and every object must stay the tenant's. Files get
their owner on the open descriptor (``fchown``) while they still have a
temporary name, so no final name is ever the control plane's.

Staged multipart parts and metadata sidecars live in the control plane's own
``.aifactory`` directory (mode 0700): they are handed to the tenant too, mode
0600, so filesystem quotas count them, but nobody else can reach them.

In ``prefix`` and ``single-user`` modes the control plane cannot ``chown``:
files stay as before (its own, modes from its umask), and a job's POSIX view
of buckets is the control plane's, not the tenant's.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from aifactory.errors import ConfigError
from aifactory.identity import Identity
from aifactory.objects.errors import S3Error
from aifactory.store import Store
from aifactory.tenancy import TenantIdentities

__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "STAGED_MODE",
    "IdentityOf",
    "Ownership",
    "bucket_owners",
    "object_mode",
    "tenant_lookup",
    "warn_unless_traversable",
]

logger = logging.getLogger(__name__)

DIR_MODE = 0o2750
FILE_MODE = 0o640
STAGED_MODE = 0o600
_CACHE_TTL_S = 5.0
_CACHE_MAX = 10_000

IdentityOf = Callable[[str], Identity | None]


class Ownership:
    """Who owns each bucket's files, cached, and how a new file or directory is handed over.

    Args:
        owner_of: Bucket name -> the identity its files belong to (None: the
            control plane keeps them). Blocking; raises ConfigError when the
            tenant has no usable identity. Leave it out where the control
            plane cannot chown (files then stay as they are created).
    """

    def __init__(self, owner_of: IdentityOf | None = None) -> None:
        self._owner_of = owner_of
        self._cache: dict[str, tuple[float, Identity | None, ConfigError | None]] = {}

    @property
    def enabled(self) -> bool:
        """Whether files are handed to bucket owners at all (a root control plane)."""
        return self._owner_of is not None

    def of(self, bucket: str) -> Identity | None:
        """The identity ``bucket``'s files belong to, cached a few seconds (blocking on a miss).

        Raises:
            S3Error: InternalError when the tenant maps to no usable Unix user:
                a write would otherwise leave files nobody's job can read.
        """
        if self._owner_of is None:
            return None
        now = time.monotonic()
        cached = self._cache.get(bucket)
        if cached is None or cached[0] <= now:
            try:
                cached = (now + _CACHE_TTL_S, self._owner_of(bucket), None)
            except ConfigError as exc:
                cached = (now + _CACHE_TTL_S, None, exc)
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[bucket] = cached
        if cached[2] is not None:
            raise S3Error(
                "InternalError",
                f"The bucket's tenant has no usable Unix identity: {cached[2].message}",
                fix=cached[2].fix or "map the tenant to a Unix user",
                resource=bucket,
            )
        return cached[1]

    def forget(self, bucket: str) -> None:
        """Drop the cached owner of a bucket that was created, deleted or changed hands."""
        self._cache.pop(bucket, None)


def warn_unless_traversable(root: str) -> None:
    """Log when other users cannot pass through ``root``: jobs could not reach their buckets.

    The root is the site's choice (0711 lets jobs in without listing bucket
    names), so it is reported, not changed.
    """
    for folder in [root, *_parents(root)]:
        if not os.stat(folder).st_mode & 0o001:
            logger.warning(
                "%s is not traversable by other users (o+x), so tenants' jobs cannot reach "
                "their buckets under %s; `chmod o+x %s` (0711 keeps bucket names private)",
                folder,
                root,
                folder,
            )
            return


def _parents(path: str) -> list[str]:
    found = []
    while (parent := os.path.dirname(path)) != path:
        found.append(parent)
        path = parent
    return found


def hand_file(fd: int, owner: Identity | None, mode: int = FILE_MODE) -> None:
    """Give an open file to ``owner`` (nothing without one): one fchown, one fchmod."""
    if owner is not None:
        os.fchown(fd, owner.uid, owner.gid)
        os.fchmod(fd, mode)


def object_mode(public: bool) -> int:
    """An object file's mode: others may read a public object too."""
    return FILE_MODE | 0o004 if public else FILE_MODE


def hand_dir(fd: int, owner: Identity | None) -> None:
    """Give a directory this process just made to ``owner``, setgid so its group sticks."""
    if owner is not None:
        os.fchown(fd, owner.uid, owner.gid)
        os.fchmod(fd, DIR_MODE)


def tenant_lookup(store: Store, identities: TenantIdentities) -> IdentityOf:
    """Tenant name -> its identity (None: no such tenant).

    The lookup blocks, and raises ConfigError when the tenant maps to no usable user.
    """

    def identity_of(tenant: str) -> Identity | None:
        row = store.tenant(tenant)
        return None if row is None else identities.of(row)

    return identity_of


def bucket_owners(store: Store, tenants: IdentityOf) -> IdentityOf:
    """Bucket name -> its tenant's identity, from the store (None: a bucket nobody owns)."""

    def owner_of(bucket: str) -> Identity | None:
        record = store.bucket(bucket)
        return None if record is None else tenants(record.tenant)

    return owner_of
