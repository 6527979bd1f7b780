"""Tenants, their API keys, limits and the admin audit trail."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update

from aifactory.store.queries import Queries
from aifactory.store.tables import (
    ApiKeyRow,
    AuditRow,
    LimitRow,
    QuotaRow,
    S3AccessKeyRow,
    TenantRow,
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
    expires_at: datetime | None = None
    services: tuple[str, ...] | None = None
    buckets: tuple[str, ...] | None = None


LIMIT_FIELDS = (
    "requests_per_minute",
    "tokens_per_minute",
    "concurrent_requests",
    "token_budget",
    "node_hour_budget",
    "gpu_hour_budget",
)


QUOTA_FIELDS = ("replicas", "cpus", "gpus", "memory_gib", "concurrent_jobs", "buckets", "bytes")


@dataclass(frozen=True)
class QuotaSet:
    """What a tenant may hold at once; None means no quota."""

    replicas: int | None = None
    cpus: int | None = None
    gpus: int | None = None
    memory_gib: float | None = None
    concurrent_jobs: int | None = None
    buckets: int | None = None
    bytes: int | None = None


@dataclass(frozen=True)
class LimitSet:
    """The limits of a tenant or a key; None means no limit."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    concurrent_requests: int | None = None
    token_budget: int | None = None
    node_hour_budget: float | None = None
    gpu_hour_budget: float | None = None
    period: str = "month"

    @property
    def any_request_limit(self) -> bool:
        """Whether the gateway has anything to check for a request."""
        return any(
            v is not None
            for v in (
                self.requests_per_minute,
                self.tokens_per_minute,
                self.concurrent_requests,
                self.token_budget,
            )
        )


# Key ids are an Integer column: 32 bits on PostgreSQL, so no key has an id beyond.
_MAX_KEY_ID = 2**31 - 1
_KEYS = select(ApiKeyRow, TenantRow.name).join(TenantRow, TenantRow.id == ApiKeyRow.tenant_id)


