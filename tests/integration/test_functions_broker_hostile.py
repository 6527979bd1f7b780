"""A malformed message on either broker port is refused; the broker keeps serving everyone.

Both ports listen on every interface and read a message before any key or
token is checked: one bad frame used to end the broker's thread, and with it
every function of every tenant until a restart.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import zmq

from aifactory.functions.curve import pin_server

from .server import Server, start_server

POOL = "hostile-pool"
CODE = "def echo(x):\n    return x\n"


@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    data_dir = tmp_path_factory.mktemp("broker-hostile")
    code = data_dir / "code"
    code.mkdir()
    (code / "hostile_code.py").write_text(CODE)
    server = start_server(data_dir, local_cpus="1")
    admin = server.admin
    assert admin.post("/api/tenants", json={"name": "owner"}).status_code == 201
    spec = (
        f"kind: FunctionPool\nname: {POOL}\nworkers: 1\n"
        f'allocations: {{min: 1, max: 1}}\nenv: {{PYTHONPATH: "{code}"}}\n'
    )
    deployed = admin.post("/api/services", params={"tenant": "owner"}, content=spec)
    assert deployed.status_code == 201, deployed.text
    server.wait_ready(POOL)
    function = {"name": "echo", "target": "hostile_code:echo", "pool": POOL}
    assert admin.post("/api/functions", json=function).status_code == 201
    script = admin.get(f"/api/services/{POOL}/job-script").text
    worker = re.search(r"--broker'? '?(tcp://[^ ']+)", script)
    assert worker is not None, script
    status = admin.get(f"/v1/functions/pools/{POOL}").json()
    addresses = {
        "executors": status["broker"],
        "server_key": status["broker_key"],
        "workers": worker[1],
        "key": admin.post("/api/keys", json={"tenant": "owner"}).json()["key"],
    }
    yield server, addresses
    server.stop()


def _hello(key: Any) -> bytes:
    return b"h" + json.dumps({"pool": POOL, "api_key": key}).encode()


def _send(addresses: dict[str, str], port: str, *messages: list[bytes]) -> list[list[bytes]]:
    """Send ``messages`` on one connection to ``port``; return what came back within a second."""
    socket: Any = zmq.Context.instance().socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    pin_server(socket, addresses["server_key"])  # past Curve, to reach the broker's parsing
    socket.connect(addresses[port])
    answers = []
    try:
        for message in messages:
            socket.send_multipart(message)
            if socket.poll(1000):
                answers.append(socket.recv_multipart())
    finally:
        socket.close()
    return answers


def _still_serving(server: Server, key: str) -> None:
    response = httpx.post(
        f"{server.url}/v1/functions/echo/invoke",
        json={"args": [7]},
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    assert response.status_code == 200, (response.text, server.log_tail())
    assert response.json()["result"] == 7
    assert "functions broker loop failed" not in server.log_tail()


@pytest.mark.parametrize(
    "message",
    [
        [_hello("\u00e9")],
        [_hello(["not", "a", "string"])],
        [b'h{"api_key": "\\ud800"}'],
        [b"h{not json"],
        [b"h" + b"[" * 100_000],
        [b"h[1, 2]"],
        [b""],
    ],
    ids=["non-ascii-key", "list-key", "lone-surrogate", "not-json", "deep", "not-object", "empty"],
)
def test_executor_port_refuses_a_malformed_hello(
    factory: tuple[Server, dict[str, str]], message: list[bytes]
) -> None:
    server, addresses = factory
    answers = _send(addresses, "executors", message)
    for answer in answers:
        assert answer[0][:1] == b"N", answer
    _still_serving(server, addresses["key"])


@pytest.mark.parametrize(
    "message",
    [
        [b"s" + POOL.encode(), b"short"],
        [b"s" + POOL.encode(), struct.pack("<QdB", 1, 0.0, 0)],
        [b"s\xff\xfe", b""],
        [b"c" + b"\x01" * 9],
    ],
    ids=["short-task-header", "task-without-payload", "pool-not-utf8", "ragged-cancel"],
)
def test_executor_port_refuses_a_malformed_message_after_hello(
    factory: tuple[Server, dict[str, str]], message: list[bytes]
) -> None:
    server, addresses = factory
    welcome, *answers = _send(addresses, "executors", [_hello(addresses["key"])], message)
    assert welcome[0][:1] == b"w", welcome
    assert answers and answers[0][0][:1] == b"N", answers
    _still_serving(server, addresses["key"])


@pytest.mark.parametrize(
    "message",
    [[b"R{not json"], [b"R[]"], [b"r", b"short"], [b"G" + b"\x01" * 9], [b""]],
    ids=["not-json", "not-object", "results-of-a-stranger", "ragged-goodbye", "empty"],
)
def test_worker_port_survives_a_malformed_message(
    factory: tuple[Server, dict[str, str]], message: list[bytes]
) -> None:
    server, addresses = factory
    _send(addresses, "workers", message)
    _still_serving(server, addresses["key"])
