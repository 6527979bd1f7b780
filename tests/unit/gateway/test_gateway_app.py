"""The gateway in-process: an ASGI client in front, a tiny real engine behind.

Everything between is the real thing: the fleet routes, keys are checked
against the store, the limiter and the usage ledger work on SQLite.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from openai_upstream import COMPLETION_TOKENS, PROMPT_TOKENS, WORDS, Upstream, events
from sqlalchemy import text

from aifactory.control import Fleet, ReplicaState
from aifactory.control.fleet import LiveReplica
from aifactory.gateway import GatewayApp
from aifactory.specs import Service, load_service
from aifactory.store import Store
from aifactory.tenancy import KeyAuthenticator, Limiter, UsageLedger, issue_key, period_bounds

CHAT = """
name: chat
models: [{name: smol, aliases: [chat]}]
engine: {type: openai-compatible, command: [serve, --port, "{port}"]}
replicas: {min: 0, max: 2}
autoscaling: {queue_size: 2, queue_timeout: 30s}
"""
SECRET = """
name: secret
models: [{name: secret-model}]
engine: {type: openai-compatible, command: [serve, --port, "{port}"]}
private: true
"""


@dataclass
class Gateway:
    """The gateway under test and what it works with."""

    client: httpx.AsyncClient
    fleet: Fleet
    store: Store
    ledger: UsageLedger
    keys: dict[str, str]
    upstreams: list[Upstream] = field(default_factory=list)
    demanded: asyncio.Event = field(default_factory=asyncio.Event)

    async def post(
        self, path: str = "/v1/chat/completions", key: str | None = "physics", **body: Any
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.keys[key]}"} if key else {}
        document = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]} | body
        return await self.client.post(path, json=document, headers=headers)

    async def get(self, path: str, key: str = "physics") -> httpx.Response:
        return await self.client.get(path, headers={"Authorization": f"Bearer {self.keys[key]}"})

    async def engine(self, replica_id: str, service: str = "chat") -> Upstream:
        """Start an engine and make it a ready replica of ``service``."""
        upstream = Upstream()
        self.upstreams.append(upstream)
        self.ready(replica_id, await upstream.start(), service)
        return upstream

    def ready(self, replica_id: str, base_url: str, service: str = "chat") -> LiveReplica:
        replica = LiveReplica(
            replica_id, service, "local", state=ReplicaState.READY, base_url=base_url
        )
        self.fleet.replicas[replica_id] = replica
        return replica

    async def metered(self, tenant: str = "physics", by: str = "model") -> list[dict[str, Any]]:
        await self.ledger.flush()
        return self.store.usage_report(self.store.ensure_tenant(tenant), None, by)


@asynccontextmanager
async def gateway(store: Store, *specs: str, **options: Any) -> AsyncIterator[Gateway]:
    keys = {
        "physics": issue_key(store, "physics").secret,
        "biology": issue_key(store, "biology").secret,
        "ops": issue_key(store, "ops", role="admin").secret,
    }
    services: list[Service] = [load_service(spec) for spec in (specs or (CHAT,))]
    demanded = asyncio.Event()
    fleet = Fleet(on_demand=lambda _service: demanded.set())
    owners = {s.name: store.ensure_tenant("biology") for s in services if s.private}
    fleet.set_services([(s, 1_700_000_000) for s in services], owners)
    ledger = UsageLedger(store)
    app = GatewayApp(
        fleet,
        KeyAuthenticator(store),
        ledger,
        Limiter(store),
        max_request_bytes=options.get("max_request_bytes", 1 << 20),
        max_in_flight_per_key=options.get("max_in_flight_per_key", 256),
        connect_timeout_s=5.0,
        read_timeout_s=30.0,
        stored_responses=store,
    )
    await app.start()
    transport = httpx.ASGITransport(app=app)
    client = httpx.AsyncClient(transport=transport, base_url="http://gateway", timeout=30)
    world = Gateway(client, fleet, store, ledger, keys, demanded=demanded)
    try:
        yield world
    finally:
        await client.aclose()
        await app.aclose()
        for upstream in world.upstreams:
            await upstream.close()


def run(
    store: Store, scenario: Callable[[Gateway], Awaitable[None]], *specs: str, **options: Any
) -> None:
    async def main() -> None:
        # A gateway that waits for what never comes fails here, not at pytest's timeout.
        async with asyncio.timeout(10), gateway(store, *specs, **options) as world:
            await scenario(world)

    asyncio.run(main())


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The OpenAI error document of a response, checked to have exactly its four fields."""
    assert response.headers["content-type"] == "application/json"
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def free_port() -> int:
    """A port nothing listens on (it was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


# routing and metering


def test_a_cookie_one_engine_sets_never_reaches_another_engine(store: Store) -> None:
    """Engines may be tenants' own code: the gateway keeps no cookie jar across them."""

    async def scenario(gw: Gateway) -> None:
        # Reached by host name, as replicas on a cluster's nodes are (a cookie jar
        # refuses cookies from bare IP addresses, not from names).
        hostile, other = Upstream(set_cookie="session=stolen; Path=/"), Upstream()
        for replica_id, service, upstream in (
            ("secret-1", "secret", hostile),
            ("chat-1", "chat", other),
        ):
            gw.upstreams.append(upstream)
            gw.ready(
                replica_id, (await upstream.start()).replace("127.0.0.1", "localhost"), service
            )
        response = await gw.post(key="biology", model="secret-model")
        assert response.status_code == 200
        assert "set-cookie" not in response.headers, "an engine's cookie is not relayed"
        assert (await gw.post(key="physics")).status_code == 200  # same host, another port
        (received,) = other.received
        assert "Cookie" not in received.headers

    run(store, scenario, CHAT, SECRET)


