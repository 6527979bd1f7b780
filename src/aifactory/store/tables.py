"""SQLAlchemy tables of the state store (SQLite by default, PostgreSQL supported)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    TypeDecorator,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A moment, written and read back as an aware datetime in UTC on every database.

    SQLite stores the wall time without an offset (whatever zone it came in)
    and hands it back naive; PostgreSQL hands it back in its session's zone.
    Converting to UTC on the way in keeps what SQLite stores as it always was
    (the UTC wall time), so older databases read the same.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """In UTC; a naive time is taken as UTC already (what the store always meant)."""
        return _in_utc(value)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Aware, in UTC (SQLite's naive wall time was stored in UTC)."""
        return _in_utc(value)


def _in_utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base of every table."""


class TenantRow(Base):
    """A tenant (project): the owner of keys, services and usage."""

    __tablename__ = "tenants"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    slurm_account: Mapped[str | None] = mapped_column(String(128), nullable=True)
    slurm_partition: Mapped[str | None] = mapped_column(String(128), nullable=True)
    slurm_qos: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # The POSIX user (and primary group) its workloads run as; None: the site's rule.
    unix_user: Mapped[str | None] = mapped_column(String(32), nullable=True)
    unix_group: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class ApiKeyRow(Base):
    """An API key, stored only as its SHA-256 hash."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    role: Mapped[str] = mapped_column(String(16), default="member")
    name: Mapped[str] = mapped_column(String(64), default="")
    # The services (and pools) and buckets a scoped key is limited to; null: all.
    services: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    buckets: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class S3AccessKeyRow(Base):
    """The S3 access key id of an API key; its secret is derived, never stored."""

    __tablename__ = "s3_access_keys"

    access_key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    api_key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id"), unique=True)


class BucketRow(Base):
    """An S3 bucket: its owning tenant and the tenants it is shared with."""

    __tablename__ = "buckets"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    grants: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class ServiceRow(Base):
    """A deployed Service: its validated spec as JSON."""

    __tablename__ = "services"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    spec: Mapped[dict[str, object]] = mapped_column(JSON)
    tenant_id: Mapped[int | None] = mapped_column(ForeignKey("tenants.id"), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class ReplicaRow(Base):
    """One replica (allocation) of a service and where it stands in its lifecycle."""

    __tablename__ = "replicas"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    service: Mapped[str] = mapped_column(String(64), index=True)
    backend: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), index=True)
    handle: Mapped[str] = mapped_column(String(128), default="")
    host: Mapped[str] = mapped_column(String(255), default="")
    port: Mapped[int] = mapped_column(Integer, default=0)
    token_hash: Mapped[str] = mapped_column(String(64), default="")
    # A lent replica's drain token, hashed: its launcher reports a preemption with it.
    drain_token_hash: Mapped[str] = mapped_column(String(64), default="", server_default="")
    # The fingerprint of the spec it started with: a changed spec rolls it over.
    spec_hash: Mapped[str] = mapped_column(String(16), default="", server_default="")
    # The Unix user it runs as (listing and cancelling act as it too).
    run_as: Mapped[str] = mapped_column(String(32), default="", server_default="")
    reason: Mapped[str] = mapped_column(Text, default="")
    log_path: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class UsageRow(Base):
    """One entry of the usage ledger, for one tenant (and key, when a key acted).

    ``kind`` says what was used: ``tokens`` (a gateway request to ``model``),
    ``function`` (calls of and seconds on a function pool, ``model`` = the
    function or pool), ``allocation`` (an ended replica or job: node- and
    GPU-hours, ``model`` = the service or job), ``objects`` (bytes stored and
    transferred, ``model`` = the bucket).
    """

    __tablename__ = "usage"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"), nullable=True)
    kind: Mapped[str] = mapped_column(String(16), default="tokens", index=True)
    model: Mapped[str] = mapped_column(String(128), index=True)
    endpoint: Mapped[str] = mapped_column(String(32))
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    calls: Mapped[int] = mapped_column(Integer, default=0)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    bytes_in: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_out: Mapped[int] = mapped_column(BigInteger, default=0)
    node_hours: Mapped[float] = mapped_column(Float, default=0.0)
    gpu_hours: Mapped[float] = mapped_column(Float, default=0.0)
    source: Mapped[str] = mapped_column(String(16), default="")
    # How many ledger entries this row sums (the ledger aggregates them per flush).
    entries: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # The activity charged, when the row charges one (a job's id); "" otherwise.
    activity: Mapped[str] = mapped_column(String(128), default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)


