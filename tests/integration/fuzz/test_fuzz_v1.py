"""Fuzz the OpenAI-compatible /v1 API: chat, completions, embeddings, models and functions.

Drawn requests reach the real engines; ``max_tokens`` is always small and
valid so that a drawn request never legitimately generates for long.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from .conftest import FUNCTION, POOL, Target, fuzz_settings
from .strategies import (
    DEEP_JSON_ARRAY,
    DEEP_JSON_OBJECT,
    HUGE_LOGIT_BIAS_ENTRIES,
    HUGE_PROMPT_CHARS,
    Headers,
    Strategy,
    authorizations,
    document,
    encode,
    hostile_text,
    http_requests,
    json_bodies,
    json_values,
    query,
    segment,
    weighted,
    with_headers,
)
from .wire import Outcome, Request, backpressure, exchange

CHAT_MODELS = ("chat", "smollm2-135m-instruct")
EMBEDDING_MODELS = ("embed", "all-minilm-l6-v2")
MODELS = CHAT_MODELS + EMBEDDING_MODELS


def _models(own: tuple[str, ...], others: tuple[str, ...]) -> Strategy[str]:
    """Mostly a model that serves the endpoint; sometimes one that does not, or none at all."""
    return weighted((6, st.sampled_from(own)), (1, st.sampled_from(others)), (1, hostile_text()))


def _short_text() -> Strategy[str]:
    return hostile_text(max_size=60).filter(lambda text: len(text) < 400)


def _messages() -> Strategy[Any]:
    part = document(
        {"type": st.sampled_from(["text", "image_url", "input_audio"])},
        {"text": _short_text(), "image_url": document({"url": _short_text()}, nested=True)},
        nested=True,
    )
    message = document(
        {
            "role": st.sampled_from(["user", "system", "assistant", "tool", "developer"]),
            "content": st.one_of(_short_text(), st.lists(part, max_size=2)),
        },
        {"name": _short_text(), "tool_call_id": _short_text(), "tool_calls": json_values()},
        nested=True,
    )
    return st.lists(message, min_size=1, max_size=3)


_SAMPLING = {
    "temperature": st.floats(0, 2),
    "top_p": st.floats(0, 1),
    "top_k": st.integers(0, 100),
    "seed": st.integers(),
    "stop": st.one_of(_short_text(), st.lists(_short_text(), max_size=4)),
    "presence_penalty": st.floats(-2, 2),
    "frequency_penalty": st.floats(-2, 2),
    "logit_bias": st.dictionaries(
        st.from_regex(r"[0-9]{1,5}", fullmatch=True), st.floats(-100, 100), max_size=4
    ),
    "logprobs": st.booleans(),
    "top_logprobs": st.integers(0, 20),
    "user": _short_text(),
    "stream": st.booleans(),
    "stream_options": document({"include_usage": st.booleans()}, nested=True),
    "n": st.just(1),
}


def _with_small_max_tokens(documents: Strategy[dict[str, Any]]) -> Strategy[dict[str, Any]]:
    return st.builds(lambda d, n: {**d, "max_tokens": n}, documents, st.integers(1, 8))


def _chat_documents() -> Strategy[dict[str, Any]]:
    return _with_small_max_tokens(
        document(
            {"model": _models(CHAT_MODELS, EMBEDDING_MODELS), "messages": _messages()},
            {
                **_SAMPLING,
                "response_format": document(
                    {"type": st.sampled_from(["text", "json_object", "json_schema"])},
                    {"json_schema": json_values(), "schema": json_values()},
                ),
                "tools": st.lists(
                    document(
                        {"type": st.just("function")},
                        {
                            "function": document(
                                {"name": _short_text()}, {"parameters": json_values()}
                            )
                        },
                    ),
                    max_size=2,
                ),
                "tool_choice": st.one_of(
                    st.sampled_from(["auto", "none", "required"]), json_values()
                ),
                "grammar": _short_text(),
            },
        )
    )


def _token_ids() -> Strategy[list[int]]:
    return st.lists(st.integers(-10, 100_000), max_size=16)


def _completion_documents() -> Strategy[dict[str, Any]]:
    prompt = st.one_of(
        _short_text(),
        st.lists(_short_text(), max_size=3),
        _token_ids(),
        st.lists(_token_ids(), max_size=2),
    )
    return _with_small_max_tokens(
        document(
            {"model": _models(CHAT_MODELS, EMBEDDING_MODELS), "prompt": prompt},
            {**_SAMPLING, "echo": st.booleans(), "suffix": _short_text()},
        )
    )


def _embedding_documents() -> Strategy[dict[str, Any]]:
    text = hostile_text(max_size=200).filter(lambda t: len(t) < 2000)
    return document(
        {
            "model": _models(EMBEDDING_MODELS, CHAT_MODELS),
            "input": st.one_of(
                text, st.lists(text, max_size=4), _token_ids(), st.lists(_token_ids(), max_size=2)
            ),
        },
        {
            "encoding_format": st.sampled_from(["float", "base64"]),
            "dimensions": st.integers(1, 384),
            "user": _short_text(),
        },
    )


_HEADERS = ("Content-Type", "X-Session-Id", "X-Request-Id", "Accept", "Content-Encoding")


def _headers(target: Target) -> Strategy[Headers]:
    return with_headers(authorizations(target.user_auth, target.admin_auth), _HEADERS)


def _posts(target: Target, path: str, documents: Strategy[dict[str, Any]]) -> Strategy[Request]:
    return http_requests(
        f"POST {path}", "POST", st.just(path), _headers(target), json_bodies(documents)
    )


def test_chat_completions(target: Target) -> None:
    fuzzer = target.fuzzer("v1")
    path = "/v1/chat/completions"
    user = (target.user_auth,)
    hello = [{"role": "user", "content": "hi"}]
    huge_prompt = {
        "model": "chat",
        "messages": [{"role": "user", "content": "a " * (HUGE_PROMPT_CHARS // 2)}],
        "max_tokens": 1,
    }
    logit_bias = {str(i): 0 for i in range(HUGE_LOGIT_BIAS_ENTRIES)}

    @fuzz_settings(200)
    @given(_posts(target, path, _chat_documents()))
    @example(Request(f"POST {path}", "POST", path, user, DEEP_JSON_ARRAY))
    @example(Request(f"POST {path}", "POST", path, user, DEEP_JSON_OBJECT))
    @example(Request(f"POST {path}", "POST", path, user, encode(huge_prompt)))
    @example(
        Request(
            f"POST {path}",
            "POST",
            path,
            user,
            encode({"model": "embed", "messages": hello, "max_tokens": 1}),
        )
    )
    @example(
        Request(
            f"POST {path}",
            "POST",
            path,
            user,
            encode({"model": "chat", "messages": hello, "max_tokens": 1, "logit_bias": logit_bias}),
        )
    )
    def probe(request: Request) -> None:
        fuzzer.send(request, backpressure)

    probe()
    target.check()


def test_completions(target: Target) -> None:
    fuzzer = target.fuzzer("v1")
    path = "/v1/completions"

    @fuzz_settings(150)
    @given(_posts(target, path, _completion_documents()))
    @example(Request(f"POST {path}", "POST", path, (target.user_auth,), DEEP_JSON_ARRAY))
    def probe(request: Request) -> None:
        fuzzer.send(request, backpressure)

    probe()
    target.check()


def test_embeddings(target: Target) -> None:
    fuzzer = target.fuzzer("v1")
    path = "/v1/embeddings"

    @fuzz_settings(150)
    @given(_posts(target, path, _embedding_documents()))
    @example(Request(f"POST {path}", "POST", path, (target.user_auth,), DEEP_JSON_ARRAY))
    @example(
        Request(f"POST {path}", "POST", path, (target.user_auth,), b'{"model": "chat", "input": 1}')
    )
    def probe(request: Request) -> None:
        fuzzer.send(request, backpressure)

    probe()
    target.check()


def _invocations(target: Target) -> Strategy[Request]:
    name = segment(st.just(FUNCTION))
    async_query = query({"async": st.sampled_from(["true", "false", "1"])})
    arguments = document(
        {},
        {
            "args": st.lists(json_values(), max_size=3),
            "kwargs": st.dictionaries(hostile_text(12), json_values(), max_size=3),
        },
    )
    return http_requests(
        "POST /v1/functions/{name}/invoke",
        "POST",
        st.builds(lambda n, q: f"/v1/functions/{n}/invoke{q}", name, async_query),
        _headers(target),
        json_bodies(arguments),
    )


def _reads(target: Target) -> Strategy[Request]:
    """The GET routes under /v1, and paths and methods that are not routes at all."""
    calls = query({"function": st.just(FUNCTION), "limit": st.integers().map(str)})
    routes = [
        ("/v1/models", st.just("/v1/models")),
        ("/v1/models/{id}", segment(st.sampled_from(MODELS)).map("/v1/models/".__add__)),
        ("/v1/services/{name}", segment(st.just("chat")).map("/v1/services/".__add__)),
        ("/v1/functions", st.just("/v1/functions")),
        ("/v1/functions/pools", st.just("/v1/functions/pools")),
        ("/v1/functions/pools/{name}", segment(st.just(POOL)).map("/v1/functions/pools/".__add__)),
        ("/v1/functions/calls", calls.map("/v1/functions/calls".__add__)),
        ("/v1/functions/calls/{id}", segment(st.just("1")).map("/v1/functions/calls/".__add__)),
    ]
    reads = [
        http_requests(f"GET {label}", "GET", paths, _headers(target)) for label, paths in routes
    ]
    endpoints = st.sampled_from(["chat/completions", "completions", "embeddings", "models", "x"])
    strays = st.sampled_from(["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]).flatmap(
        lambda method: http_requests(
            f"{method} /v1/*", method, segment(endpoints).map("/v1/".__add__), _headers(target)
        )
    )
    return st.one_of(*reads, strays)


def test_functions_and_reads(target: Target) -> None:
    fuzzer = target.fuzzer("v1")
    invoke = f"/v1/functions/{FUNCTION}/invoke"

    @fuzz_settings(300)
    @given(weighted((1, _invocations(target)), (1, _reads(target))))
    @example(
        Request(
            "POST /v1/functions/{name}/invoke", "POST", invoke, (target.user_auth,), DEEP_JSON_ARRAY
        )
    )
    @example(
        Request(
            "POST /v1/functions/{name}/invoke",
            "POST",
            "/v1/functions/x/invoke",
            (target.user_auth,),
            DEEP_JSON_OBJECT,
        )
    )
    def probe(request: Request) -> None:
        fuzzer.send(request, backpressure)

    probe()
    target.check()


def _answered(_request: Request, outcome: Outcome) -> bool:
    """Queued behind each other on two engine slots, requests may be slow; never failed."""
    return outcome.status is not None and outcome.status < 500


def test_concurrent_requests_on_one_key(target: Target) -> None:
    """Twenty requests of one key at once (the in-flight counter raced: 36 of 100 were 500)."""
    fuzzer = target.fuzzer("v1")
    chat = encode(
        {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    )
    request = Request(
        "POST /v1/chat/completions (20 at once)",
        "POST",
        "/v1/chat/completions",
        (target.user_auth,),
        chat,
    )
    for _round in range(3):
        offset = fuzzer.log_offset()
        with ThreadPoolExecutor(20) as pool:
            outcomes = list(pool.map(_send_to(target), [request] * 20))
        for outcome in outcomes:
            fuzzer.judge(request, outcome, _answered, offset)
    target.check()


def _send_to(target: Target) -> Callable[[Request], Outcome]:
    return lambda request: exchange(target.port, request)
