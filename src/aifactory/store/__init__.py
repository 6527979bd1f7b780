"""The state store: SQLAlchemy tables and queries (SQLite default, PostgreSQL supported)."""

from aifactory.store.database import KeyRecord, Store, UsageTotal
from aifactory.store.tables import ReplicaRow, ServiceRow, utcnow

__all__ = ["KeyRecord", "ReplicaRow", "ServiceRow", "Store", "UsageTotal", "utcnow"]
