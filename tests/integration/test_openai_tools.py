"""Tool calls and structured output with the openai SDK, through the gateway to llama.cpp.

SmolLM2's own chat template ignores ``tools``; the engine runner gives ChatML models a
template that offers them (engines/tool_template.py). Temperature 0 keeps the tiny
model's choices repeatable.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai import OpenAI
from pydantic import BaseModel

from .server import Server

CHAT = "smollm2-135m-instruct"
WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}
ASK: Any = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def client(server: Server, user_key: str) -> OpenAI:
    return OpenAI(base_url=f"{server.url}/v1", api_key=user_key, max_retries=0)


@pytest.mark.parametrize("tool_choice", ["auto", "required"])
def test_tools_end_in_a_tool_call(client: OpenAI, tool_choice: Any) -> None:
    completion = client.chat.completions.create(
        model=CHAT,
        messages=ASK,
        tools=[WEATHER],
        tool_choice=tool_choice,
        max_tokens=48,
        temperature=0,
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    assert choice.message.tool_calls is not None and len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.id
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}


def test_streamed_tool_call_deltas_are_assembled_by_the_sdk(client: OpenAI) -> None:
    with client.chat.completions.stream(
        model=CHAT, messages=ASK, tools=[WEATHER], max_tokens=48, temperature=0
    ) as stream:
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert call.function.parsed_arguments == {"city": "Paris"}


def test_a_tool_result_is_answered_in_text(client: OpenAI) -> None:
    history: Any = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 24 C"},
    ]
    completion = client.chat.completions.create(
        model=CHAT, messages=history, tools=[WEATHER], max_tokens=40, temperature=0
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert not choice.message.tool_calls
    assert choice.message.content and "24" in choice.message.content


class Person(BaseModel):
    name: str
    age: int


def test_response_format_json_schema_is_honoured(client: OpenAI) -> None:
    completion = client.chat.completions.parse(
        model=CHAT,
        messages=[{"role": "user", "content": "Invent a person."}],
        response_format=Person,
        max_tokens=60,
        temperature=0,
    )
    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "stop"
    assert isinstance(message.parsed, Person) and message.parsed.name


def test_streamed_response_format_is_json_of_the_schema(client: OpenAI) -> None:
    schema = Person.model_json_schema() | {"additionalProperties": False}
    stream = client.chat.completions.create(
        model=CHAT,
        messages=[{"role": "user", "content": "Invent a person."}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": schema, "strict": True},
        },
        max_tokens=60,
        temperature=0,
        stream=True,
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    person = json.loads(text)
    assert set(person) == {"name", "age"} and isinstance(person["age"], int)


@pytest.mark.parametrize("stream", [False, True])
def test_n_two_gives_two_choices(client: OpenAI, stream: bool) -> None:
    if not stream:
        completion = client.chat.completions.create(
            model=CHAT, messages=[{"role": "user", "content": "Say hi."}], max_tokens=5, n=2
        )
        assert sorted(c.index for c in completion.choices) == [0, 1]
        assert all(c.message.content for c in completion.choices)
        return
    texts: dict[int, str] = {}
    finished: set[int] = set()
    for chunk in client.chat.completions.create(
        model=CHAT,
        messages=[{"role": "user", "content": "Say hi."}],
        max_tokens=5,
        n=2,
        stream=True,
    ):
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            if choice.finish_reason:
                finished.add(choice.index)
    assert sorted(texts) == [0, 1] and finished == {0, 1}
    assert all(texts.values())


def test_logprobs_come_per_token(client: OpenAI) -> None:
    completion = client.chat.completions.create(
        model=CHAT,
        messages=[{"role": "user", "content": "Say hi."}],
        max_tokens=3,
        logprobs=True,
        top_logprobs=2,
    )
    logprobs = completion.choices[0].logprobs
    assert logprobs is not None and logprobs.content is not None
    assert completion.usage is not None
    assert len(logprobs.content) == completion.usage.completion_tokens
    for token in logprobs.content:
        assert token.logprob <= 0 and len(token.top_logprobs) == 2
