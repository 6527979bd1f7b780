"""The OpenAI-compatible gateway: auth, routing, streaming proxy, metering."""

from aifactory.gateway.app import GatewayApp
from aifactory.gateway.responses import error_body
from aifactory.gateway.router import Router

__all__ = ["GatewayApp", "Router", "error_body"]