@pytest.mark.parametrize(
    ("path", "endpoint"),
    [
        ("/v1/chat/completions", "chat"),
        ("/v1/completions", "completions"),
        ("/v1/embeddings", "embeddings"),
    ],
)
def test_a_request_reaches_the_ready_replica_and_is_metered_under_the_model(
    store: Store, path: str, endpoint: str
) -> None:
    async def scenario(gw: Gateway) -> None:
        upstream = await gw.engine("chat-1")
        response = await gw.post(path, model="chat")
        assert response.status_code == 200
        assert response.json()["usage"]["prompt_tokens"] == PROMPT_TOKENS
        (received,) = upstream.received
        assert received.path == path and received.body["model"] == "chat"
        assert gw.fleet.replicas["chat-1"].in_flight == 0, "the replica was given back"
        (row,) = await gw.metered()
        # Under its canonical name, whichever alias was asked for.
        assert (row["model"], row["entries"]) == ("smol", 1)
        assert (row["prompt_tokens"], row["completion_tokens"]) == (
            PROMPT_TOKENS,
            COMPLETION_TOKENS,
        )
        (by_key,) = await gw.metered(by="key")
        assert by_key["key"] != 0, "charged to the key that asked"
        with store.engine.connect() as db:
            assert db.execute(text("SELECT endpoint FROM usage")).scalars().all() == [endpoint]

    run(store, scenario)


def test_a_stream_is_relayed_and_metered_without_the_usage_chunk_not_asked_for(
    store: Store,
) -> None:
    async def scenario(gw: Gateway) -> None:
        upstream = await gw.engine("chat-1")
        response = await gw.post(stream=True)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        chunks = events(response.text)
        assert chunks[-1] == "[DONE]"
        assert [c["choices"][0]["delta"]["content"] for c in chunks[:-1]] == list(WORDS)
        # The gateway asked the engine for usage to meter it, and kept it to itself.
        assert upstream.received[0].body["stream_options"] == {"include_usage": True}
        (row,) = await gw.metered()
        assert (row["prompt_tokens"], row["completion_tokens"]) == (
            PROMPT_TOKENS,
            COMPLETION_TOKENS,
        )

    run(store, scenario)


def test_a_streams_replica_is_free_once_its_done_is_relayed(store: Store) -> None:
    """A client sends its next request on ``[DONE]``: the replica must count it as free then."""

    async def scenario(gw: Gateway) -> None:
        upstream = await gw.engine("chat-1")
        upstream.closing.clear()  # the engine is slow to end the stream after [DONE]
        answer = asyncio.create_task(gw.post(stream=True))
        await upstream.sent_done.wait()
        replica = gw.fleet.replicas["chat-1"]
        await _until(lambda: replica.in_flight == 0)
        assert not answer.done()  # the stream itself is still open
        upstream.closing.set()
        response = await answer
        assert events(response.text)[-1] == "[DONE]"
        # Given back once, not twice; metered as before.
        assert replica.in_flight == 0 and gw.fleet.take_peak("chat") == 1
        (row,) = await gw.metered()
        assert row["completion_tokens"] == COMPLETION_TOKENS

    run(store, scenario)


