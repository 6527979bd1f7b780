"""The admin API: services, replicas, keys, usage, functions, the data catalog, registration."""

from aifactory.api.access import Access
from aifactory.api.batches import BatchesAPI
from aifactory.api.catalog import CatalogAPI
from aifactory.api.functions import FunctionsAPI
from aifactory.api.jobs import JobsAPI
from aifactory.api.routes import AdminAPI
from aifactory.api.tenants import TenantsAPI
from aifactory.api.visibility import ServiceVisibility

__all__ = [
    "Access",
    "AdminAPI",
    "BatchesAPI",
    "CatalogAPI",
    "FunctionsAPI",
    "JobsAPI",
    "ServiceVisibility",
    "TenantsAPI",
]
