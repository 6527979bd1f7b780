"""Fuzz the routes replicas call back on: registration and preemption, open to any bearer token.

They are the cheapest routes to reach (``Authorization: Bearer x`` is
enough to get the body read), so they must be the most careful with it.
"""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from .conftest import Target, fuzz_settings
from .strategies import (
    BIG_BODY_BYTES,
    DEEP_JSON_ARRAY,
    DEEP_JSON_OBJECT,
    Headers,
    Strategy,
    authorizations,
    document,
    hostile_text,
    http_requests,
    json_bodies,
    numbers,
    segment,
    streamed,
    weighted,
)
from .wire import Request

REGISTER = "POST /internal/replicas/{id}/register"
PREEMPTED = "POST /internal/replicas/{id}/preempted"
ANY_TOKEN = ("Authorization", "Bearer x")


def _tokens(target: Target) -> Strategy[Headers]:
    return authorizations(ANY_TOKEN, target.admin_auth, ("Authorization", "Basic eDp4"))


def _requests(target: Target) -> Strategy[Request]:
    replica = segment(st.sampled_from([*target.replica_ids, "x", "chat-000000"]))
    registration = document(
        {"host": st.sampled_from(["127.0.0.1", "localhost", "::1"]), "port": st.integers(1, 65535)},
        {"launched_at": numbers()},
    )
    return weighted(
        (
            3,
            http_requests(
                REGISTER,
                "POST",
                replica.map(lambda r: f"/internal/replicas/{r}/register"),
                _tokens(target),
                json_bodies(registration),
            ),
        ),
        (
            1,
            http_requests(
                PREEMPTED,
                "POST",
                replica.map(lambda r: f"/internal/replicas/{r}/preempted"),
                _tokens(target),
                st.one_of(st.just(b""), hostile_text().map(str.encode)),
            ),
        ),
    )


def test_registration_and_preemption(target: Target) -> None:
    fuzzer = target.fuzzer("internal")
    register = "/internal/replicas/x/register"
    big = (ANY_TOKEN, ("Content-Length", str(BIG_BODY_BYTES)))

    @fuzz_settings(250)
    @given(_requests(target))
    @example(Request(REGISTER, "POST", register, (ANY_TOKEN,), DEEP_JSON_ARRAY))
    @example(Request(REGISTER, "POST", register, (ANY_TOKEN,), DEEP_JSON_OBJECT))
    @example(Request(REGISTER, "POST", register, big, streamed(BIG_BODY_BYTES)))
    def probe(request: Request) -> None:
        fuzzer.send(request)

    probe()
    target.check()
    # No forged call took the chat replica out of service.
    chat = target.server.admin.get("/api/services/chat").json()
    assert chat["ready"] == 1, chat
