"""What one request may ask of a model's engine, checked before the engine sees it.

Engines tokenize a prompt before they find it too long for their context: a
15 MB prompt kept llama.cpp busy for 20 s before its 400, and a 100k-entry
``logit_bias`` 13 s. The gateway refuses both at once, OpenAI-style:

* a prompt longer than ``context tokens x MAX_CHARS_PER_TOKEN`` characters
  cannot fit, whatever the tokenizer: its longest tokens are runs of spaces
  or dashes, 64 characters in SmolLM2's vocabulary, and the bound allows
  twice that. Token-id prompts are counted exactly. A chat's messages and
  tools share one context; batched prompts and embedding inputs each have
  their own;
* ``logit_bias`` holds at most ``MAX_LOGIT_BIAS`` entries, as at OpenAI.

Engines whose context is not known (no ``ctx_size`` or ``max_model_len`` in
the spec) get only the body size limit.
"""

from __future__ import annotations

from typing import Any

from aifactory.errors import BadRequest, ContextLengthExceeded

MAX_CHARS_PER_TOKEN = 128
MAX_LOGIT_BIAS = 300

# What a chat adds to its prompt; parts carrying files or media are not text.
_CHAT_TEXT = ("messages", "tools", "functions")
_NOT_TEXT = frozenset({"image_url", "input_audio", "file", "video_url"})


def check_bounds(endpoint: str, payload: dict[str, Any], context_tokens: int | None) -> None:
    """Refuse a request its model cannot take.

    Raises:
        ContextLengthExceeded: the prompt cannot fit the model's context.
        BadRequest: ``logit_bias`` has too many entries.
    """
    bias = payload.get("logit_bias")
    if isinstance(bias, dict | list) and len(bias) > MAX_LOGIT_BIAS:
        raise BadRequest(
            f"Invalid 'logit_bias': expected an object with at most {MAX_LOGIT_BIAS} "
            f"entries, but got {len(bias)}.",
            param="logit_bias",
        )
    if context_tokens is None:
        return
    if endpoint == "chat":
        chars = sum(_text_length(payload.get(field)) for field in _CHAT_TEXT)
        _check_length("messages", chars, 0, context_tokens)
    elif endpoint == "completions":
        _check_prompts("prompt", payload.get("prompt"), context_tokens)
    else:
        _check_prompts("input", payload.get("input"), context_tokens)


def _check_prompts(param: str, prompts: object, context_tokens: int) -> None:
    """One prompt (text or token ids), or a batch of them, each on its own."""
    batch = (
        prompts if isinstance(prompts, list) and prompts and _is_prompt(prompts[0]) else [prompts]
    )
    for prompt in batch:
        if isinstance(prompt, list):
            _check_length(param, 0, len(prompt), context_tokens)
        else:
            _check_length(param, _text_length(prompt), 0, context_tokens)


def _is_prompt(item: object) -> bool:
    return isinstance(item, str | list)


def _check_length(param: str, chars: int, tokens: int, context_tokens: int) -> None:
    if tokens > context_tokens or chars > context_tokens * MAX_CHARS_PER_TOKEN:
        size = f"{tokens} tokens" if tokens else f"{chars:,} characters"
        raise ContextLengthExceeded(
            f"This model's maximum context length is {context_tokens} tokens, and your "
            f"{param} ({size}) cannot fit in it. Please reduce the length of the {param}.",
            param=param,
        )


def _text_length(value: object) -> int:
    """Characters of text in a JSON value (keys included: tools are rendered whole)."""
    total = 0
    pending = [value]  # a loop, not recursion: nesting depth is the client's choice
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, dict):
            for key, inner in item.items():
                if key not in _NOT_TEXT:
                    total += len(key)
                    pending.append(inner)
    return total
