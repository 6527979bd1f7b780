"""The one gate of every API route: the caller's key, then what its role allows."""

from __future__ import annotations

from typing import Protocol

from starlette.requests import Request

from aifactory.tenancy import Action, Principal

__all__ = ["Access", "Authenticator"]


class Authenticator(Protocol):
    """Maps an ``Authorization`` header to a principal (``KeyAuthenticator`` does)."""

    async def authenticate_header(self, authorization: str) -> Principal:
        """The header's principal; raises Unauthorized without a valid key."""
        ...


class Access:
    """Authenticates a request's key and checks its role against the action asked.

    Args:
        authenticator: Maps keys to principals.
    """

    def __init__(self, authenticator: Authenticator) -> None:
        self._auth = authenticator

    async def caller(self, request: Request) -> Principal:
        """The caller's principal; raises Unauthorized without a valid key."""
        return await self._auth.authenticate_header(request.headers.get("authorization", ""))

    async def allowed(self, request: Request, action: Action) -> Principal:
        """The caller's principal; raises Unauthorized or Forbidden unless it may ``action``."""
        principal = await self.caller(request)
        principal.require(action)
        return principal
