"""The state store: SQLAlchemy tables and queries (SQLite default, PostgreSQL supported)."""

from aifactory.store.database import KeyRecord, Store, UsageBucket, UsageTotal
from aifactory.store.tables import (
    FunctionCallRow,
    FunctionRow,
    JobRow,
    ReplicaRow,
    ServiceRow,
    utcnow,
)

__all__ = [
    "FunctionCallRow",
    "FunctionRow",
    "JobRow",
    "KeyRecord",
    "ReplicaRow",
    "ServiceRow",
    "Store",
    "UsageBucket",
    "UsageTotal",
    "utcnow",
]