def test_an_engine_that_drops_the_connection_after_done_has_answered_whole(
    store: Store,
) -> None:
    async def scenario(gw: Gateway) -> None:
        upstream = await gw.engine("chat-1")
        upstream.close_uncleanly = True
        response = await gw.post(stream=True)
        assert response.status_code == 200
        chunks = events(response.text)
        # No error event after the answer: the client got all of it.
        assert chunks[-1] == "[DONE]" and not any("error" in c for c in chunks[:-1])
        replica = gw.fleet.replicas["chat-1"]
        assert replica.in_flight == 0 and not replica.suspect
        (row,) = await gw.metered()
        assert row["completion_tokens"] == COMPLETION_TOKENS

    run(store, scenario)


async def _until(condition: Callable[[], bool]) -> None:
    """Wait for ``condition`` on state that signals no event (a replica's count)."""
    while not condition():  # noqa: ASYNC110
        await asyncio.sleep(0.01)


def test_a_client_that_asks_for_usage_in_the_stream_gets_it(store: Store) -> None:
    async def scenario(gw: Gateway) -> None:
        await gw.engine("chat-1")
        response = await gw.post(stream=True, stream_options={"include_usage": True})
        usage = [c["usage"] for c in events(response.text)[:-1] if c.get("usage")]
        assert usage == [
            {
                "prompt_tokens": PROMPT_TOKENS,
                "completion_tokens": COMPLETION_TOKENS,
                "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
            }
        ]
        (row,) = await gw.metered()
        assert row["entries"] == 1 and row["prompt_tokens"] == PROMPT_TOKENS

    run(store, scenario)


def test_a_busy_replica_is_passed_over_for_an_idle_one(store: Store) -> None:
    async def scenario(gw: Gateway) -> None:
        first, second = await gw.engine("chat-1"), await gw.engine("chat-2")
        for upstream in (first, second):
            upstream.answering.clear()
        held = asyncio.create_task(gw.post())
        busy = await _arrival(first, second)
        idle = second if busy is first else first
        idle.answering.set()
        # Taking turns would send one of these two to the busy replica.
        for _ in range(2):
            assert (await gw.post()).status_code == 200
        assert (len(busy.received), len(idle.received)) == (1, 2)
        busy.answering.set()
        assert (await held).status_code == 200

    run(store, scenario)


async def _arrival(*upstreams: Upstream) -> Upstream:
    """The engine the next request arrives at."""
    waits = {asyncio.create_task(u.arrived.wait()): u for u in upstreams}
    done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    return waits[done.pop()]


def test_a_replica_that_refuses_connections_is_skipped_and_made_suspect(store: Store) -> None:
    async def scenario(gw: Gateway) -> None:
        dead = gw.ready("chat-dead", f"http://127.0.0.1:{free_port()}")
        live = await gw.engine("chat-live")
        for _ in range(2):  # whichever the first pick is, the dead one is met
            response = await gw.post()
            assert response.status_code == 200
        assert len(live.received) == 2
        assert dead.suspect and dead.in_flight == 0
        assert gw.fleet.ready_count("chat") == 1

    run(store, scenario)


def test_a_replica_answering_503_is_replaced_by_another(store: Store) -> None:
    async def scenario(gw: Gateway) -> None:
        overloaded, healthy = await gw.engine("chat-1"), await gw.engine("chat-2")
        overloaded.status = 503
        for _ in range(2):
            assert (await gw.post()).status_code == 200
        assert len(healthy.received) == 2
        assert gw.fleet.replicas["chat-1"].suspect

    run(store, scenario)


def test_an_engines_client_error_is_relayed_and_not_metered(store: Store) -> None:
    async def scenario(gw: Gateway) -> None:
        upstream = await gw.engine("chat-1")
        upstream.status = 400
        response = await gw.post()
        assert response.status_code == 400
        assert response.json()["error"]["message"] == "engine says no"
        assert not gw.fleet.replicas["chat-1"].suspect, "the request was at fault"
        assert await gw.metered() == []

    run(store, scenario)


# holding at zero replicas


