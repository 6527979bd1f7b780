"""Request body limits per group of routes, enforced while the body streams in.

``BodyLimit`` wraps an ASGI app's ``receive``: a ``Content-Length`` over the
limit is refused at the first ``receive()`` before any byte is read, and a
chunked body as soon as the bytes received pass it. The refusal is an
exception raised inside the app's own request, so each API's error handler
writes it (413, in that API's format).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aifactory.errors import PayloadTooLarge

__all__ = ["BodyLimit", "BodyRule"]


@dataclass(frozen=True)
class BodyRule:
    """The largest body the routes under ``prefix`` take.

    Args:
        prefix: Path prefix the rule applies to; the first matching rule wins.
        max_bytes: The limit, or None where the route enforces its own (uploads).
        routes: What the routes are, for the error ("admin routes").
        setting: The ``AIFACTORY_*`` setting that raises the limit, for the error.
        methods: The methods the rule applies to; empty for every method.
    """

    prefix: str
    max_bytes: int | None
    routes: str = "this route"
    setting: str = ""
    methods: frozenset[str] = frozenset()

    def applies_to(self, method: str, path: str) -> bool:
        """Whether a request with this method and path falls under the rule."""
        return path.startswith(self.prefix) and (not self.methods or method in self.methods)


class BodyLimit:
    """ASGI middleware that refuses request bodies over their route's limit.

    Args:
        app: The app whose requests are limited.
        rules: Checked in order; a request no rule covers is not limited.
    """

    def __init__(self, app: ASGIApp, rules: Sequence[BodyRule]) -> None:
        self._app = app
        self._rules = tuple(rules)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one scope, its ``receive`` limited when a rule covers it."""
        rule = self._rule(scope) if scope["type"] == "http" else None
        if rule is None or rule.max_bytes is None:
            await self._app(scope, receive, send)
        else:
            await self._app(scope, _limited(receive, _declared_length(scope), rule), send)

    def _rule(self, scope: Scope) -> BodyRule | None:
        method, path = scope["method"], scope["path"]
        return next((rule for rule in self._rules if rule.applies_to(method, path)), None)


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit():
            return int(value)
    return None


def _limited(receive: Receive, declared: int | None, rule: BodyRule) -> Receive:
    assert rule.max_bytes is not None
    limit = rule.max_bytes
    received = 0

    async def receive_within_limit() -> Message:
        nonlocal received
        if declared is not None and declared > limit:
            raise _too_large(rule)
        message = await receive()
        received += len(message.get("body", b""))
        if received > limit:
            raise _too_large(rule)
        return message

    return receive_within_limit


def _too_large(rule: BodyRule) -> PayloadTooLarge:
    fix = f"send less, or raise {rule.setting}" if rule.setting else "send less"
    return PayloadTooLarge(
        f"The request body is larger than {rule.max_bytes} bytes, the most {rule.routes} take.",
        fix=fix,
    )
