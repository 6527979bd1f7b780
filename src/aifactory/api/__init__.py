"""The admin API: services, replicas, keys, usage, functions, and replica registration."""

from aifactory.api.functions import FunctionsAPI
from aifactory.api.jobs import JobsAPI
from aifactory.api.routes import AdminAPI
from aifactory.api.tenants import TenantsAPI

__all__ = ["AdminAPI", "FunctionsAPI", "JobsAPI", "TenantsAPI"]
