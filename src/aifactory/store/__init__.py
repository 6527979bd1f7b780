"""The state store: SQLAlchemy tables and queries (SQLite default, PostgreSQL supported)."""

from aifactory.store.buckets import BucketRecord
from aifactory.store.catalog import CatalogEntryRecord, CatalogVersionRecord
from aifactory.store.counters import Grant
from aifactory.store.database import Store
from aifactory.store.lineage import LineageEdge, LineageRecord
from aifactory.store.responses import ResponseQueries
from aifactory.store.tables import (
    BatchFileRow,
    BatchRow,
    FunctionCallRow,
    FunctionRow,
    JobRow,
    ReplicaRow,
    ServiceRow,
    StoredResponseRow,
    TenantRow,
    utcnow,
)
from aifactory.store.tenants import LIMIT_FIELDS, QUOTA_FIELDS, KeyRecord, LimitSet, QuotaSet
from aifactory.store.usage import UsageBucket, UsageTotal

__all__ = [
    "LIMIT_FIELDS",
    "QUOTA_FIELDS",
    "BatchFileRow",
    "BatchRow",
    "BucketRecord",
    "CatalogEntryRecord",
    "CatalogVersionRecord",
    "FunctionCallRow",
    "FunctionRow",
    "Grant",
    "JobRow",
    "KeyRecord",
    "LimitSet",
    "LineageEdge",
    "LineageRecord",
    "QuotaSet",
    "ReplicaRow",
    "ResponseQueries",
    "ServiceRow",
    "Store",
    "StoredResponseRow",
    "TenantRow",
    "UsageBucket",
    "UsageTotal",
    "utcnow",
]
