"""The web dashboard: a single page at ``/`` and the data it polls and sends."""

from aifactory.web.buckets import ObjectBrowser
from aifactory.web.data import DashboardData
from aifactory.web.pages import page_routes
from aifactory.web.samples import MetricsSampler

__all__ = ["DashboardData", "MetricsSampler", "ObjectBrowser", "page_routes"]
