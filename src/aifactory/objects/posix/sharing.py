"""Bucket grants, in the store for S3 and, with a root control plane, as POSIX ACLs for jobs.

A grant of ``read`` or ``write`` to another tenant adds ``u:UID:rX`` to every
directory and file of the bucket and the same default entry to every
directory, so objects written later inherit it (``setfacl -R -P``, which
never follows a symbolic link). Revoking removes both entries. Both levels
give the grantee's jobs read on the filesystem only: a write grant is
exercised through S3, so every object stays owned by the bucket's tenant.

Entries name numeric uids, so no name reaches the command line; ``setfacl``
comes from the ``acl`` package. A grantee that maps to the same user as the
owner, or as another grantee that keeps its grant, is left as it is (tenants
without a Unix user of their own share the site's workload user).
"""

from __future__ import annotations

import shutil
import subprocess

from aifactory.errors import ConfigError
from aifactory.identity import Identity
from aifactory.objects.posix.ownership import IdentityOf
from aifactory.objects.posix.storage import FileStore
from aifactory.store import Store

__all__ = ["BucketSharing"]


class BucketSharing:
    """Sets a bucket's grants.

    Args:
        store: Where grants are kept (what S3 checks).
        files: The buckets' directories.
        identity_of: Tenant name -> its identity (None: no such tenant); left
            out where the control plane cannot set ACLs on tenants' files.
    """

    def __init__(self, store: Store, files: FileStore, identity_of: IdentityOf | None) -> None:
        self._store = store
        self._files = files
        self._identity_of = identity_of

    def set(self, bucket: str, tenant: str, access: str | None) -> bool:
        """Grant ``tenant`` read or write (None revokes); False when the bucket has no owner.

        Blocking (``setfacl`` walks the whole bucket). A grant takes effect on
        disk before S3 allows it, a revocation in S3 before the disk.

        Raises:
            ConfigError: the grantee maps to no usable user, or ``setfacl`` failed.
        """
        record = self._store.bucket(bucket)
        if record is None:
            return False
        if self._identity_of is None:
            return self._store.set_bucket_grant(bucket, tenant, access)
        if access is not None:
            grantee = self._identity_of(tenant)
            if grantee is not None and not self._already_reads(record.tenant, grantee, {}):
                self._setfacl(bucket, "-m", f"u:{grantee.uid}:rX,d:u:{grantee.uid}:rX")
            return self._store.set_bucket_grant(bucket, tenant, access)
        if not self._store.set_bucket_grant(bucket, tenant, None):
            return False
        grantee = self._identity_of(tenant)
        others = {name: level for name, level in record.grants.items() if name != tenant}
        if grantee is not None and not self._already_reads(record.tenant, grantee, others):
            self._setfacl(bucket, "-x", f"u:{grantee.uid},d:u:{grantee.uid}")
        return True

    def _already_reads(self, owner: str, grantee: Identity, grants: dict[str, str]) -> bool:
        """Whether the owner's user, or one of ``grants``, is ``grantee``'s user already."""
        for tenant in [owner, *grants]:
            try:
                identity = self._identity_of(tenant) if self._identity_of else None
            except ConfigError:
                continue
            if identity is not None and identity.uid == grantee.uid:
                return True
        return False

    def _setfacl(self, bucket: str, action: str, entries: str) -> None:
        program = shutil.which("setfacl")
        if program is None:
            raise ConfigError(
                "setfacl is not installed, so bucket grants cannot reach the filesystem.",
                fix="install the `acl` package (`apt-get install acl`)",
            )
        argv = [program, "-R", "-P", action, entries, "--", self._files.bucket_dir(bucket)]
        done = subprocess.run(argv, capture_output=True, check=False)
        if done.returncode != 0:
            raise ConfigError(
                f"setfacl could not change the ACLs of bucket {bucket!r}: "
                f"{done.stderr.decode(errors='replace').strip()[:300]}",
                fix="mount the filesystem with ACL support (ext4 and xfs have it by default)",
            )
