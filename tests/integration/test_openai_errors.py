"""The error matrix on /v1: every error is OpenAI's shape, whoever found it (openai SDK)."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from .server import Server

CHAT = "smollm2-135m-instruct"
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def client(server: Server, user_key: str) -> OpenAI:
    return OpenAI(base_url=f"{server.url}/v1", api_key=user_key, max_retries=0)


def _error(exc: openai.APIStatusError) -> dict[str, Any]:
    """The ``error`` object, checked to hold exactly OpenAI's four fields."""
    body = exc.response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return dict(body["error"])


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
        ({"n": 0}, "n"),
        ({"n": 129}, "n"),
        ({"n": "2"}, "n"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_completion_tokens": -1}, "max_completion_tokens"),
        ({"max_tokens": True}, "max_tokens"),
    ],
)
def test_what_openai_validates_is_a_400_naming_the_param(
    client: OpenAI, extra: dict[str, Any], param: str
) -> None:
    body = {"model": CHAT, "messages": HI, **extra}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**body)
    error = _error(caught.value)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


@pytest.mark.parametrize("stream", [False, True])
def test_max_tokens_negative_is_openais_400_streamed_or_not(client: OpenAI, stream: bool) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=CHAT, messages=HI, max_tokens=-5, stream=stream)
    error = _error(caught.value)
    assert (error["type"], error["param"]) == ("invalid_request_error", "max_tokens")


def test_an_engine_side_validation_error_is_openais_shape_with_the_engines_message(
    client: OpenAI,
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=CHAT, messages=HI, max_tokens=2, extra_body={"temperature": "hot"}
        )
    error = _error(caught.value)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "temperature"
    assert "type must be number" in error["message"]  # the engine's own words
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=CHAT,
            messages=HI,
            max_tokens=2,
            response_format={"type": "bogus"},  # type: ignore[typeddict-item]
        )
    error = _error(caught.value)
    assert error["type"] == "invalid_request_error"
    assert "bogus" in error["message"]


def test_the_engines_context_overflow_is_context_length_exceeded(client: OpenAI) -> None:
    # Short enough in characters to pass the gateway's bound, too long in tokens.
    long = " ".join(["word"] * 5000)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=CHAT, messages=[{"role": "user", "content": long}], max_tokens=2
        )
    error = _error(caught.value)
    assert (error["type"], error["code"]) == ("invalid_request_error", "context_length_exceeded")
    assert "context" in error["message"]


def test_unknown_fields_pass_through_untouched(client: OpenAI) -> None:
    reply = client.chat.completions.create(
        model=CHAT, messages=HI, max_tokens=2, n=1, extra_body={"a_field_no_one_knows": {"x": 1}}
    )
    assert reply.choices


def test_gateway_errors_are_openais_shape(server: Server, user_key: str) -> None:
    url = f"{server.url}/v1/chat/completions"
    auth = {"Authorization": f"Bearer {user_key}"}
    bad_json = httpx.post(url, content=b"{not json", headers=auth)
    unknown = httpx.post(url, json={"model": "no-such-model", "messages": HI}, headers=auth)
    no_key = httpx.post(url, json={"model": CHAT, "messages": HI})
    for response, status, kind in (
        (bad_json, 400, "invalid_request_error"),
        (unknown, 404, "invalid_request_error"),
        (no_key, 401, "invalid_request_error"),
    ):
        assert response.status_code == status, response.text
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
        assert response.json()["error"]["type"] == kind
    assert unknown.json()["error"]["param"] == "model"
    assert unknown.json()["error"]["code"] == "model_not_found"
