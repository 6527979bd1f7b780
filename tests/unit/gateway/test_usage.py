import json

from aifactory.gateway.usage import SSEUsageFilter, usage_of_body


def _event(document: object) -> bytes:
    return b"data: " + json.dumps(document).encode() + b"\n\n"


CHUNK = _event({"choices": [{"delta": {"content": "hi"}}], "usage": None})
USAGE = _event({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}})
DONE = b"data: [DONE]\n\n"


def test_usage_chunk_is_read_and_dropped_when_not_asked() -> None:
    sse = SSEUsageFilter(forward_usage_chunk=False)
    out = sse.feed(CHUNK) + sse.feed(USAGE) + sse.feed(DONE) + sse.flush()
    assert out == CHUNK + DONE
    assert (sse.usage.prompt_tokens, sse.usage.completion_tokens) == (7, 3)


def test_usage_chunk_is_forwarded_when_asked() -> None:
    sse = SSEUsageFilter(forward_usage_chunk=True)
    assert sse.feed(CHUNK + USAGE + DONE) == CHUNK + USAGE + DONE
    assert sse.usage.completion_tokens == 3


def test_events_split_across_reads_are_reassembled() -> None:
    stream = CHUNK + USAGE + DONE
    sse = SSEUsageFilter(forward_usage_chunk=False)
    out = b"".join(sse.feed(stream[i : i + 5]) for i in range(0, len(stream), 5)) + sse.flush()
    assert out == CHUNK + DONE
    assert sse.usage.prompt_tokens == 7


def test_chunks_without_usage_pass_through_unchanged() -> None:
    sse = SSEUsageFilter(forward_usage_chunk=False)
    plain = b'data: {"choices": [{"delta": {"content": "x"}}]}\n\n'
    assert sse.feed(plain) == plain


def test_whole_body_usage() -> None:
    body = json.dumps({"usage": {"prompt_tokens": 5, "completion_tokens": 2}}).encode()
    usage = usage_of_body(body)
    assert (usage.prompt_tokens, usage.completion_tokens) == (5, 2)
    assert usage_of_body(b'not json with "usage"').prompt_tokens == 0
