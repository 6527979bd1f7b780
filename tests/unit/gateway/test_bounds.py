"""Prompt size and logit_bias bounds, checked before an engine sees the request."""

from __future__ import annotations

from typing import Any

import pytest

from aifactory.errors import BadRequest, ContextLengthExceeded
from aifactory.gateway.bounds import MAX_CHARS_PER_TOKEN, check_bounds

CONTEXT = 100
MOST = CONTEXT * MAX_CHARS_PER_TOKEN  # characters that may still fit


def chat(*contents: object, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": c} for c in contents], **extra}


@pytest.mark.parametrize(
    ("endpoint", "payload", "param"),
    [
        ("chat", chat("x" * (MOST + 1)), "messages"),
        ("chat", chat("x" * (MOST // 2), "y" * (MOST // 2 + 1)), "messages"),
        ("chat", chat([{"type": "text", "text": "x" * (MOST + 1)}]), "messages"),
        ("chat", chat("hi", tools=[{"function": {"description": "x" * MOST}}]), "messages"),
        ("completions", {"prompt": "x" * (MOST + 1)}, "prompt"),
        ("completions", {"prompt": ["short", "x" * (MOST + 1)]}, "prompt"),
        ("completions", {"prompt": [1] * (CONTEXT + 1)}, "prompt"),
        ("completions", {"prompt": [[1], [1] * (CONTEXT + 1)]}, "prompt"),
        ("embeddings", {"input": ["short", "x" * (MOST + 1)]}, "input"),
    ],
)
def test_a_prompt_that_cannot_fit_is_refused(
    endpoint: str, payload: dict[str, Any], param: str
) -> None:
    with pytest.raises(ContextLengthExceeded) as refused:
        check_bounds(endpoint, payload, CONTEXT)
    assert refused.value.param == param
    assert refused.value.status_code == 400 and refused.value.code == "context_length_exceeded"
    assert f"maximum context length is {CONTEXT} tokens" in str(refused.value)


@pytest.mark.parametrize(
    ("endpoint", "payload"),
    [
        ("chat", chat("x" * (MOST - 100))),
        # Images and files are not text: their size is the body limit's business.
        ("chat", chat([{"type": "image_url", "image_url": {"url": "data:" + "A" * 2 * MOST}}])),
        ("completions", {"prompt": [1] * CONTEXT}),
        ("completions", {"prompt": ["x" * MOST, "y" * MOST]}),  # each prompt on its own
        ("embeddings", {"input": ["x" * MOST] * 3}),
        ("embeddings", {"input": 42}),  # not ours to judge: the engine says what is wrong
    ],
)
def test_what_fits_goes_through(endpoint: str, payload: dict[str, Any]) -> None:
    check_bounds(endpoint, payload, CONTEXT)


def test_an_unknown_context_leaves_the_size_to_the_body_limit() -> None:
    check_bounds("chat", chat("x" * (MOST * 10)), None)


def test_deeply_nested_content_is_counted_without_recursion() -> None:
    nested: object = "x" * (MOST + 1)
    for _ in range(100_000):
        nested = [nested]
    with pytest.raises(ContextLengthExceeded):
        check_bounds("chat", {"messages": nested}, CONTEXT)


@pytest.mark.parametrize("bias", [{str(i): 1 for i in range(301)}, [[i, 1] for i in range(301)]])
def test_logit_bias_holds_at_most_300_entries(bias: object) -> None:
    with pytest.raises(BadRequest, match="at most 300") as refused:
        check_bounds("chat", chat("hi", logit_bias=bias), None)
    assert refused.value.param == "logit_bias"
    check_bounds("chat", chat("hi", logit_bias={str(i): 1 for i in range(300)}), None)