class TenantQueries(Queries):
    """Tenants, keys, limits and audit."""

    def ensure_tenant(self, name: str) -> int:
        """Return the id of tenant ``name``, creating it if needed."""
        with self._session() as s:
            row = s.scalar(select(TenantRow).where(TenantRow.name == name))
            if row is None:
                row = TenantRow(name=name)
                s.add(row)
                s.flush()
            return row.id

    def add_key(
        self,
        tenant_id: int,
        key_hash: str,
        prefix: str,
        role: str,
        name: str,
        expires_at: datetime | None = None,
        services: tuple[str, ...] | None = None,
        buckets: tuple[str, ...] | None = None,
    ) -> int:
        """Store a new key's hash (and its scopes, None for none); return its id."""
        with self._session() as s:
            row = ApiKeyRow(
                tenant_id=tenant_id,
                key_hash=key_hash,
                prefix=prefix,
                role=role,
                name=name,
                expires_at=expires_at,
                services=None if services is None else list(services),
                buckets=None if buckets is None else list(buckets),
            )
            s.add(row)
            s.flush()
            return row.id

    def key_by_hash(self, key_hash: str) -> KeyRecord | None:
        """Find a key by its hash."""
        return self._key_record(_KEYS.where(ApiKeyRow.key_hash == key_hash))

    def _key_record(self, query: Any) -> KeyRecord | None:
        with self._session() as s:
            row = s.execute(query).first()
        if row is None:
            return None
        key, tenant = row
        return KeyRecord(
            key.id,
            key.tenant_id,
            tenant,
            key.role,
            key.key_hash,
            key.revoked_at is not None,
            key.expires_at,
            None if key.services is None else tuple(key.services),
            None if key.buckets is None else tuple(key.buckets),
        )

    def add_s3_access_key(self, key_id: int, access_key_id: str) -> None:
        """Attach an S3 access key id to an API key."""
        with self._session() as s:
            s.add(S3AccessKeyRow(access_key_id=access_key_id, api_key_id=key_id))

    def key_by_s3_access_key(self, access_key_id: str) -> KeyRecord | None:
        """The API key an S3 access key id belongs to."""
        return self._key_record(
            _KEYS.join(S3AccessKeyRow, S3AccessKeyRow.api_key_id == ApiKeyRow.id).where(
                S3AccessKeyRow.access_key_id == access_key_id
            )
        )

    def s3_access_key_of(self, key_id: int) -> str | None:
        """The S3 access key id of an API key; None when it has no S3 pair."""
        with self._session() as s:
            return s.scalar(
                select(S3AccessKeyRow.access_key_id).where(S3AccessKeyRow.api_key_id == key_id)
            )

    def list_keys(self, tenant_id: int | None = None) -> list[dict[str, Any]]:
        """Every key (of ``tenant_id`` when given), without hashes."""
        query = _KEYS.order_by(ApiKeyRow.id)
        if tenant_id is not None:
            query = query.where(ApiKeyRow.tenant_id == tenant_id)
        with self._session() as s:
            rows = s.execute(query).all()
            return [
                {
                    "id": k.id,
                    "tenant": tenant,
                    "prefix": k.prefix,
                    "role": k.role,
                    "name": k.name,
                    "services": k.services,
                    "buckets": k.buckets,
                    "created_at": k.created_at.isoformat(),
                    "expires_at": k.expires_at.isoformat() if k.expires_at else None,
                    "revoked": k.revoked_at is not None,
                }
                for k, tenant in rows
            ]

    def revoke_key(self, key_id: int, tenant_id: int | None = None) -> bool:
        """Mark a key (of ``tenant_id`` when given) revoked; False when no such key."""
        if not 0 < key_id <= _MAX_KEY_ID:
            return False  # the database would refuse to even compare it
        query = update(ApiKeyRow).where(ApiKeyRow.id == key_id, ApiKeyRow.revoked_at.is_(None))
        if tenant_id is not None:
            query = query.where(ApiKeyRow.tenant_id == tenant_id)
        with self._session() as s:
            result = s.execute(query.values(revoked_at=utcnow()))
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

    def tenants(self) -> list[TenantRow]:
        """Every tenant, by name."""
        with self._session() as s:
            return list(s.scalars(select(TenantRow).order_by(TenantRow.name)))

    def tenant(self, name: str) -> TenantRow | None:
        """One tenant by name."""
        with self._session() as s:
            return s.scalar(select(TenantRow).where(TenantRow.name == name))

    def tenant_by_id(self, tenant_id: int) -> TenantRow | None:
        """One tenant by id."""
        with self._session() as s:
            return s.get(TenantRow, tenant_id)

    def update_tenant(self, name: str, **fields: Any) -> None:
        """Change a tenant's Slurm defaults."""
        with self._session() as s:
            s.execute(update(TenantRow).where(TenantRow.name == name).values(**fields))

    def limits_of(self, tenant_id: int, key_id: int | None) -> tuple[LimitSet | None, ...]:
        """The tenant's limits and (when ``key_id`` is given) the key's."""
        with self._session() as s:
            rows = s.scalars(
                select(LimitRow).where(
                    LimitRow.tenant_id == tenant_id,
                    (LimitRow.api_key_id.is_(None)) | (LimitRow.api_key_id == key_id),
                )
            ).all()
        tenant = next((r for r in rows if r.api_key_id is None), None)
        own = next((r for r in rows if r.api_key_id is not None), None)
        return _limit_set(tenant), _limit_set(own)

    def set_limits(self, tenant_id: int, key_id: int | None, **values: Any) -> None:
        """Replace the limits of a tenant (``key_id`` None) or of one key."""
        with self._session() as s:
            row = s.scalar(
                select(LimitRow).where(
                    LimitRow.tenant_id == tenant_id,
                    LimitRow.api_key_id.is_(None)
                    if key_id is None
                    else LimitRow.api_key_id == key_id,
                )
            )
            if row is None:
                row = LimitRow(tenant_id=tenant_id, api_key_id=key_id)
                s.add(row)
            for name in (*LIMIT_FIELDS, "period"):
                if name in values:
                    setattr(row, name, values[name])
            row.updated_at = utcnow()

    def quotas_of(self, tenant_id: int) -> QuotaSet:
        """The tenant's quotas (all None when the site set none)."""
        with self._session() as s:
            row = s.get(QuotaRow, tenant_id)
        if row is None:
            return QuotaSet()
        return QuotaSet(**{name: getattr(row, name) for name in QUOTA_FIELDS})

    def set_quotas(self, tenant_id: int, **values: Any) -> None:
        """Change the tenant's quotas named in ``values`` (None removes one)."""
        with self._session() as s:
            row = s.get(QuotaRow, tenant_id)
            if row is None:
                row = QuotaRow(tenant_id=tenant_id)
                s.add(row)
            for name in QUOTA_FIELDS:
                if name in values:
                    setattr(row, name, values[name])
            row.updated_at = utcnow()

    def add_audit(self, **fields: Any) -> None:
        """Record an admin action."""
        with self._session() as s:
            s.add(AuditRow(**fields))

    def audit(self, limit: int = 100, actor_tenant: str | None = None) -> list[AuditRow]:
        """The newest admin actions (by keys of ``actor_tenant`` when given), newest first."""
        query = select(AuditRow).order_by(AuditRow.id.desc()).limit(limit)
        if actor_tenant is not None:
            query = query.where(AuditRow.actor_tenant == actor_tenant)
        with self._session() as s:
            return list(s.scalars(query))


def _limit_set(row: LimitRow | None) -> LimitSet | None:
    if row is None:
        return None
    return LimitSet(**{name: getattr(row, name) for name in (*LIMIT_FIELDS, "period")})
