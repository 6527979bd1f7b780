"""The admin API: services, replicas, keys, usage, functions, and replica registration."""

from aifactory.api.access import Access
from aifactory.api.batches import BatchesAPI
from aifactory.api.functions import FunctionsAPI
from aifactory.api.jobs import JobsAPI
from aifactory.api.routes import AdminAPI
from aifactory.api.tenants import TenantsAPI
from aifactory.api.visibility import ServiceVisibility

__all__ = [
    "Access",
    "AdminAPI",
    "BatchesAPI",
    "FunctionsAPI",
    "JobsAPI",
    "ServiceVisibility",
    "TenantsAPI",
]
