"""The Responses API with the openai SDK, bridged to llama.cpp's chat completions."""

from __future__ import annotations

import sqlite3
import time

import openai
import pytest
from openai import OpenAI

from .server import Server

CHAT = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def client(server: Server, user_key: str) -> OpenAI:
    return OpenAI(base_url=f"{server.url}/v1", api_key=user_key, max_retries=0)


@pytest.fixture(scope="module")
def other_tenant(server: Server) -> OpenAI:
    key = server.admin.post("/api/keys", json={"tenant": "biology"}).json()["key"]
    return OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)


def test_create_retrieve_and_delete(client: OpenAI, other_tenant: OpenAI) -> None:
    response = client.responses.create(
        model=CHAT, input="Say hello.", instructions="Answer briefly.", max_output_tokens=16
    )
    assert response.id.startswith("resp_")
    assert response.output_text
    assert response.status in ("completed", "incomplete")
    assert response.usage is not None and response.usage.input_tokens > 0
    assert response.usage.output_tokens > 0
    kept = client.responses.retrieve(response.id)
    assert (kept.id, kept.output_text) == (response.id, response.output_text)
    # Another tenant does not see it, nor can it delete it.
    with pytest.raises(openai.NotFoundError):
        other_tenant.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        other_tenant.responses.delete(response.id)
    client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError) as gone:
        client.responses.retrieve(response.id)
    assert gone.value.body["type"] == "invalid_request_error"  # type: ignore[index]


def test_input_as_message_items(client: OpenAI) -> None:
    response = client.responses.create(
        model=CHAT,
        input=[
            {"role": "system", "content": "You answer in one word."},
            {"role": "user", "content": [{"type": "input_text", "text": "Say yes."}]},
        ],
        max_output_tokens=8,
        store=False,
    )
    assert response.output_text
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)


def test_previous_response_id_carries_the_conversation(
    client: OpenAI, other_tenant: OpenAI
) -> None:
    first = client.responses.create(
        model=CHAT,
        input="My name is Zorblax. Remember it.",
        max_output_tokens=16,
        temperature=0,
    )
    second = client.responses.create(
        model=CHAT,
        input="What is my name?",
        previous_response_id=first.id,
        max_output_tokens=16,
        temperature=0,
    )
    # The engine saw the first turn: its prompt is longer than the question alone.
    alone = client.responses.create(
        model=CHAT, input="What is my name?", max_output_tokens=16, temperature=0, store=False
    )
    assert second.usage is not None and alone.usage is not None
    assert second.usage.input_tokens > alone.usage.input_tokens + 10
    assert second.previous_response_id == first.id
    with pytest.raises(openai.NotFoundError) as foreign:
        other_tenant.responses.create(
            model=CHAT, input="What is my name?", previous_response_id=first.id
        )
    assert foreign.value.body["param"] == "previous_response_id"  # type: ignore[index]


def test_streamed_events(client: OpenAI) -> None:
    stream = client.responses.create(
        model=CHAT, input="Count from one to ten.", max_output_tokens=24, stream=True
    )
    kinds: list[str] = []
    deltas: list[str] = []
    final = None
    for event in stream:
        kinds.append(event.type)
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
        if event.type in ("response.completed", "response.incomplete"):
            final = event.response
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert "response.output_item.added" in kinds and "response.output_text.done" in kinds
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert len(deltas) > 3
    assert final is not None and final.output_text == "".join(deltas)
    assert final.usage is not None and final.usage.output_tokens > 0
    assert client.responses.retrieve(final.id).output_text == final.output_text


def test_errors_are_openais_shape(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        client.responses.create(model=CHAT, input=[])
    assert bad.value.body["param"] == "input"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError) as unknown:
        client.responses.create(model="no-such-model", input="hi")
    assert unknown.value.body["param"] == "model"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as negative:
        client.responses.create(model=CHAT, input="hi", max_output_tokens=-5)
    assert negative.value.body["param"] == "max_output_tokens"  # type: ignore[index]


def test_usage_is_metered(server: Server, client: OpenAI) -> None:
    def total() -> int:
        time.sleep(1.5)  # the ledger flushes every second
        with sqlite3.connect(server.data_dir / "aifactory.db") as db:
            row = db.execute(
                "SELECT COALESCE(SUM(u.completion_tokens), 0) FROM usage u "
                "JOIN tenants t ON t.id = u.tenant_id WHERE t.name = 'physics'"
            ).fetchone()
        return int(row[0])

    before = total()
    response = client.responses.create(model=CHAT, input="Hi", max_output_tokens=8, store=False)
    assert response.usage is not None
    assert total() - before == response.usage.output_tokens