def test_a_request_at_zero_replicas_is_held_until_one_is_ready(store: Store) -> None:
    async def scenario(gw: Gateway) -> None:
        request = asyncio.create_task(gw.post(stream=True))
        await gw.demanded.wait()  # the control plane was asked for a replica
        assert gw.fleet.holding.length("chat") == 1
        upstream = Upstream()
        gw.upstreams.append(upstream)
        gw.ready("chat-1", await upstream.start())
        gw.fleet.holding.wake("chat")
        response = await request
        assert response.status_code == 200
        body = response.text
        assert body.startswith(': queued position=1 state=SCALING reason="requesting a replica"')
        assert events(body)[-1] == "[DONE]" and len(upstream.received) == 1
        assert gw.fleet.holding.length("chat") == 0

    run(store, scenario)


def test_a_held_request_gives_up_after_the_queue_timeout(store: Store) -> None:
    async def scenario(gw: Gateway) -> None:
        response = await gw.post()
        assert response.status_code == 503
        error = error_of(response)
        assert error["code"] == "no_replica_available"
        assert "No replica became ready within 0s" in error["message"]
        assert response.headers["retry-after"] == "10"
        assert gw.fleet.holding.length("chat") == 0

    run(store, scenario, CHAT.replace("queue_timeout: 30s", "queue_timeout: 0.05"))


def test_a_full_queue_refuses_at_once(store: Store) -> None:
    async def scenario(gw: Gateway) -> None:
        response = await gw.post()
        assert response.status_code == 503
        assert "queue for this model is full" in error_of(response)["message"]
        assert response.headers["retry-after"]

    run(store, scenario, CHAT.replace("queue_size: 2", "queue_size: 0"))


# keys and models


