"""The OpenAI-compatible gateway: auth, routing, streaming proxy, metering."""

from aifactory.gateway.app import ENGINE_PATHS, GatewayApp
from aifactory.gateway.bounds import check_bounds
from aifactory.gateway.chat_shape import check_chat
from aifactory.gateway.counts import check_counts
from aifactory.gateway.fold import StreamFold
from aifactory.gateway.responses import error_body
from aifactory.gateway.router import Router
from aifactory.gateway.usage import Usage

__all__ = [
    "ENGINE_PATHS",
    "GatewayApp",
    "Router",
    "StreamFold",
    "Usage",
    "check_bounds",
    "check_chat",
    "check_counts",
    "error_body",
]
