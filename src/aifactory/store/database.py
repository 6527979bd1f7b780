"""The state store: plain synchronous queries, called from async code via threads.

SQLite (the default, in WAL mode) and PostgreSQL share the same code through
SQLAlchemy. Callers on the event loop use ``asyncio.to_thread``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Engine,
    Integer,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine.url import make_url
from sqlalchemy.orm import Session, sessionmaker

from aifactory.store.counters import Counters
from aifactory.store.migrate import upgrade
from aifactory.store.tables import (
    ApiKeyRow,
    AuditRow,
    BucketRow,
    FunctionCallRow,
    FunctionRow,
    JobRow,
    LimitRow,
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
    expires_at: datetime | None = None


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


LIMIT_FIELDS = (
    "requests_per_minute",
    "tokens_per_minute",
    "concurrent_requests",
    "token_budget",
    "node_hour_budget",
    "gpu_hour_budget",
)


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


@dataclass(frozen=True)
class UsageBucket:
    """Usage of one tenant and model within one time bucket (``start`` in Unix seconds)."""

    start: int
    tenant: str
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int


_KEYS = select(ApiKeyRow, TenantRow.name).join(TenantRow, TenantRow.id == ApiKeyRow.tenant_id)


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
        self.counters = Counters(self._sessions)

    def create_schema(self) -> None:
        """Create the schema, or migrate an older one to the newest revision."""
        upgrade(self.engine)

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

    def add_key(
        self,
        tenant_id: int,
        key_hash: str,
        prefix: str,
        role: str,
        name: str,
        expires_at: datetime | None = None,
    ) -> int:
        """Store a new key's hash; return its id."""
        with self._session() as s:
            row = ApiKeyRow(
                tenant_id=tenant_id,
                key_hash=key_hash,
                prefix=prefix,
                role=role,
                name=name,
                expires_at=expires_at,
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
            _aware(key.expires_at),
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
                    "expires_at": k.expires_at.isoformat() if k.expires_at else None,
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

    def add_audit(self, **fields: Any) -> None:
        """Record an admin action."""
        with self._session() as s:
            s.add(AuditRow(**fields))

    def audit(self, limit: int = 100) -> list[AuditRow]:
        """The newest admin actions, newest first."""
        with self._session() as s:
            return list(s.scalars(select(AuditRow).order_by(AuditRow.id.desc()).limit(limit)))

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

    def service_versions(self) -> dict[str, tuple[str, datetime]]:
        """Every service's status and last change, by name: what changed, without the specs."""
        with self._session() as s:
            rows = s.execute(select(ServiceRow.name, ServiceRow.status, ServiceRow.updated_at))
            return {name: (status, updated_at) for name, status, updated_at in rows}

    def services_named(self, names: Iterable[str]) -> list[ServiceRow]:
        """The services of ``names`` that exist (the changed ones of ``service_versions``)."""
        wanted = list(names)
        rows: list[ServiceRow] = []
        with self._session() as s:
            for start in range(0, len(wanted), 500):  # bound the IN list
                chunk = wanted[start : start + 500]
                rows += s.scalars(select(ServiceRow).where(ServiceRow.name.in_(chunk)))
        return rows

    def set_service_spec(self, name: str, spec: dict[str, Any]) -> None:
        """Replace a service's spec (its replicas then roll over to it)."""
        with self._session() as s:
            s.execute(
                update(ServiceRow)
                .where(ServiceRow.name == name)
                .values(spec=spec, updated_at=utcnow())
            )

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
        """Tokens summed per tenant and model."""
        query = (
            select(
                TenantRow.name,
                UsageRow.model,
                func.coalesce(func.sum(UsageRow.entries), 0),
                func.coalesce(func.sum(UsageRow.prompt_tokens), 0),
                func.coalesce(func.sum(UsageRow.completion_tokens), 0),
            )
            .join(TenantRow, TenantRow.id == UsageRow.tenant_id)
            .where(UsageRow.kind == "tokens")
            .group_by(TenantRow.name, UsageRow.model)
            .order_by(TenantRow.name, UsageRow.model)
        )
        if since is not None:
            query = query.where(UsageRow.created_at >= since)
        with self._session() as s:
            return [UsageTotal(*row) for row in s.execute(query).all()]

    def usage_report(
        self, tenant_id: int | None, since: datetime | None, by: str
    ) -> list[dict[str, Any]]:
        """The ledger summed per tenant and ``by`` (model, key, day or kind), every quantity."""
        dimension = {
            "model": UsageRow.model,
            "key": func.coalesce(UsageRow.api_key_id, 0),
            "day": func.date(UsageRow.created_at),
            "kind": UsageRow.kind,
        }[by]
        sums = [
            func.coalesce(func.sum(column), 0).label(column.key)
            for column in (
                UsageRow.prompt_tokens,
                UsageRow.completion_tokens,
                UsageRow.calls,
                UsageRow.seconds,
                UsageRow.bytes_in,
                UsageRow.bytes_out,
                UsageRow.node_hours,
                UsageRow.gpu_hours,
            )
        ]
        conditions = []
        if tenant_id is not None:
            conditions.append(UsageRow.tenant_id == tenant_id)
        if since is not None:
            conditions.append(UsageRow.created_at >= since)
        query: Any = (
            select(
                TenantRow.name.label("tenant"),
                dimension.label(by),
                func.coalesce(func.sum(UsageRow.entries), 0).label("entries"),
                *sums,
            )
            .join(TenantRow, TenantRow.id == UsageRow.tenant_id)
            .where(*conditions)
            .group_by(TenantRow.name, dimension)
            .order_by(TenantRow.name, dimension)
        )
        with self._session() as s:
            return [dict(row._mapping) for row in s.execute(query).all()]

    def usage_sum(self, tenant_id: int, since: datetime, column: str) -> float:
        """One quantity of the ledger summed for a tenant since a time."""
        with self._session() as s:
            total = s.scalar(
                select(func.coalesce(func.sum(getattr(UsageRow, column)), 0)).where(
                    UsageRow.tenant_id == tenant_id, UsageRow.created_at >= since
                )
            )
            return float(total or 0)

    def usage_buckets(
        self, since: datetime, bucket_s: int, tenant_id: int | None = None
    ) -> list[UsageBucket]:
        """Usage since ``since`` summed per ``bucket_s``-second bucket, tenant and model.

        Summed in the database, so an hour of busy traffic is a few hundred rows.
        """
        if self.engine.dialect.name == "sqlite":
            epoch = func.cast(func.strftime("%s", UsageRow.created_at), Integer)
            bucket = (epoch // bucket_s) * bucket_s
        else:
            bucket = func.floor(func.extract("epoch", UsageRow.created_at) / bucket_s) * bucket_s
        start = bucket.label("start")
        query = (
            select(
                start,
                TenantRow.name,
                UsageRow.model,
                func.coalesce(func.sum(UsageRow.entries), 0),
                func.coalesce(func.sum(UsageRow.prompt_tokens), 0),
                func.coalesce(func.sum(UsageRow.completion_tokens), 0),
            )
            .join(TenantRow, TenantRow.id == UsageRow.tenant_id)
            .where(UsageRow.created_at >= since, UsageRow.kind == "tokens")
            .group_by(start, TenantRow.name, UsageRow.model)
            .order_by(start, TenantRow.name, UsageRow.model)
        )
        if tenant_id is not None:
            query = query.where(UsageRow.tenant_id == tenant_id)
        with self._session() as s:
            return [
                UsageBucket(int(row[0]), *row[1:3], *(int(v) for v in row[3:]))
                for row in s.execute(query).all()
            ]

    # batch jobs

    def add_job(self, **fields: Any) -> None:
        """Insert a job row."""
        with self._session() as s:
            s.add(JobRow(**fields))

    def update_job(self, job_id: str, from_state: str | None = None, **fields: Any) -> bool:
        """Change some fields of a job (only if it is still in ``from_state``, when given)."""
        condition = JobRow.id == job_id
        if from_state is not None:
            condition = condition & (JobRow.state == from_state)
        with self._session() as s:
            result = s.execute(
                update(JobRow).where(condition).values(updated_at=utcnow(), **fields)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

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

    # named functions and their calls

    def add_function(self, **fields: Any) -> None:
        """Insert a named function."""
        with self._session() as s:
            s.add(FunctionRow(**fields))

    def function(self, name: str) -> FunctionRow | None:
        """One named function by name."""
        with self._session() as s:
            return s.get(FunctionRow, name)

    def functions(self) -> list[FunctionRow]:
        """Every named function, by name."""
        with self._session() as s:
            return list(s.scalars(select(FunctionRow).order_by(FunctionRow.name)))

    def update_function(self, name: str, **fields: Any) -> None:
        """Change a named function's fields (its sharing)."""
        with self._session() as s:
            s.execute(update(FunctionRow).where(FunctionRow.name == name).values(**fields))

    def remove_function(self, name: str) -> bool:
        """Delete a named function; False if there was none."""
        with self._session() as s:
            result = s.execute(delete(FunctionRow).where(FunctionRow.name == name))
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def add_call(self, **fields: Any) -> None:
        """Insert a function call."""
        with self._session() as s:
            s.add(FunctionCallRow(**fields))

    def update_call(self, call_id: str, **fields: Any) -> None:
        """Record a call's outcome."""
        with self._session() as s:
            s.execute(update(FunctionCallRow).where(FunctionCallRow.id == call_id).values(**fields))

    def call(self, call_id: str) -> FunctionCallRow | None:
        """One function call by id."""
        with self._session() as s:
            return s.get(FunctionCallRow, call_id)

    def calls(
        self, function: str = "", limit: int = 50, tenant_id: int | None = None
    ) -> list[FunctionCallRow]:
        """The newest calls, newest first, optionally of one function or tenant."""
        query = select(FunctionCallRow).order_by(FunctionCallRow.submitted_at.desc()).limit(limit)
        if function:
            query = query.where(FunctionCallRow.function == function)
        if tenant_id is not None:
            query = query.where(FunctionCallRow.tenant_id == tenant_id)
        with self._session() as s:
            return list(s.scalars(query))


def _limit_set(row: LimitRow | None) -> LimitSet | None:
    if row is None:
        return None
    return LimitSet(**{name: getattr(row, name) for name in (*LIMIT_FIELDS, "period")})


def _aware(moment: datetime | None) -> datetime | None:
    """SQLite hands datetimes back without their zone; they were stored in UTC."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


def _bucket_record(row: BucketRow, tenant: str) -> BucketRecord:
    return BucketRecord(
        row.name,
        row.tenant_id,
        tenant,
        dict(row.grants or {}),
        _aware(row.created_at) or row.created_at,
    )
