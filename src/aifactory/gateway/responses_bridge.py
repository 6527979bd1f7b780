"""The Responses API bridged to chat completions, for engines without it (llama.cpp).

A Responses request becomes a chat request (``chat_request``): ``input`` (a
string or message items, function calls and their outputs) after the
conversation of ``previous_response_id`` and ``instructions`` as the system
message; ``max_output_tokens``, ``tools`` and ``text.format`` in their chat
spelling. The chat answer becomes a response object (``response_object``),
and a chat stream the Responses API's events (``ResponseEvents``).
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from aifactory.errors import BadRequest
from aifactory.gateway.counts import check_count
from aifactory.gateway.responses_options import check_options, wants_logprobs

# Sampling fields both APIs spell alike.
_SAME_FIELDS = ("temperature", "top_p", "parallel_tool_calls", "user", "seed", "metadata")
_PART_TYPES = {"input_text": "text", "output_text": "text", "text": "text"}


def new_id(prefix: str) -> str:
    """An id as OpenAI's look: ``resp_…``, ``msg_…``, ``fc_…``."""
    return f"{prefix}_{secrets.token_hex(16)}"


def chat_request(
    payload: dict[str, Any], history: list[dict[str, Any]]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The chat request for a Responses request, and its conversation (without instructions).

    Args:
        payload: The Responses request.
        history: The conversation of ``previous_response_id`` (empty without one).

    Raises:
        BadRequest: ``input`` is missing or malformed, naming where.
    """
    check_options(payload)
    conversation = [*history, *_messages(payload.get("input"))]
    messages = list(conversation)
    instructions = payload.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.insert(0, {"role": "system", "content": instructions})
    chat: dict[str, Any] = {"model": payload.get("model"), "messages": messages}
    for name in _SAME_FIELDS:
        if payload.get(name) is not None:
            chat[name] = payload[name]
    if payload.get("max_output_tokens") is not None:
        check_count("max_output_tokens", payload["max_output_tokens"], 1, None)
        chat["max_tokens"] = payload["max_output_tokens"]
    tools = payload.get("tools")
    if isinstance(tools, list) and tools:
        chat["tools"] = [_chat_tool(tool, f"tools[{i}]") for i, tool in enumerate(tools)]
        if payload.get("tool_choice") is not None:
            chat["tool_choice"] = _chat_tool_choice(payload["tool_choice"])
    text = payload.get("text")
    if isinstance(text, dict) and isinstance(text.get("format"), dict):
        chat["response_format"] = _response_format(text["format"])
    if wants_logprobs(payload):
        chat["logprobs"] = True
        if payload.get("top_logprobs") is not None:
            chat["top_logprobs"] = payload["top_logprobs"]
    if payload.get("stream") is True:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat, conversation


def _messages(items: object) -> list[dict[str, Any]]:
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    if not isinstance(items, list) or not items:
        raise BadRequest("'input' must be a string or a non-empty array of items.", param="input")
    messages: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        where = f"input[{index}]"
        if not isinstance(item, dict):
            raise BadRequest(f"'{where}' must be an object.", param=where)
        kind = item.get("type", "message")
        if kind == "message":
            messages.append({"role": item.get("role"), "content": _content(item, where)})
        elif kind == "function_call":
            call = {
                "id": item.get("call_id"),
                "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments", "")},
            }
            if (
                messages
                and messages[-1].get("role") == "assistant"
                and messages[-1].get("tool_calls")
            ):
                messages[-1]["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": item.get("call_id"),
                    "content": output if isinstance(output, str) else json.dumps(output),
                }
            )
        else:
            raise BadRequest(f"'{where}.type' {kind!r} is not an input item type.", param=where)
    return messages


def _content(item: dict[str, Any], where: str) -> str | list[dict[str, Any]]:
    content = item.get("content")
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadRequest(
            f"'{where}.content' must be a string or an array.", param=f"{where}.content"
        )
    parts: list[dict[str, Any]] = []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in _PART_TYPES and isinstance(part, dict):
            parts.append({"type": "text", "text": part.get("text")})
        elif kind == "input_image" and isinstance(part, dict):
            parts.append({"type": "image_url", "image_url": {"url": part.get("image_url")}})
        else:
            at = f"{where}.content[{index}]"
            raise BadRequest(f"'{at}' is not a text or image part.", param=at)
    return parts


def _chat_tool(tool: object, where: str) -> dict[str, Any]:
    if not isinstance(tool, dict) or tool.get("type") != "function":
        raise BadRequest(f"'{where}' must be a function tool.", param=where)
    function = {k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool}
    return {"type": "function", "function": function}


def _chat_tool_choice(choice: object) -> object:
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    return choice


def _response_format(fmt: dict[str, Any]) -> dict[str, Any]:
    if fmt.get("type") == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        return {"type": "json_schema", "json_schema": schema}
    return {"type": fmt.get("type", "text")}


def response_object(
    response_id: str,
    payload: dict[str, Any],
    model: str,
    completion: dict[str, Any] | None,
    created_at: int | None = None,
) -> dict[str, Any]:
    """The response object for a chat completion (None: still in progress)."""
    output: list[dict[str, Any]] = []
    status = "in_progress"
    incomplete = None
    usage = None
    if completion is not None:
        choices = completion.get("choices") or [{}]
        message = choices[0].get("message") or {}
        status = "completed"
        if choices[0].get("finish_reason") == "length":
            status, incomplete = "incomplete", {"reason": "max_output_tokens"}
        output = output_items(message, logprobs=_logprobs(choices[0], payload))
        usage = _usage(completion.get("usage") or {})
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at or int(time.time()),
        "status": status,
        "model": model,
        "output": output,
        "usage": usage,
        "error": None,
        "incomplete_details": incomplete,
        "instructions": payload.get("instructions"),
        "previous_response_id": payload.get("previous_response_id"),
        "store": payload.get("store", True) is not False,
        "max_output_tokens": payload.get("max_output_tokens"),
        "temperature": payload.get("temperature"),
        "top_p": payload.get("top_p"),
        "parallel_tool_calls": payload.get("parallel_tool_calls", True),
        "tool_choice": payload.get("tool_choice", "auto"),
        "tools": payload.get("tools") or [],
        "text": payload.get("text") or {"format": {"type": "text"}},
        "truncation": payload.get("truncation") or "disabled",
        "background": False,
        "top_logprobs": payload.get("top_logprobs"),
        "metadata": payload.get("metadata") or {},
    }


def output_items(
    message: dict[str, Any],
    message_id: str | None = None,
    logprobs: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """The output items of an assistant chat message: its text, then its tool calls.

    ``logprobs`` (asked with ``include``) go on the text part; None leaves them out.
    """
    items: list[dict[str, Any]] = []
    text = message.get("content")
    if isinstance(text, str) and text:
        part: dict[str, Any] = {"type": "output_text", "text": text, "annotations": []}
        if logprobs is not None:
            part["logprobs"] = logprobs
        items.append(
            {
                "type": "message",
                "id": message_id or new_id("msg"),
                "status": "completed",
                "role": "assistant",
                "content": [part],
            }
        )
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        items.append(
            {
                "type": "function_call",
                "id": new_id("fc"),
                "call_id": call.get("id") or new_id("call"),
                "name": function.get("name", ""),
                "arguments": function.get("arguments", ""),
                "status": "completed",
            }
        )
    return items


def _logprobs(choice: dict[str, Any], payload: dict[str, Any]) -> list[dict[str, Any]] | None:
    if not wants_logprobs(payload):
        return None
    return token_logprobs(choice.get("logprobs"))


def token_logprobs(chat_logprobs: object) -> list[dict[str, Any]]:
    """A chat choice's ``logprobs`` as the Responses API spells them on output text."""
    content = chat_logprobs.get("content") if isinstance(chat_logprobs, dict) else None
    return [
        {
            "token": token.get("token", ""),
            "logprob": token.get("logprob", 0.0),
            "bytes": token.get("bytes") or [],
            "top_logprobs": [
                {k: top.get(k) for k in ("token", "logprob", "bytes")}
                for top in token.get("top_logprobs") or ()
            ],
        }
        for token in content or ()
        if isinstance(token, dict)
    ]


def assistant_message(completion: dict[str, Any]) -> dict[str, Any]:
    """The answer of a chat completion as the next turn of its conversation."""
    choices = completion.get("choices") or [{}]
    message = choices[0].get("message") or {}
    turn: dict[str, Any] = {"role": "assistant", "content": message.get("content")}
    if message.get("tool_calls"):
        turn["tool_calls"] = [
            {k: v for k, v in call.items() if k in ("id", "type", "function")}
            for call in message["tool_calls"]
        ]
    return turn


def _usage(usage: dict[str, Any]) -> dict[str, Any]:
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": int(cached)},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }
