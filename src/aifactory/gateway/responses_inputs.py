"""A Responses request's input as the items ``GET /v1/responses/{id}/input_items`` lists.

Each item gets an id and OpenAI's spelling (a string input is one user message with an
``input_text`` part); the list is kept with the stored response and paged like OpenAI's
lists (``limit``, ``order``, ``after``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from aifactory.errors import BadRequest
from aifactory.gateway.responses_bridge import new_id

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
_ID_PREFIXES = {"message": "msg", "function_call": "fc", "function_call_output": "fco"}


def input_items(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The request's ``input`` as listed items (already checked by ``chat_request``)."""
    given = payload.get("input")
    if isinstance(given, str):
        given = [{"type": "message", "role": "user", "content": given}]
    items: list[dict[str, Any]] = []
    for item in given if isinstance(given, list) else ():
        kind = item.get("type", "message")
        listed = {**item, "type": kind, "id": item.get("id") or new_id(_ID_PREFIXES[kind])}
        if kind == "message":
            listed["content"] = _parts(item.get("role"), item.get("content"))
            listed.setdefault("status", "completed")
        items.append(listed)
    return items


def _parts(role: object, content: object) -> object:
    if not isinstance(content, str):
        return content
    kind = "output_text" if role == "assistant" else "input_text"
    return [{"type": kind, "text": content}]


def input_items_page(items: list[dict[str, Any]], query: bytes) -> dict[str, Any]:
    """One page of ``items`` as ``query`` asks (newest first unless ``order=asc``).

    Raises:
        BadRequest: ``limit`` or ``order`` out of range, naming it.
    """
    asked = {k: v[-1] for k, v in parse_qs(query.decode("latin-1")).items()}
    order = asked.get("order", "desc")
    if order not in ("asc", "desc"):
        raise BadRequest("Invalid 'order': expected 'asc' or 'desc'.", param="order")
    limit_text = asked.get("limit", str(DEFAULT_LIMIT))
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_LIMIT:
        raise BadRequest(
            f"Invalid 'limit': expected an integer from 1 to {MAX_LIMIT}.", param="limit"
        )
    ordered = items if order == "asc" else items[::-1]
    after = asked.get("after")
    if after is not None:
        ids = [item.get("id") for item in ordered]
        ordered = ordered[ids.index(after) + 1 :] if after in ids else []
    page = ordered[: int(limit_text)]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(ordered) > len(page),
    }
