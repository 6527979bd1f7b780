"""The admin API: services, replicas, keys, usage, and replica registration."""

from aifactory.api.jobs import JobsAPI
from aifactory.api.routes import AdminAPI

__all__ = ["AdminAPI", "JobsAPI"]