class JobRow(Base):
    """A batch job: its validated spec, its runner's handle and how it stands or ended.

    ``handle`` is what the job's runner returned on submit (Slurm's job id, a
    Kubernetes job set's name); the jobs API still calls it ``slurm_job_id``.
    ``tasks`` keeps the last state of each array task (or the one task), so a
    job is still described after its scheduler forgot it.
    """

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    spec: Mapped[dict[str, object]] = mapped_column(JSON)
    backend: Mapped[str] = mapped_column(String(16))
    handle: Mapped[str] = mapped_column(String(32), default="", index=True)
    state: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tasks: Mapped[list[dict[str, object]]] = mapped_column(JSON, default=list)
    log_dir: Mapped[str] = mapped_column(Text, default="")
    tenant_id: Mapped[int | None] = mapped_column(ForeignKey("tenants.id"), nullable=True)
    # The Unix user it runs as (listing and cancelling act as it too).
    run_as: Mapped[str] = mapped_column(String(32), default="", server_default="")
    submitted_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class FunctionRow(Base):
    """A named function: ``module:function`` run on a pool, callable over HTTP."""

    __tablename__ = "functions"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    target: Mapped[str] = mapped_column(String(256))
    pool: Mapped[str] = mapped_column(String(64))
    tenant_id: Mapped[int | None] = mapped_column(ForeignKey("tenants.id"), nullable=True)
    timeout_s: Mapped[float] = mapped_column(default=300.0)
    # Callable by other tenants too (JSON over HTTP); the pool's tenant always may.
    shared: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class FunctionCallRow(Base):
    """One HTTP invocation of a named function, its outcome and how long it took."""

    __tablename__ = "function_calls"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    function: Mapped[str] = mapped_column(String(64), index=True)
    tenant_id: Mapped[int | None] = mapped_column(ForeignKey("tenants.id"), nullable=True)
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"), nullable=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    result: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str] = mapped_column(Text, default="")
    submitted_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class LimitRow(Base):
    """Limits of a tenant (``api_key_id`` null) or of one of its keys; null means none.

    Budgets count per ``period`` (``day`` or ``month``, in UTC).
    """

    __tablename__ = "limits"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    api_key_id: Mapped[int | None] = mapped_column(
        ForeignKey("api_keys.id"), nullable=True, unique=True
    )
    requests_per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tokens_per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    concurrent_requests: Mapped[int | None] = mapped_column(Integer, nullable=True)
    token_budget: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    node_hour_budget: Mapped[float | None] = mapped_column(Float, nullable=True)
    gpu_hour_budget: Mapped[float | None] = mapped_column(Float, nullable=True)
    period: Mapped[str] = mapped_column(String(8), default="month")
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class QuotaRow(Base):
    """What a tenant may hold at once, set by the site; null means no quota.

    Replicas, CPUs, GPUs and memory count every service's, agent's and
    pool's most (``replicas.max`` times its resources); buckets and bytes,
    what its buckets hold.
    """

    __tablename__ = "quotas"

    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    replicas: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cpus: Mapped[int | None] = mapped_column(Integer, nullable=True)
    gpus: Mapped[int | None] = mapped_column(Integer, nullable=True)
    memory_gib: Mapped[float | None] = mapped_column(Float, nullable=True)
    concurrent_jobs: Mapped[int | None] = mapped_column(Integer, nullable=True)
    buckets: Mapped[int | None] = mapped_column(Integer, nullable=True)
    bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class CounterRow(Base):
    """A shared counter: a token bucket's level, a budget's spend, requests in flight.

    Gateways that share the database change counters with single conditional
    UPDATE statements, so two processes never spend the same token twice.
    """

    __tablename__ = "counters"

    name: Mapped[str] = mapped_column(String(160), primary_key=True)
    value: Mapped[float] = mapped_column(Float, default=0.0)
    stamp: Mapped[float] = mapped_column(Float, default=0.0)


class AuditRow(Base):
    """An admin action: who (key and tenant), what, on what, when."""

    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    actor_key_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    actor_tenant: Mapped[str] = mapped_column(String(64), default="")
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(String(256), default="")
    detail: Mapped[dict[str, object]] = mapped_column(JSON, default=dict)


class BatchFileRow(Base):
    """A file of the Files API (``purpose`` batch or batch_output), kept in a tenant's bucket.

    The bytes are the object ``key`` of ``bucket`` (the tenant's batch
    bucket), so S3 clients and jobs on POSIX reach the same file.
    """

    __tablename__ = "batch_files"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    lines: Mapped[int] = mapped_column(Integer, default=0)
    bucket: Mapped[str] = mapped_column(String(63))
    key: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)


class BatchRow(Base):
    """A batch of the Batches API: its input, how far it got, and the shards that run it.

    ``shards`` holds one entry per shard (its runner's handle, state,
    attempts and lines done), ``times`` the Unix second each OpenAI status
    was reached (``in_progress_at``, ``completed_at``, …).
    """

    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"), nullable=True)
    endpoint: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(128))
    service: Mapped[str] = mapped_column(String(64))
    backend: Mapped[str] = mapped_column(String(16))
    input_file_id: Mapped[str] = mapped_column(String(40))
    output_file_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    error_file_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    completion_window: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), index=True)
    metadata_: Mapped[dict[str, str]] = mapped_column("metadata", JSON, default=dict)
    errors: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    request_counts: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    shards: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    times: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    usage: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class StoredResponseRow(Base):
    """A response of the Responses API kept for retrieval and chaining (``store: true``).

    ``document`` is the response object as the client got it; ``conversation``
    the chat messages that led to it and its answer, so that a response naming
    it as ``previous_response_id`` goes on from there.
    """

    __tablename__ = "stored_responses"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    conversation: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    # The request's own input, as items with ids (``GET /v1/responses/{id}/input_items``).
    input_items: Mapped[list[dict[str, Any]]] = mapped_column(
        JSON, default=list, server_default="[]"
    )
    # Indexed: the retention sweep deletes by age.
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
