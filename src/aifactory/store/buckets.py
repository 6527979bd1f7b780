"""Buckets: their owners and grants."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from aifactory.store.queries import Queries
from aifactory.store.tables import BucketRow, TenantRow


@dataclass(frozen=True)
class BucketRecord:
    """An S3 bucket's owner and grants (tenant name -> ``read`` or ``write``)."""

    name: str
    tenant_id: int
    tenant: str
    grants: dict[str, str]
    created_at: datetime


class BucketQueries(Queries):
    """Bucket owners and grants."""

    def add_bucket(self, name: str, tenant_id: int) -> bool:
        """Record a bucket's owner; False when the bucket is already recorded."""
        with self._session() as s:
            if s.get(BucketRow, name) is not None:
                return False
            s.add(BucketRow(name=name, tenant_id=tenant_id, grants={}))
            return True

    def bucket(self, name: str) -> BucketRecord | None:
        """One bucket by name."""
        with self._session() as s:
            row = s.execute(
                select(BucketRow, TenantRow.name)
                .join(TenantRow, TenantRow.id == BucketRow.tenant_id)
                .where(BucketRow.name == name)
            ).first()
            return None if row is None else _bucket_record(*row)

    def buckets(self) -> list[BucketRecord]:
        """Every recorded bucket, by name."""
        with self._session() as s:
            rows = s.execute(
                select(BucketRow, TenantRow.name)
                .join(TenantRow, TenantRow.id == BucketRow.tenant_id)
                .order_by(BucketRow.name)
            ).all()
            return [_bucket_record(*row) for row in rows]

    def remove_bucket(self, name: str) -> None:
        """Forget a bucket."""
        with self._session() as s:
            row = s.get(BucketRow, name)
            if row is not None:
                s.delete(row)

    def set_bucket_grant(self, name: str, tenant: str, access: str | None) -> bool:
        """Grant ``tenant`` read or write access (None revokes); False when no such bucket."""
        with self._session() as s:
            row = s.get(BucketRow, name)
            if row is None:
                return False
            grants = dict(row.grants or {})
            if access is None:
                grants.pop(tenant, None)
            else:
                grants[tenant] = access
            row.grants = grants
            return True


def _bucket_record(row: BucketRow, tenant: str) -> BucketRecord:
    return BucketRecord(
        row.name,
        row.tenant_id,
        tenant,
        dict(row.grants or {}),
        row.created_at,
    )
