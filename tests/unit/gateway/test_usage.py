import json

import pytest

from aifactory.gateway.usage import Meter, SSEUsageFilter, Usage, usage_of_body


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


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        # vLLM: usage with nested details, then more keys after it
        (
            {
                "choices": [{"message": {"content": "hi"}}],
                "usage": {
                    "prompt_tokens": 9,
                    "completion_tokens": 4,
                    "prompt_tokens_details": {"cached_tokens": 0},
                },
                "kv_transfer_params": None,
            },
            (9, 4),
        ),
        # usage before the choices, and an answer that talks about "usage": {...}
        (
            {
                "usage": {"prompt_tokens": 3, "completion_tokens": 8},
                "choices": [{"message": {"content": 'say "usage": {"prompt_tokens": 999}'}}],
            },
            (3, 8),
        ),
        ({"choices": [], "usage": None}, (0, 0)),
    ],
)
def test_whole_body_usage_is_the_engines_not_the_answers(
    document: dict[str, object], expected: tuple[int, int]
) -> None:
    for body in (json.dumps(document).encode(), json.dumps(document, indent=2).encode()):
        usage = usage_of_body(body)
        assert (usage.prompt_tokens, usage.completion_tokens) == expected


def test_events_are_counted_as_they_pass() -> None:
    sse = SSEUsageFilter(forward_usage_chunk=False)
    stream = CHUNK + CHUNK + USAGE + DONE
    sse.feed(stream[:-5])
    assert sse.events == 3
    sse.feed(stream[-5:])
    assert sse.events == 4


def test_a_request_cut_short_is_charged_what_was_seen() -> None:
    assert Meter().charged() == Usage(), "nothing reached an engine"
    reported = Meter(usage=Usage(7, 3), request_bytes=100, events=5, cut_short="abandoned")
    assert reported.charged() == Usage(7, 3), "the engine's own count, when it came"
    streamed = Meter(request_bytes=401, events=12, cut_short="abandoned")
    assert streamed.charged() == Usage(101, 12)
    whole = Meter(request_bytes=400, cut_short="abandoned")
    assert whole.charged() == Usage(100, 0)
    finished = Meter(request_bytes=400, events=12)
    assert finished.charged() == Usage(), "a finished request is charged what the engine said"


def test_only_the_usage_event_is_taken_out_of_a_read_of_many() -> None:
    sse = SSEUsageFilter(forward_usage_chunk=False)
    assert sse.feed(CHUNK + USAGE + CHUNK + DONE) == CHUNK + CHUNK + DONE
    assert (sse.usage.prompt_tokens, sse.usage.completion_tokens, sse.events) == (7, 3, 4)
    asked = SSEUsageFilter(forward_usage_chunk=True)
    assert asked.feed(USAGE + CHUNK + USAGE[:9]) == USAGE + CHUNK
    assert asked.feed(USAGE[9:] + DONE) + asked.flush() == USAGE + DONE


def test_a_usage_chunk_without_choices_is_dropped_and_a_text_about_usage_is_not_one() -> None:
    bare_usage = _event({"usage": {"prompt_tokens": 4, "completion_tokens": 2}})
    talk = _event({"choices": [{"delta": {"content": '"usage": {"prompt_tokens": 99}'}}]})
    spaced = b'data: {"choices" : [ ], "usage" : {"prompt_tokens": 6, "completion_tokens": 1}}\n\n'
    sse = SSEUsageFilter(forward_usage_chunk=False)
    assert sse.feed(talk + bare_usage) == talk
    assert (sse.usage.prompt_tokens, sse.usage.completion_tokens) == (4, 2)
    assert sse.feed(spaced + DONE) == DONE
    assert (sse.usage.prompt_tokens, sse.usage.completion_tokens) == (6, 1)
