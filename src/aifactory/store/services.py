"""Services (specs and status) and their replicas."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from aifactory.store.queries import Queries
from aifactory.store.tables import ReplicaRow, ServiceRow, utcnow


class ServiceQueries(Queries):
    """Services and replicas."""

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
