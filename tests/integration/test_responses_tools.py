"""The Responses API's tool round trip, input items, include, truncation and background,
with the openai SDK against the real server (bridged to llama.cpp)."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from openai import OpenAI

from .server import Server

CHAT = "smollm2-135m-instruct"
WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}
ASK = "What is the weather in Paris?"


@pytest.fixture(scope="module")
def client(server: Server, user_key: str) -> OpenAI:
    return OpenAI(base_url=f"{server.url}/v1", api_key=user_key, max_retries=0)


@pytest.fixture(scope="module")
def other_tenant(server: Server) -> OpenAI:
    key = server.admin.post("/api/keys", json={"tenant": "chemistry"}).json()["key"]
    return OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)


def test_function_call_out_and_its_output_in_with_previous_response_id(client: OpenAI) -> None:
    first = client.responses.create(
        model=CHAT, input=ASK, tools=[WEATHER], temperature=0, max_output_tokens=48
    )
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and first.status == "completed"
    call = calls[0]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    assert call.call_id and call.id and call.id.startswith("fc_")
    second = client.responses.create(
        model=CHAT,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 24 C"}],
        tools=[WEATHER],
        temperature=0,
        max_output_tokens=40,
    )
    assert [item.type for item in second.output] == ["message"]
    assert "24" in second.output_text


def test_a_streamed_function_call_and_its_events(client: OpenAI) -> None:
    kinds: list[str] = []
    deltas: list[str] = []
    arguments = ""
    final = None
    for event in client.responses.create(
        model=CHAT, input=ASK, tools=[WEATHER], temperature=0, max_output_tokens=48, stream=True
    ):
        kinds.append(event.type)
        if event.type == "response.function_call_arguments.delta":
            deltas.append(event.delta)
        if event.type == "response.function_call_arguments.done":
            arguments = event.arguments
        if event.type == "response.completed":
            final = event.response
    assert json.loads(arguments) == {"city": "Paris"}
    assert len(deltas) > 1 and "".join(deltas) == arguments
    assert kinds.index("response.output_item.added") < kinds.index("response.output_item.done")
    assert final is not None and final.output[0].type == "function_call"
    # The ids the events named are the ids kept.
    kept = client.responses.retrieve(final.id)
    assert kept.output[0].id == final.output[0].id


def test_input_items_are_listed_and_paged(client: OpenAI, other_tenant: OpenAI) -> None:
    response = client.responses.create(
        model=CHAT,
        input=[
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": "two"},
            {"role": "user", "content": [{"type": "input_text", "text": "three"}]},
        ],
        max_output_tokens=4,
    )
    items = client.responses.input_items.list(response.id, order="asc")
    texts = [item.content[0].text for item in items.data]  # type: ignore[union-attr]
    assert texts == ["one", "two", "three"]
    assert [item.role for item in items.data] == ["user", "assistant", "user"]  # type: ignore[union-attr]
    assert all(item.id for item in items.data)
    newest = client.responses.input_items.list(response.id, limit=2)
    assert [i.content[0].text for i in newest.data] == ["three", "two"]  # type: ignore[union-attr]
    assert newest.has_more
    rest = client.responses.input_items.list(response.id, limit=2, after=newest.data[-1].id)
    assert [i.content[0].text for i in rest.data] == ["one"]  # type: ignore[union-attr]
    assert not rest.has_more
    with pytest.raises(openai.NotFoundError):
        other_tenant.responses.input_items.list(response.id)
    with pytest.raises(openai.BadRequestError) as bad:
        client.responses.input_items.list(response.id, limit=0)
    assert bad.value.body["param"] == "limit"  # type: ignore[index]


def test_include_output_text_logprobs(client: OpenAI) -> None:
    response = client.responses.create(
        model=CHAT,
        input="Say hi.",
        include=["message.output_text.logprobs"],
        top_logprobs=2,
        max_output_tokens=4,
        temperature=0,
    )
    part = response.output[0].content[0]  # type: ignore[union-attr]
    assert part.type == "output_text" and part.logprobs
    assert response.usage is not None
    # A token per entry, except where the engine joined the byte pieces of one
    # character (an emoji is several tokens): the entries spell the text.
    assert 1 <= len(part.logprobs) <= response.usage.output_tokens
    assert "".join(token.token for token in part.logprobs) == part.text
    assert all(len(token.top_logprobs) == 2 for token in part.logprobs)
    plain = client.responses.create(model=CHAT, input="Say hi.", max_output_tokens=4)
    assert not getattr(plain.output[0].content[0], "logprobs", None)  # type: ignore[union-attr]


def test_truncation_auto_drops_the_oldest_turns(client: OpenAI) -> None:
    # Each old turn is ~1000 tokens (the gateway estimates more: it keeps none of them);
    # together they overflow the 2048-token slot a request gets.
    long_turns: Any = []
    for n in range(3):
        long_turns += [
            {"role": "user", "content": f"Story {n}: " + "the cat sat on the mat. " * 170},
            {"role": "assistant", "content": "Noted."},
        ]
    question = [*long_turns, {"role": "user", "content": "Say hi."}]
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model=CHAT, input=question, max_output_tokens=4)
    assert refused.value.body["code"] == "context_length_exceeded"  # type: ignore[index]
    response = client.responses.create(
        model=CHAT, input=question, max_output_tokens=4, truncation="auto"
    )
    assert response.truncation == "auto" and response.output_text
    assert response.usage is not None and response.usage.input_tokens < 100


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"background": True}, "background"),
        ({"truncation": "sometimes"}, "truncation"),
        ({"include": ["message.output_text.bogus"]}, "include[0]"),
    ],
)
def test_what_is_not_served_is_a_400_naming_it(
    client: OpenAI, extra: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=CHAT, input="hi", max_output_tokens=4, **extra)
    assert caught.value.body["param"] == param  # type: ignore[index]
    assert caught.value.body["type"] == "invalid_request_error"  # type: ignore[index]
