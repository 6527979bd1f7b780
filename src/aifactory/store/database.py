"""The state store: plain synchronous queries, called from async code via threads.

SQLite (the default, in WAL mode) and PostgreSQL share the same code through
SQLAlchemy. Callers on the event loop use ``asyncio.to_thread``. The queries
live in one module per domain (``tenants``, ``buckets``, ``services``,
``usage``, ``jobs``, ``functions``); ``Store`` joins them over one engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine.url import make_url
from sqlalchemy.orm import sessionmaker

from aifactory.store.batches import BatchQueries
from aifactory.store.buckets import BucketQueries
from aifactory.store.catalog import CatalogQueries
from aifactory.store.counters import Counters
from aifactory.store.functions import FunctionQueries
from aifactory.store.jobs import JobQueries
from aifactory.store.lineage import LineageQueries
from aifactory.store.migrate import upgrade
from aifactory.store.responses import ResponseQueries
from aifactory.store.services import ServiceQueries
from aifactory.store.tenants import TenantQueries
from aifactory.store.usage import UsageQueries


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


class Store(
    TenantQueries,
    BucketQueries,
    ServiceQueries,
    UsageQueries,
    JobQueries,
    FunctionQueries,
    BatchQueries,
    CatalogQueries,
    LineageQueries,
    ResponseQueries,
):
    """All queries of the control plane's state."""

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite":
            if parsed.database:
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            self.engine = create_engine(url, connect_args={"check_same_thread": False})
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
