"""The Responses API's options beyond translation: ``background``, ``include``, ``truncation``.

``background`` is refused (no detached runs here); ``include`` takes OpenAI's values and
acts on the one that applies to a chat model (``message.output_text.logprobs``);
``truncation: auto`` drops the oldest turns of a conversation that cannot fit the model's
context, by an estimate of its tokens, where ``disabled`` (the default) lets the engine
refuse it.
"""

from __future__ import annotations

import json
from typing import Any

from aifactory.errors import BadRequest

LOGPROBS = "message.output_text.logprobs"
INCLUDABLE = frozenset(
    {
        LOGPROBS,
        "reasoning.encrypted_content",
        "message.input_image.image_url",
        "computer_call_output.output.image_url",
        "file_search_call.results",
        "code_interpreter_call.outputs",
        "web_search_call.action.sources",
        "web_search_call.results",
    }
)
TRUNCATIONS = ("auto", "disabled")
# The gateway does not tokenize: English runs ~4 characters a token, so 2 leaves room
# for markup, other scripts and the chat template.
CHARS_PER_TOKEN = 2


def check_options(payload: dict[str, Any]) -> None:
    """Refuse what cannot be served, naming the param.

    Raises:
        BadRequest: ``background`` asked, ``include`` or ``truncation`` unknown.
    """
    if payload.get("background") is True:
        raise BadRequest(
            "Background responses are not supported by this server: create the response "
            "without 'background' (stream it to see it progress).",
            param="background",
        )
    include = payload.get("include")
    if include is not None:
        if not isinstance(include, list) or not all(isinstance(v, str) for v in include):
            raise BadRequest("Invalid 'include': expected an array of strings.", param="include")
        for index, value in enumerate(include):
            if value not in INCLUDABLE:
                raise BadRequest(
                    f"Invalid 'include[{index}]': {value!r} is not one of "
                    f"{', '.join(sorted(INCLUDABLE))}.",
                    param=f"include[{index}]",
                )
    truncation = payload.get("truncation")
    if truncation is not None and truncation not in TRUNCATIONS:
        raise BadRequest("Invalid 'truncation': expected 'auto' or 'disabled'.", param="truncation")


def wants_logprobs(payload: dict[str, Any]) -> bool:
    """Whether the output text is to carry its tokens' log probabilities."""
    include = payload.get("include")
    return isinstance(include, list) and LOGPROBS in include


def truncated(
    messages: list[dict[str, Any]], context_tokens: int, reserved_tokens: int
) -> list[dict[str, Any]]:
    """``messages`` without their oldest turns, so that the estimate fits the context.

    Leading system messages stay, and so does the last turn (from its user message on);
    a turn goes whole, so a tool call never loses its output.
    """
    budget = context_tokens - reserved_tokens
    head = 0
    while head < len(messages) and messages[head].get("role") in ("system", "developer"):
        head += 1
    kept = list(messages)
    while _estimate(kept) > budget:
        starts = [i for i in range(head + 1, len(kept)) if kept[i].get("role") == "user"]
        if not starts:
            break
        del kept[head : starts[0]]
    return kept


def fit_to_context(chat: dict[str, Any], context_tokens: int | None) -> None:
    """Truncate ``chat``'s messages to its model's context, keeping its answer's tokens."""
    if context_tokens is None:
        return
    reserved = chat.get("max_tokens")
    reserved = reserved if isinstance(reserved, int) else 0
    chat["messages"] = truncated(chat["messages"], context_tokens, reserved)


def _estimate(messages: list[dict[str, Any]]) -> int:
    return sum(len(json.dumps(m, ensure_ascii=False)) for m in messages) // CHARS_PER_TOKEN
