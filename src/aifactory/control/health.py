"""Health checks: one HTTP GET against a replica's health path."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp


@dataclass(frozen=True)
class Probe:
    """The outcome of one health check.

    ``answered`` means the engine is listening (any HTTP status); ``ok``
    means it answered 200 (llama.cpp answers 503 while loading its model).
    """

    answered: bool
    ok: bool
    detail: str


async def probe(session: aiohttp.ClientSession, url: str, timeout_s: float) -> Probe:
    """GET ``url`` and say what came back."""
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
            ok = response.status == 200
            return Probe(True, ok, "" if ok else f"health check answered {response.status}")
    except (TimeoutError, aiohttp.ClientError) as exc:
        return Probe(False, False, f"health check failed: {type(exc).__name__} {exc}".strip())