def test_a_missing_or_wrong_key_is_an_openai_401(store: Store) -> None:
    async def scenario(gw: Gateway) -> None:
        upstream = await gw.engine("chat-1")
        missing = await gw.post(key=None)
        assert missing.status_code == 401
        assert error_of(missing) == {
            "message": "You didn't provide an API key. Fix: send `Authorization: Bearer KEY` "
            "(api_key=KEY in OpenAI clients)",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
        gw.keys["stranger"] = "aif-not-a-key"
        wrong = await gw.post(key="stranger")
        assert wrong.status_code == 401
        assert error_of(wrong)["message"].startswith("Incorrect API key provided")
        basic = await gw.client.get("/v1/models", headers={"Authorization": "Basic eDp5"})
        assert basic.status_code == 401
        assert upstream.received == []

    run(store, scenario)


def test_a_revoked_key_is_refused(store: Store) -> None:
    async def scenario(gw: Gateway) -> None:
        revoked = issue_key(store, "physics")
        store.revoke_key(revoked.key_id)
        gw.keys["revoked"] = revoked.secret
        assert (await gw.post(key="revoked")).status_code == 401

    run(store, scenario)


def test_models_are_listed_and_other_tenants_private_ones_do_not_exist(store: Store) -> None:
    async def scenario(gw: Gateway) -> None:
        listed = (await gw.get("/v1/models")).json()
        assert listed["object"] == "list"
        assert sorted(m["id"] for m in listed["data"]) == ["chat", "smol"]
        assert {m["owned_by"] for m in listed["data"]} == {"aifactory"}
        assert (await gw.get("/v1/models/smol")).json()["id"] == "smol"
        hidden = await gw.get("/v1/models/secret-model")
        assert hidden.status_code == 404 and error_of(hidden)["code"] == "model_not_found"
        refused = await gw.post(model="secret-model")
        assert refused.status_code == 404
        assert error_of(refused)["param"] == "model"
        for owner in ("biology", "ops"):
            names = [m["id"] for m in (await gw.get("/v1/models", owner)).json()["data"]]
            assert "secret-model" in names, owner
        unknown = await gw.post(model="gpt-9")
        assert unknown.status_code == 404
        assert "`gpt-9` does not exist" in error_of(unknown)["message"]

    run(store, scenario, CHAT, SECRET)


@pytest.mark.parametrize(
    ("content", "status", "param"),
    [
        (b"{not json", 400, None),
        (b"[1, 2]", 400, None),
        (b'{"messages": []}', 400, "model"),
        (b'{"model": 7}', 400, "model"),
    ],
)
def test_a_malformed_body_is_a_400_naming_what_is_wrong(
    store: Store, content: bytes, status: int, param: str | None
) -> None:
    async def scenario(gw: Gateway) -> None:
        response = await gw.client.post(
            "/v1/chat/completions",
            content=content,
            headers={"Authorization": f"Bearer {gw.keys['physics']}"},
        )
        assert response.status_code == status
        error = error_of(response)
        assert (error["type"], error["param"]) == ("invalid_request_error", param)

    run(store, scenario)


def test_wrong_methods_unknown_paths_and_big_bodies_are_refused(store: Store) -> None:
    async def scenario(gw: Gateway) -> None:
        upstream = await gw.engine("chat-1")
        wrong_method = await gw.get("/v1/chat/completions")
        assert wrong_method.status_code == 400
        assert "takes POST" in error_of(wrong_method)["message"]
        unknown = await gw.get("/v1/fine_tuning/jobs")
        assert unknown.status_code == 404 and error_of(unknown)["code"] == "not_found"
        big = await gw.post(messages=[{"role": "user", "content": "x" * 4096}])
        assert big.status_code == 413 and error_of(big)["code"] == "request_too_large"
        assert upstream.received == []

    run(store, scenario, max_request_bytes=2048)


# limits


def test_requests_over_the_tenants_rate_are_refused_before_reaching_an_engine(
    store: Store,
) -> None:
    async def scenario(gw: Gateway) -> None:
        upstream = await gw.engine("chat-1")
        store.set_limits(store.ensure_tenant("physics"), None, requests_per_minute=1)
        assert (await gw.post()).status_code == 200
        refused = await gw.post()
        assert refused.status_code == 429
        error = error_of(refused)
        assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limit_exceeded")
        assert "1 requests per minute" in error["message"]
        assert int(refused.headers["retry-after"]) > 0
        assert len(upstream.received) == 1
        assert (await gw.post(key="biology")).status_code == 200, "another tenant is not limited"

    run(store, scenario)


def test_the_engines_usage_is_spent_from_the_token_budget(store: Store) -> None:
    physics = store.ensure_tenant("physics")
    store.set_limits(physics, None, token_budget=100, period="month")

    async def scenario(gw: Gateway) -> None:
        await gw.engine("chat-1")
        for _ in range(2):
            assert (await gw.post()).status_code == 200

    run(store, scenario)
    # A clean stop hands every slice back: the store holds exactly what was used.
    start, _end = period_bounds("month", time.time())
    spent = store.counters.value(f"budget:tenant 'physics':{int(start)}")
    assert spent == 2 * (PROMPT_TOKENS + COMPLETION_TOKENS)


def test_a_spent_token_budget_is_insufficient_quota(store: Store) -> None:
    async def scenario(gw: Gateway) -> None:
        upstream = await gw.engine("chat-1")
        store.set_limits(store.ensure_tenant("physics"), None, token_budget=0)
        refused = await gw.post()
        assert refused.status_code == 429
        error = error_of(refused)
        assert (error["type"], error["code"]) == ("insufficient_quota", "insufficient_quota")
        assert int(refused.headers["retry-after"]) > 0, "seconds until the budget resets"
        assert upstream.received == []

    run(store, scenario)


def test_a_key_over_its_in_flight_limit_is_refused_until_one_finishes(store: Store) -> None:
    async def scenario(gw: Gateway) -> None:
        upstream = await gw.engine("chat-1")
        upstream.answering.clear()
        first = asyncio.create_task(gw.post())
        await upstream.arrived.wait()
        second = await gw.post()
        assert second.status_code == 429
        assert error_of(second)["code"] == "rate_limit_exceeded"
        assert second.headers["retry-after"] == "1"
        other_key = asyncio.create_task(gw.post(key="biology"))
        upstream.arrived.clear()
        await upstream.arrived.wait()  # admitted: the limit is per key
        upstream.answering.set()
        assert (await first).status_code == 200
        assert (await other_key).status_code == 200
        assert (await gw.post()).status_code == 200, "the finished request freed its place"

    run(store, scenario, max_in_flight_per_key=1)


def test_the_request_after_the_one_that_spent_the_budget_is_refused(store: Store) -> None:
    """However the engine's answer and the limiter's background lease interleave."""

    async def scenario(gw: Gateway) -> None:
        upstream = await gw.engine("chat-1")
        budget = PROMPT_TOKENS + COMPLETION_TOKENS  # what one request costs
        store.set_limits(store.ensure_tenant("physics"), None, token_budget=budget)
        assert (await gw.post()).status_code == 200
        refused = await gw.post()
        assert refused.status_code == 429
        assert error_of(refused)["code"] == "insufficient_quota"
        assert len(upstream.received) == 1

    run(store, scenario)
