"""A small synchronous client of the admin API, used by the CLI and the demo."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import httpx

from aifactory.config import Settings
from aifactory.errors import AIFactoryError


class ClientError(AIFactoryError):
    """Raised by ``AdminClient`` when the control plane refuses or is unreachable."""


class AdminClient:
    """Talks to ``/api`` of a running control plane with an admin key."""

    def __init__(self, settings: Settings, timeout_s: float = 30.0) -> None:
        self.url = settings.client_url
        self._key = settings.api_key or _read_key(settings.admin_key_file)
        self._http = httpx.Client(base_url=self.url, timeout=timeout_s, verify=settings.api_verify)

    @property
    def key(self) -> str:
        """The admin key in use."""
        return self._key

    def healthy(self) -> bool:
        """Whether a control plane answers at the URL."""
        try:
            return self._http.get("/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send a request; raise ClientError with the server's message on failure."""
        if not self._key:
            raise ClientError(
                "No admin key found.",
                fix="set AIFACTORY_API_KEY, or run this where `aifactory up` "
                "wrote DATA_DIR/admin.key",
            )
        headers = {"Authorization": f"Bearer {self._key}", **kwargs.pop("headers", {})}
        try:
            response = self._http.request(method, path, headers=headers, **kwargs)
        except httpx.ConnectError as exc:
            if _failed_verification(exc):
                raise ClientError(
                    f"The control plane at {self.url} failed TLS verification ({exc}).",
                    fix="set AIFACTORY_TLS_CA to the CA file that signed its certificate",
                ) from exc
            raise ClientError(
                f"No control plane answers at {self.url}.",
                fix="start one with `aifactory up` (or `aifactory up --background`)",
            ) from exc
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:500]
            raise ClientError(f"{response.status_code}: {message}")
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request and decode the JSON answer."""
        return self.request(method, path, **kwargs).json()


def _failed_verification(exc: BaseException) -> bool:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _read_key(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""
