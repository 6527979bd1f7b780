import json

import pytest

from aifactory.errors import BadRequest
from aifactory.gateway.responses_api import ResponseEvents
from aifactory.gateway.responses_bridge import chat_request, response_object


def test_a_string_input_after_the_history_and_instructions_first() -> None:
    history = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    chat, conversation = chat_request(
        {"model": "m", "input": "c", "instructions": "be brief", "max_output_tokens": 9}, history
    )
    assert chat["messages"][0] == {"role": "system", "content": "be brief"}
    assert chat["messages"][1:] == [*history, {"role": "user", "content": "c"}]
    assert conversation == chat["messages"][1:]  # instructions are not carried on
    assert chat["max_tokens"] == 9 and "stream" not in chat


def test_items_tools_and_format_in_their_chat_spelling() -> None:
    chat, _ = chat_request(
        {
            "model": "m",
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "42"},
            ],
            "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
            "text": {"format": {"type": "json_schema", "name": "s", "schema": {}}},
            "stream": True,
        },
        [],
    )
    assert chat["messages"][0]["content"] == [{"type": "text", "text": "hi"}]
    assert chat["messages"][1]["tool_calls"][0]["function"] == {"name": "f", "arguments": "{}"}
    assert chat["messages"][2] == {"role": "tool", "tool_call_id": "c1", "content": "42"}
    assert chat["tools"][0]["function"]["name"] == "f"
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "s", "schema": {}},
    }
    assert chat["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({"input": []}, "input"),
        ({"input": [{"type": "bogus"}]}, "input[0]"),
        ({"input": "x", "max_output_tokens": 0}, "max_output_tokens"),
    ],
)
def test_malformed_requests_name_their_param(payload: dict[str, object], param: str) -> None:
    with pytest.raises(BadRequest) as caught:
        chat_request({"model": "m", **payload}, [])
    assert caught.value.param == param


def test_a_completion_cut_by_length_is_incomplete() -> None:
    completion = {
        "choices": [{"message": {"content": "hel"}, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1},
    }
    document = response_object("resp_1", {"max_output_tokens": 1}, "m", completion)
    assert document["status"] == "incomplete"
    assert document["output"][0]["content"][0]["text"] == "hel"
    assert document["usage"]["total_tokens"] == 4


def _chunk(document: object) -> bytes:
    return b"data: " + json.dumps(document).encode() + b"\n\n"


def test_a_chat_stream_becomes_response_events() -> None:
    events = ResponseEvents("resp_1", {}, "m")
    out = events.opening()
    for word in ("Hel", "lo"):
        out += events.feed(_chunk({"choices": [{"index": 0, "delta": {"content": word}}]}))
    usage = {"prompt_tokens": 3, "completion_tokens": 2}
    out += events.feed(_chunk({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    out += events.feed(_chunk({"choices": [], "usage": usage}) + b"data: [DONE]\n\n")
    closing, document, _ = events.finish()
    out += closing
    kinds = [
        json.loads(line[6:])["type"] for line in out.split(b"\n") if line.startswith(b"data: ")
    ]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert document is not None and document["usage"]["output_tokens"] == 2


def test_an_error_event_ends_the_stream_without_completion() -> None:
    events = ResponseEvents("resp_1", {}, "m")
    error = {"message": "lost", "type": "server_error", "param": None, "code": "upstream_error"}
    out = events.feed(_chunk({"error": error}))
    assert b"event: error" in out and b'"message": "lost"' in out
    assert events.finish() == (b"", None, None)


def test_a_streamed_tool_call_becomes_function_call_events_with_one_id() -> None:
    events = ResponseEvents("resp_1", {}, "m")
    begin = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f"}}
    deltas = [
        {"tool_calls": [{**begin, "function": {"name": "f", "arguments": '{"a"'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]},
    ]
    out = b""
    for delta in deltas:
        out += events.feed(_chunk({"choices": [{"index": 0, "delta": delta}]}))
    end = {"index": 0, "delta": {}, "finish_reason": "tool_calls"}
    out += events.feed(_chunk({"choices": [end]}) + b"data: [DONE]\n\n")
    closing, document, _ = events.finish()
    sent = [
        json.loads(line[6:]) for line in (out + closing).split(b"\n") if line.startswith(b"data: ")
    ]
    assert [e["type"] for e in sent] == [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert "".join(e["delta"] for e in sent if "delta" in e) == '{"a": 1}'
    assert sent[3]["arguments"] == '{"a": 1}'
    assert document is not None
    call = document["output"][0]
    assert call["call_id"] == "call_1" and call["name"] == "f"
    assert {e.get("item_id", e.get("item", {}).get("id")) for e in sent[:5]} == {call["id"]}
