"""The shape of a chat request, checked as OpenAI checks it, before an engine parses it.

An engine handed a malformed chat answers 500 (llama.cpp: "Failed to parse
messages", "image input is not supported"): the client's mistake looked
like a server fault. The gateway answers OpenAI's 400 instead, naming the
parameter. Only the structure is checked; values stay the engine's business.
"""

from __future__ import annotations

from typing import Any

from aifactory.errors import BadRequest

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
MEDIA_PARTS = frozenset({"image_url", "input_audio", "file", "video_url"})


def check_chat(payload: dict[str, Any], text_only: bool) -> None:
    """Refuse a chat request OpenAI would refuse for its shape.

    Args:
        payload: The request body.
        text_only: The model's engine takes text only (no images, audio or files).

    Raises:
        BadRequest: naming the first malformed parameter.
    """
    messages = payload.get("messages")
    if not isinstance(messages, list):
        raise BadRequest("'messages' must be an array of messages.", param="messages")
    if not messages:
        raise BadRequest("'messages' must hold at least one message.", param="messages")
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if (
            isinstance(role, str)
            and role in ROLES
            and isinstance(message.get("content"), str)
            and message.get("tool_calls") is None
        ):
            continue  # the common shape, passed without naming where it is
        _check_message(message, f"messages[{index}]", text_only)
    tools = payload.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise BadRequest("'tools' must be an array of tools.", param="tools")
        for index, tool in enumerate(tools):
            _check_tool(tool, f"tools[{index}]")


def _check_message(message: object, where: str, text_only: bool) -> None:
    if not isinstance(message, dict):
        raise BadRequest(f"'{where}' must be an object.", param=where)
    role = message.get("role")
    if not isinstance(role, str) or role not in ROLES:
        raise BadRequest(
            f"'{where}.role' must be one of {', '.join(sorted(ROLES))}.", param=f"{where}.role"
        )
    content = message.get("content")
    if isinstance(content, list):
        for index, part in enumerate(content):
            _check_part(part, f"{where}.content[{index}]", text_only)
    elif content is not None and not isinstance(content, str):
        raise BadRequest(
            f"'{where}.content' must be a string or an array of content parts.",
            param=f"{where}.content",
        )
    calls = message.get("tool_calls")
    if calls is not None:
        if not isinstance(calls, list):
            raise BadRequest(f"'{where}.tool_calls' must be an array.", param=f"{where}.tool_calls")
        for index, call in enumerate(calls):
            _check_function(call, f"{where}.tool_calls[{index}]")


def _check_part(part: object, where: str, text_only: bool) -> None:
    kind = part.get("type") if isinstance(part, dict) else None
    if not isinstance(part, dict) or not isinstance(kind, str):
        raise BadRequest(f"'{where}' must be an object with a 'type'.", param=where)
    if kind == "text":
        if not isinstance(part.get("text"), str):
            raise BadRequest(f"'{where}.text' must be a string.", param=f"{where}.text")
    elif kind in MEDIA_PARTS:
        if text_only:
            raise BadRequest(
                f"'{where}' is {kind}, but this model takes text only.", param=f"{where}.type"
            )
    elif kind != "refusal":
        raise BadRequest(f"'{where}.type' {kind!r} is not a content part type.", param=where)


def _check_tool(tool: object, where: str) -> None:
    if not isinstance(tool, dict) or tool.get("type", "function") != "function":
        raise BadRequest(f"'{where}' must be an object of type 'function'.", param=where)
    _check_function(tool, where)


def _check_function(holder: dict[str, Any] | object, where: str) -> None:
    function = holder.get("function") if isinstance(holder, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise BadRequest(
            f"'{where}.function' must be an object with a 'name'.", param=f"{where}.function"
        )
