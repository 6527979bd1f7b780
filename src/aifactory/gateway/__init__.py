"""The OpenAI-compatible gateway: auth, routing, streaming proxy, metering."""

from aifactory.gateway.app import GatewayApp
from aifactory.gateway.fold import StreamFold
from aifactory.gateway.responses import error_body
from aifactory.gateway.router import Router
from aifactory.gateway.usage import Usage

__all__ = ["GatewayApp", "Router", "StreamFold", "Usage", "error_body"]
