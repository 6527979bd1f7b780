"""Where a pool's broker listens, asked of the control plane over HTTP."""

from __future__ import annotations

from pathlib import Path

import httpx

from aifactory.config import Settings
from aifactory.errors import BrokerUnavailable, NotFound, Unauthorized

__all__ = ["default_api_key", "locate_broker"]


def default_api_key() -> str:
    """``AIFACTORY_API_KEY``, else the admin key file on the control plane's host, else ""."""
    settings = Settings()
    return settings.api_key or _read(settings.admin_key_file)


def locate_broker(pool: str, api_key: str) -> tuple[str, str | None]:
    """The client address and Curve public key of the broker that serves ``pool``.

    Asks the control plane at ``AIFACTORY_API_URL`` (default: the local one).

    Raises:
        Unauthorized: no key, or the control plane refused it.
        NotFound: the control plane has no such pool.
        BrokerUnavailable: no control plane answers.
    """
    settings = Settings()
    if not api_key:
        raise Unauthorized(
            "no API key to find the functions broker with.",
            fix="pass api_key= or set AIFACTORY_API_KEY",
        )
    url = f"{settings.client_url}/v1/functions/pools/{pool}"
    try:
        response = httpx.get(
            url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=10,
            verify=settings.api_verify,
        )
    except httpx.HTTPError as exc:
        raise BrokerUnavailable(settings.client_url, 10) from exc
    if response.status_code == 401:
        raise Unauthorized("the control plane refused the API key.", fix="check AIFACTORY_API_KEY")
    if response.status_code == 404:
        raise NotFound(
            f"the control plane at {settings.client_url} has no function pool {pool!r}.",
            fix="deploy one with `aifactory deploy POOL.yaml` (kind: FunctionPool)",
        )
    response.raise_for_status()
    status = response.json()
    key = status.get("broker_key")
    return str(status["broker"]), str(key) if key else None


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""
