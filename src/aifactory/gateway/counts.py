"""The counts a request asks for (``n``, ``max_tokens``), within OpenAI's ranges.

llama.cpp takes ``max_tokens: -1`` (no limit) and ``n: 0``; OpenAI answers 400.
A few dictionary lookups: requests that set none of them pay nothing more.
"""

from __future__ import annotations

from typing import Any

from aifactory.errors import BadRequest

MAX_N = 128

# The smallest value each count takes, by endpoint (a completion may echo its prompt only).
_MINIMA = {
    "chat": (("max_tokens", 1), ("max_completion_tokens", 1)),
    "completions": (("max_tokens", 0),),
}


def check_counts(endpoint: str, payload: dict[str, Any]) -> None:
    """Refuse ``n`` or a token maximum outside OpenAI's range.

    Raises:
        BadRequest: naming the parameter.
    """
    n = payload.get("n")
    if n is not None:
        check_count("n", n, 1, MAX_N)
    for name, least in _MINIMA.get(endpoint, ()):
        value = payload.get(name)
        if value is not None:
            check_count(name, value, least, None)


def check_count(name: str, value: object, least: int, most: int | None) -> None:
    """Refuse ``value`` unless it is an integer from ``least`` to ``most`` (None: no bound).

    Raises:
        BadRequest: naming ``name``.
    """
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRequest(
            f"Invalid type for '{name}': expected an integer, but got {type(value).__name__}.",
            param=name,
        )
    if value < least or (most is not None and value > most):
        bound = f"at least {least}" if most is None else f"between {least} and {most}"
        raise BadRequest(f"Invalid '{name}': integer must be {bound}, but got {value}.", param=name)
