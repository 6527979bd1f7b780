"""Streamed answers folded into the document a non-streamed request expects."""

from __future__ import annotations

import json

from aifactory.gateway.fold import StreamFold
from aifactory.gateway.usage import Usage

HEAD = {"id": "chatcmpl-1", "created": 7, "model": "m", "object": "chat.completion.chunk"}


def sse(*documents: object) -> bytes:
    return b"".join(b"data: " + json.dumps(d).encode() + b"\n\n" for d in documents)


def chat_chunk(delta: dict[str, object], finish: str | None = None, **extra: object) -> object:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **HEAD, **extra}


def folded(stream: bytes, step: int = 7) -> tuple[int, dict[str, object], StreamFold]:
    fold = StreamFold(Usage())
    for start in range(0, len(stream), step):  # events split anywhere
        fold.feed(stream[start : start + step])
    status, body = fold.result()
    return status, json.loads(body), fold


def test_a_chat_stream_becomes_one_completion() -> None:
    token = {"token": "Hi", "logprob": -0.5}
    stream = (
        sse(
            chat_chunk({"role": "assistant", "content": None}),
            chat_chunk({"content": "Hi"}, logprobs=None),
            {
                "choices": [
                    {"index": 0, "delta": {"content": " there"}, "logprobs": {"content": [token]}}
                ],
                **HEAD,
            },
            chat_chunk({}, "length"),
            {
                "choices": [],
                **HEAD,
                "usage": {"prompt_tokens": 9, "completion_tokens": 2},
                "timings": {"predicted_n": 2},
            },
        )
        + b"data: [DONE]\n\n"
    )
    status, document, fold = folded(stream)
    assert status == 200
    assert document["object"] == "chat.completion" and document["id"] == "chatcmpl-1"
    assert document["choices"] == [
        {
            "index": 0,
            "finish_reason": "length",
            "message": {"role": "assistant", "content": "Hi there"},
            "logprobs": {"content": [token]},
        }
    ]
    assert document["usage"] == {"prompt_tokens": 9, "completion_tokens": 2}
    assert document["timings"] == {"predicted_n": 2}
    assert (fold.usage.prompt_tokens, fold.usage.completion_tokens, fold.tokens) == (9, 2, 2)


def test_tool_calls_are_joined_by_their_index() -> None:
    stream = sse(
        chat_chunk({"role": "assistant", "content": None}),
        chat_chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_", "arguments": ""},
                    }
                ]
            }
        ),
        chat_chunk(
            {"tool_calls": [{"index": 0, "function": {"name": "weather", "arguments": '{"city":'}}]}
        ),
        chat_chunk(
            {
                "tool_calls": [
                    {
                        "index": 1,
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "now", "arguments": "{}"},
                    }
                ]
            }
        ),
        chat_chunk({"tool_calls": [{"index": 0, "function": {"arguments": ' "Oslo"}'}}]}),
        chat_chunk({}, "tool_calls"),
    )
    _status, document, _fold = folded(stream)
    choice = document["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"] == [
        {
            "index": 0,
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
        },
        {
            "index": 1,
            "id": "call_2",
            "type": "function",
            "function": {"name": "now", "arguments": "{}"},
        },
    ]


def test_a_completions_stream_becomes_one_text_per_choice() -> None:
    head = {"id": "cmpl-1", "created": 7, "model": "m", "object": "text_completion"}
    stream = sse(
        {"choices": [{"index": 0, "text": " Paris", "finish_reason": None}], **head},
        {"choices": [{"index": 1, "text": " Lyon", "finish_reason": None}], **head},
        {"choices": [{"index": 0, "text": ".", "finish_reason": None}], **head},
        {
            "choices": [{"index": 0, "text": "", "finish_reason": "stop"}],
            **head,
            "usage": {"prompt_tokens": 5, "completion_tokens": 3},
        },
    )
    status, document, fold = folded(stream, step=3)
    assert status == 200 and document["object"] == "text_completion"
    assert [(c["index"], c["text"]) for c in document["choices"]] == [(0, " Paris."), (1, " Lyon")]
    assert fold.tokens == 3 and fold.usage.completion_tokens == 3


def test_an_error_the_engine_streams_is_the_answer() -> None:
    error = {"error": {"code": 400, "message": "context full", "type": "exceed_context_size_error"}}
    status, document, _fold = folded(sse(chat_chunk({"content": "a"}), error))
    assert status == 400 and document == error
