"""OpenAI's Agents SDK, unchanged, runs an agent with a function tool against the gateway.

The SDK calls the Responses API (bridged to llama.cpp): a function call out, the tool run
by the SDK, its output in, and the answer. Only the client (base_url, a tenant key) and
tracing (it would export to OpenAI) are set.
"""

from __future__ import annotations

import asyncio

import pytest
from agents import (
    Agent,
    ModelSettings,
    Runner,
    function_tool,
    set_default_openai_client,
    set_tracing_disabled,
)
from openai import AsyncOpenAI

from .server import Server

CHAT = "smollm2-135m-instruct"


@pytest.fixture
def weather_agent(server: Server, user_key: str) -> tuple[Agent, list[str]]:
    # A client per test: each test runs its own event loop, and a client keeps to one.
    set_default_openai_client(
        AsyncOpenAI(base_url=f"{server.url}/v1", api_key=user_key, max_retries=0)
    )
    set_tracing_disabled(True)
    asked: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """Get the current weather for a city."""
        asked.append(city)
        return f"Sunny, 24 C in {city}"

    agent = Agent(
        name="weather",
        instructions="You answer weather questions.",
        model=CHAT,
        tools=[get_weather],
        model_settings=ModelSettings(temperature=0, max_tokens=60),
    )
    return agent, asked


def test_an_agent_calls_its_tool_and_answers(weather_agent: tuple[Agent, list[str]]) -> None:
    agent, asked = weather_agent
    result = asyncio.run(Runner.run(agent, "What is the weather in Paris?", max_turns=3))
    assert asked == ["Paris"]
    assert "24" in str(result.final_output)


def test_a_streamed_agent_run(weather_agent: tuple[Agent, list[str]]) -> None:
    agent, asked = weather_agent

    async def run() -> tuple[object, list[str]]:
        streamed = Runner.run_streamed(agent, "What is the weather in Paris?", max_turns=3)
        kinds = [event.type async for event in streamed.stream_events()]
        return streamed.final_output, kinds

    final, kinds = asyncio.run(run())
    assert asked == ["Paris"]
    assert "24" in str(final) and "raw_response_event" in kinds
