"""The state store: SQLAlchemy tables and queries (SQLite default, PostgreSQL supported)."""

from aifactory.store.database import BucketRecord, KeyRecord, Store, UsageTotal
from aifactory.store.tables import JobRow, ReplicaRow, ServiceRow, utcnow

__all__ = [
    "BucketRecord",
    "JobRow",
    "KeyRecord",
    "ReplicaRow",
    "ServiceRow",
    "Store",
    "UsageTotal",
    "utcnow",
]
