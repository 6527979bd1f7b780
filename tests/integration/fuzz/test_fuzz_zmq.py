"""Fuzz the functions broker's two ZMQ ports, for executors and for workers.

Both listen on every interface and read a frame before any key or token is
checked, so any frame at all must leave the broker serving. Each drawn
message goes to a fresh socket; then a named function must still answer.
"""

from __future__ import annotations

import re
from typing import Any

import zmq
from hypothesis import example, given
from hypothesis import strategies as st

from aifactory.functions.curve import pin_server

from .conftest import FUNCTION, POOL, Target, fuzz_settings
from .strategies import DEEP_JSON_ARRAY, encode, hostile_text, json_values, weighted
from .wire import SLOW_S, Request, exchange

KINDS = b"hwsckbrRtHGXN"  # every frame kind of aifactory.functions.protocol


def _frames() -> st.SearchStrategy[list[bytes]]:
    hello = st.fixed_dictionaries(
        {}, optional={"pool": st.just(POOL), "api_key": hostile_text(), "token": hostile_text()}
    )
    body = weighted(
        (3, st.one_of(hello, json_values()).map(encode)),
        (1, st.binary(max_size=24)),
    )
    head = st.builds(lambda kind, rest: bytes([kind]) + rest, st.sampled_from(KINDS), body)
    return st.lists(st.one_of(head, st.binary(max_size=16)), min_size=0, max_size=3)


def _addresses(target: Target) -> dict[str, str]:
    pool = target.server.admin.get(f"/v1/functions/pools/{POOL}").json()
    script = target.server.admin.get(f"/api/services/{POOL}/job-script").text
    worker = re.search(r"--broker'? '?(tcp://[^ ']+)", script)
    assert worker is not None, script
    return {"executors": pool["broker"], "workers": worker[1], "server_key": pool["broker_key"]}


def test_broker_frames(target: Target) -> None:
    fuzzer = target.fuzzer("zmq")
    addresses = _addresses(target)
    context = zmq.Context.instance()
    invoke = Request(
        "POST /v1/functions/{name}/invoke",
        "POST",
        f"/v1/functions/{FUNCTION}/invoke",
        (target.user_auth,),
        encode({"args": [1]}),
    )

    broken: list[Request] = []

    def send(port: str, frames: list[bytes]) -> None:
        if broken:
            return  # a dead broker stays dead: one finding is enough, and quick
        socket: Any = context.socket(zmq.DEALER)
        socket.setsockopt(zmq.LINGER, 0)
        pin_server(socket, addresses["server_key"])  # past Curve, to reach the broker's parsing
        socket.connect(addresses[port])
        try:
            if frames:
                socket.send_multipart(frames)
            socket.poll(50)  # let the broker read it (and answer, or not)
        finally:
            socket.close()
        request = Request(f"{port} port: frames", "ZMQ", addresses[port], (), b"|".join(frames))
        # The broker's fault shows in the next call.
        answer = exchange(target.port, invoke, timeout_s=SLOW_S)
        fuzzer.judge(request, answer)
        if answer.status != 200 or answer.elapsed_s > SLOW_S:
            if answer.status is not None and answer.status < 500:
                fuzzer.record(request, f"the next call answered {answer.status}")
            broken.append(request)

    @fuzz_settings(60)
    @given(st.sampled_from(["executors", "workers"]), _frames())
    @example("executors", [b"h" + encode({"pool": POOL, "api_key": "\u00e9"})])
    @example("executors", [b"h" + DEEP_JSON_ARRAY])
    @example("workers", [b"R{"])
    @example("executors", [])
    def probe(port: str, frames: list[bytes]) -> None:
        send(port, frames)

    probe()
    target.check()
