import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from aifactory.config import Settings
from aifactory.errors import APIError, BadRequest
from aifactory.input_limits import (
    MAX_JSON_DEPTH,
    MAX_YAML_DEPTH,
    BodyLimit,
    BodyRule,
    HttpLimits,
    parse_json,
    parse_json_object,
    parse_yaml,
    uvicorn_options,
)

# JSON


def test_json_as_deep_as_the_limit_parses() -> None:
    depth = MAX_JSON_DEPTH
    assert parse_json("[" * depth + "]" * depth) is not None
    assert parse_json_object(b'{"model": "m", "messages": [{"role": "user"}]}')["model"] == "m"


@pytest.mark.parametrize("document", ["[" * 1000 + "]" * 1000, '{"a":' * 300 + "1" + "}" * 300])
def test_json_deeper_than_the_limit_is_a_400(document: str) -> None:
    with pytest.raises(BadRequest, match=f"nested more than {MAX_JSON_DEPTH} levels"):
        parse_json(document)


@pytest.mark.parametrize("document", [b"NaN", b'{"a": Infinity}', b"{", b"\xff", b"1" * 5000])
def test_what_is_not_json_is_a_400(document: bytes) -> None:
    with pytest.raises(BadRequest, match="not valid JSON"):
        parse_json(document)


def test_a_json_body_that_is_not_an_object_is_a_400() -> None:
    with pytest.raises(BadRequest, match="must be a JSON object"):
        parse_json_object(b"[1, 2]")


def test_json_parses_like_the_standard_library() -> None:
    document = '{"a": [1, 2.5, "\\u00e9", null, true], "b": {"c": -0}, "a2": 12345678901234567890}'
    assert parse_json(document) == json.loads(document)


# YAML


def test_yaml_parses_specs_with_anchors_but_no_aliases() -> None:
    assert parse_yaml("a: &x 1\nb: [0x10, -1_000, 2.5, yes, ~]\n") == {
        "a": 1,
        "b": [16, -1000, 2.5, True, None],
    }


def test_yaml_aliases_are_refused_with_their_line() -> None:
    with pytest.raises(yaml.YAMLError, match=r"alias \*a: YAML aliases are not accepted") as exc:
        parse_yaml("a: &a [x, x]\nb: [*a, *a]\n")
    assert "line 2" in str(exc.value)


def test_yaml_merge_keys_are_aliases_too() -> None:
    with pytest.raises(yaml.YAMLError, match="aliases are not accepted"):
        parse_yaml("base: &base {cpus: 1}\nresources:\n  <<: *base\n")


@pytest.mark.parametrize(
    "document",
    [
        "[" * (MAX_YAML_DEPTH + 1) + "]" * (MAX_YAML_DEPTH + 1),
        "".join(" " * i + "a:\n" for i in range(MAX_YAML_DEPTH + 1)) + " " * 70 + "a: 1\n",
        "[" * 100_000,
    ],
    ids=["flow", "block", "unclosed"],
)
def test_yaml_deeper_than_the_limit_is_refused(document: str) -> None:
    with pytest.raises(yaml.YAMLError, match=f"nested more than {MAX_YAML_DEPTH} levels"):
        parse_yaml(document)


def test_yaml_as_deep_as_the_limit_parses() -> None:
    depth = MAX_YAML_DEPTH
    assert parse_yaml("[" * depth + "]" * depth) == parse_yaml("[" * depth + "]" * depth)


@pytest.mark.parametrize("integer", ["9" * 5000, "0x" + "f" * 100, "1:" * 40 + "1"])
def test_yaml_integers_longer_than_any_setting_are_refused(integer: str) -> None:
    with pytest.raises(yaml.YAMLError, match="at most 32 digits"):
        parse_yaml(f"replicas: {integer}\n")


def test_yaml_a_long_string_of_digits_in_quotes_is_a_string() -> None:
    assert parse_yaml(f"v: '{'9' * 5000}'\n") == {"v": "9" * 5000}


# Bodies


async def _echo_size(request: Request) -> Response:
    return JSONResponse({"size": len(await request.body())})


async def _api_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return JSONResponse({"error": str(exc)}, status_code=exc.status_code)


def _limited_app() -> BodyLimit:
    app = Starlette(
        routes=[Route("/{path:path}", _echo_size, methods=["POST", "PUT"])],
        exception_handlers={APIError: _api_error},
    )
    return BodyLimit(
        app,
        [
            BodyRule("/small/", 10, "small routes", "AIFACTORY_SMALL"),
            BodyRule("/uploads/", None, methods=frozenset({"PUT"})),
            BodyRule("/", 100, "other routes"),
        ],
    )


def _post(method: str, path: str, body: bytes | list[bytes]) -> httpx.Response:
    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=_limited_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            content = body if isinstance(body, bytes) else _chunks(body)
            return await client.request(method, path, content=content)

    return asyncio.run(send())


async def _chunks(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def test_a_body_within_its_routes_limit_passes() -> None:
    assert _post("POST", "/small/x", b"x" * 10).json() == {"size": 10}
    assert _post("POST", "/other", b"x" * 100).json() == {"size": 100}


def test_an_announced_body_over_the_limit_is_refused_with_the_setting_to_raise() -> None:
    response = _post("POST", "/small/x", b"x" * 11)
    assert response.status_code == 413
    assert response.json()["error"] == (
        "The request body is larger than 10 bytes, the most small routes take. "
        "Fix: send less, or raise AIFACTORY_SMALL"
    )


def test_a_chunked_body_is_refused_once_it_passes_the_limit() -> None:
    response = _post("POST", "/other", [b"x" * 60, b"x" * 60])
    assert response.status_code == 413
    assert "100 bytes, the most other routes take" in response.json()["error"]


def test_a_rule_can_leave_a_method_to_the_route() -> None:
    assert _post("PUT", "/uploads/a", b"x" * 1000).json() == {"size": 1000}
    assert _post("POST", "/uploads/a", b"x" * 1000).status_code == 413


# HTTP listeners


def test_http_limits_come_from_the_settings() -> None:
    settings = Settings(
        max_header_bytes=2048, max_headers=20, header_timeout_s=3, max_connections=9
    )
    limits = HttpLimits.of(settings)
    assert (limits.max_header_bytes, limits.max_headers, limits.header_timeout_s) == (2048, 20, 3)
    assert limits.body_timeout_s == settings.body_timeout_s


def test_uvicorn_options_use_httptools_with_the_limits() -> None:
    limits = HttpLimits(max_connections=7, keep_alive_timeout_s=3)
    options = uvicorn_options(limits)
    assert issubclass(options["http"], HttpToolsProtocol)
    assert options["http"].limits is limits
    assert options["limit_concurrency"] == 7
    assert options["timeout_keep_alive"] == 3
