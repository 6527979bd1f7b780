"""The state store: SQLAlchemy tables and queries (SQLite default, PostgreSQL supported)."""

from aifactory.store.counters import Grant
from aifactory.store.database import (
    LIMIT_FIELDS,
    BucketRecord,
    KeyRecord,
    LimitSet,
    Store,
    UsageBucket,
    UsageTotal,
)
from aifactory.store.tables import (
    FunctionCallRow,
    FunctionRow,
    JobRow,
    ReplicaRow,
    ServiceRow,
    TenantRow,
    utcnow,
)

__all__ = [
    "LIMIT_FIELDS",
    "BucketRecord",
    "FunctionCallRow",
    "FunctionRow",
    "Grant",
    "JobRow",
    "KeyRecord",
    "LimitSet",
    "ReplicaRow",
    "ServiceRow",
    "Store",
    "TenantRow",
    "UsageBucket",
    "UsageTotal",
    "utcnow",
]
