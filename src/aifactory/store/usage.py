"""The usage ledger: rows in, sums out."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, func, insert, select

from aifactory.store.queries import Queries
from aifactory.store.tables import TenantRow, UsageRow


@dataclass(frozen=True)
class UsageTotal:
    """Summed usage of one tenant and model."""

    tenant: str
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class UsageBucket:
    """Usage of one tenant and model within one time bucket (``start`` in Unix seconds)."""

    start: int
    tenant: str
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int


class UsageQueries(Queries):
    """The ledger's rows and sums."""

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
            "day": self._utc_day(UsageRow.created_at),
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

    def _utc_day(self, moment: Any) -> Any:
        """The UTC day of ``moment`` as ``YYYY-MM-DD`` text, on either database."""
        if self.engine.dialect.name == "sqlite":
            return func.date(moment)  # the stored text is UTC already
        # PostgreSQL would take the day in its session's zone, and hand back a date.
        return func.to_char(func.timezone("UTC", moment), "YYYY-MM-DD")

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
