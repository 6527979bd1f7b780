"""The state store: plain synchronous queries, called from async code via threads.

SQLite (the default, in WAL mode) and PostgreSQL share the same code through
SQLAlchemy. Callers on the event loop use ``asyncio.to_thread``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, func, insert, select, update
from sqlalchemy.engine.url import make_url
from sqlalchemy.orm import Session, sessionmaker

from aifactory.store.tables import (
    ApiKeyRow,
    Base,
    BucketRow,
    JobRow,
    ReplicaRow,
    S3AccessKeyRow,
    ServiceRow,
    TenantRow,
    UsageRow,
    utcnow,
)


@dataclass(frozen=True)
class KeyRecord:
    """An API key as the authenticator needs it."""

    key_id: int
    tenant_id: int
    tenant: str
    role: str
    key_hash: str
    revoked: bool


@dataclass(frozen=True)
class BucketRecord:
    """An S3 bucket's owner and grants (tenant name -> ``read`` or ``write``)."""

    name: str
    tenant_id: int
    tenant: str
    grants: dict[str, str]
    created_at: datetime


@dataclass(frozen=True)
class UsageTotal:
    """Summed usage of one tenant and model."""

    tenant: str
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


class Store:
    """All queries of the control plane's state."""

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite":
            if parsed.database:
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(url, connect_args={"check_same_thread": False})
            event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            self.engine = create_engine(url, pool_pre_ping=True)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def create_schema(self) -> None:
        """Create missing tables."""
        Base.metadata.create_all(self.engine)

    def close(self) -> None:
        """Release every pooled connection."""
        self.engine.dispose()

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    # tenants and keys

    def ensure_tenant(self, name: str) -> int:
        """Return the id of tenant ``name``, creating it if needed."""
        with self._session() as s:
            row = s.scalar(select(TenantRow).where(TenantRow.name == name))
            if row is None:
                row = TenantRow(name=name)
                s.add(row)
                s.flush()
            return row.id

    def add_key(self, tenant_id: int, key_hash: str, prefix: str, role: str, name: str) -> int:
        """Store a new key's hash; return its id."""
        with self._session() as s:
            row = ApiKeyRow(
                tenant_id=tenant_id, key_hash=key_hash, prefix=prefix, role=role, name=name
            )
            s.add(row)
            s.flush()
            return row.id

    def key_by_hash(self, key_hash: str) -> KeyRecord | None:
        """Find a key by its hash."""
        with self._session() as s:
            row = s.execute(
                select(ApiKeyRow, TenantRow.name)
                .join(TenantRow, TenantRow.id == ApiKeyRow.tenant_id)
                .where(ApiKeyRow.key_hash == key_hash)
            ).first()
            if row is None:
                return None
            key, tenant = row
            return KeyRecord(
                key.id, key.tenant_id, tenant, key.role, key.key_hash, key.revoked_at is not None
            )

    def add_s3_access_key(self, key_id: int, access_key_id: str) -> None:
        """Attach an S3 access key id to an API key."""
        with self._session() as s:
            s.add(S3AccessKeyRow(access_key_id=access_key_id, api_key_id=key_id))

    def key_by_s3_access_key(self, access_key_id: str) -> KeyRecord | None:
        """The API key an S3 access key id belongs to."""
        with self._session() as s:
            row = s.execute(
                select(ApiKeyRow, TenantRow.name)
                .join(TenantRow, TenantRow.id == ApiKeyRow.tenant_id)
                .join(S3AccessKeyRow, S3AccessKeyRow.api_key_id == ApiKeyRow.id)
                .where(S3AccessKeyRow.access_key_id == access_key_id)
            ).first()
            if row is None:
                return None
            key, tenant = row
            return KeyRecord(
                key.id, key.tenant_id, tenant, key.role, key.key_hash, key.revoked_at is not None
            )

    def list_keys(self) -> list[dict[str, Any]]:
        """Every key, without hashes."""
        with self._session() as s:
            rows = s.execute(
                select(ApiKeyRow, TenantRow.name)
                .join(TenantRow, TenantRow.id == ApiKeyRow.tenant_id)
                .order_by(ApiKeyRow.id)
            ).all()
            return [
                {
                    "id": k.id,
                    "tenant": tenant,
                    "prefix": k.prefix,
                    "role": k.role,
                    "name": k.name,
                    "created_at": k.created_at.isoformat(),
                    "revoked": k.revoked_at is not None,
                }
                for k, tenant in rows
            ]

    def revoke_key(self, key_id: int) -> bool:
        """Mark a key revoked; False when no such key."""
        with self._session() as s:
            result = s.execute(
                update(ApiKeyRow)
                .where(ApiKeyRow.id == key_id, ApiKeyRow.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def count_admin_keys(self) -> int:
        """How many unrevoked admin keys exist."""
        with self._session() as s:
            return (
                s.scalar(
                    select(func.count())
                    .select_from(ApiKeyRow)
                    .where(ApiKeyRow.role == "admin", ApiKeyRow.revoked_at.is_(None))
                )
                or 0
            )

    # buckets

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

    # services

    def add_service(self, name: str, spec: dict[str, Any], tenant_id: int | None) -> None:
        """Insert a service (the caller checked it does not exist)."""
        with self._session() as s:
            s.add(ServiceRow(name=name, spec=spec, tenant_id=tenant_id))

    def service(self, name: str) -> ServiceRow | None:
        """One service by name."""
        with self._session() as s:
            return s.get(ServiceRow, name)

    def services(self) -> list[ServiceRow]:
        """Every service, by name."""
        with self._session() as s:
            return list(s.scalars(select(ServiceRow).order_by(ServiceRow.name)))

    def set_service_status(self, name: str, status: str) -> None:
        """Set a service's status (``active`` or ``deleting``)."""
        with self._session() as s:
            s.execute(
                update(ServiceRow)
                .where(ServiceRow.name == name)
                .values(status=status, updated_at=utcnow())
            )

    def remove_service(self, name: str) -> None:
        """Delete a service row."""
        with self._session() as s:
            row = s.get(ServiceRow, name)
            if row is not None:
                s.delete(row)

    # replicas

    def add_replica(self, **fields: Any) -> None:
        """Insert a replica row."""
        with self._session() as s:
            s.add(ReplicaRow(**fields))

    def update_replica(self, replica_id: str, **fields: Any) -> None:
        """Change some fields of a replica."""
        with self._session() as s:
            s.execute(
                update(ReplicaRow)
                .where(ReplicaRow.id == replica_id)
                .values(updated_at=utcnow(), **fields)
            )

    def replica(self, replica_id: str) -> ReplicaRow | None:
        """One replica by id."""
        with self._session() as s:
            return s.get(ReplicaRow, replica_id)

    def replicas(self, service: str | None = None, live_only: bool = False) -> list[ReplicaRow]:
        """Replicas, optionally of one service, optionally only those not gone."""
        query = select(ReplicaRow).order_by(ReplicaRow.created_at)
        if service is not None:
            query = query.where(ReplicaRow.service == service)
        if live_only:
            query = query.where(ReplicaRow.state.not_in(("gone", "failed")))
        with self._session() as s:
            return list(s.scalars(query))

    def mark_replicas(self, ids: Iterable[str], state: str, reason: str) -> None:
        """Set the state of several replicas at once."""
        with self._session() as s:
            s.execute(
                update(ReplicaRow)
                .where(ReplicaRow.id.in_(list(ids)))
                .values(state=state, reason=reason, updated_at=utcnow())
            )

    # usage

    def add_usage(self, rows: list[dict[str, Any]]) -> None:
        """Insert many usage rows in one transaction."""
        if rows:
            with self._session() as s:
                s.execute(insert(UsageRow), rows)

    def usage_totals(self, since: datetime | None = None) -> list[UsageTotal]:
        """Usage summed per tenant and model."""
        query = (
            select(
                TenantRow.name,
                UsageRow.model,
                func.count(),
                func.coalesce(func.sum(UsageRow.prompt_tokens), 0),
                func.coalesce(func.sum(UsageRow.completion_tokens), 0),
            )
            .join(TenantRow, TenantRow.id == UsageRow.tenant_id)
            .group_by(TenantRow.name, UsageRow.model)
            .order_by(TenantRow.name, UsageRow.model)
        )
        if since is not None:
            query = query.where(UsageRow.created_at >= since)
        with self._session() as s:
            return [UsageTotal(*row) for row in s.execute(query).all()]

    # batch jobs

    def add_job(self, **fields: Any) -> None:
        """Insert a job row."""
        with self._session() as s:
            s.add(JobRow(**fields))

    def update_job(self, job_id: str, **fields: Any) -> None:
        """Change some fields of a job."""
        with self._session() as s:
            s.execute(
                update(JobRow).where(JobRow.id == job_id).values(updated_at=utcnow(), **fields)
            )

    def job(self, job_id: str) -> JobRow | None:
        """One job by id."""
        with self._session() as s:
            return s.get(JobRow, job_id)

    def newest_job(self, name: str) -> JobRow | None:
        """The most recently submitted job called ``name``."""
        with self._session() as s:
            return s.scalar(
                select(JobRow)
                .where(JobRow.name == name)
                .order_by(JobRow.submitted_at.desc())
                .limit(1)
            )

    def jobs(self, limit: int = 100, tenant_id: int | None = None) -> list[JobRow]:
        """The newest jobs, newest first, optionally of one tenant."""
        query = select(JobRow).order_by(JobRow.submitted_at.desc()).limit(limit)
        if tenant_id is not None:
            query = query.where(JobRow.tenant_id == tenant_id)
        with self._session() as s:
            return list(s.scalars(query))


def _bucket_record(row: BucketRow, tenant: str) -> BucketRecord:
    return BucketRecord(row.name, row.tenant_id, tenant, dict(row.grants or {}), row.created_at)
