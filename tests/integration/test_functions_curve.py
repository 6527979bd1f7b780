"""CurveZMQ on the broker of `aifactory up`: arguments never cross in clear.

A local pool runs behind a real control plane. A raw TCP proxy sits between
an executor and the broker's client port and keeps every byte both ways; a
distinctive argument and its result must not appear in them. A client that
does not pin the broker's key, or pins another, gets no answer at all. The
broker's key is one the data directory already holds, chosen so its public
half begins with "-" (as one Z85 key in 85 does), which the worker's
command line must still pass.
"""

from __future__ import annotations

import socket
import stat
import sys
import threading
from collections.abc import Iterator
from typing import Any

import cloudpickle  # type: ignore[import-untyped]
import pytest
import zmq

from aifactory.errors import BrokerUnavailable
from aifactory.functions import Executor
from aifactory.functions import protocol as p
from aifactory.functions.curve import pin_server

from .server import Server, start_server

cloudpickle.register_pickle_by_value(sys.modules[__name__])

POOL = "sealed"
TENANT = "lab"
SECRET = "the-argument-nobody-may-read-4f1c2e"
SPEC = f"""
kind: FunctionPool
name: {POOL}
workers: 1
allocations: {{min: 1, max: 1}}
"""


def _awkward_keypair() -> tuple[bytes, bytes]:
    """A keypair whose public key begins with "-", which a command line must not mistake."""
    while True:
        public, secret = zmq.curve_keypair()
        if public.startswith(b"-"):
            return public, secret


@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    data_dir = tmp_path_factory.mktemp("curve")
    _public, secret = _awkward_keypair()
    (data_dir / "functions-broker.key").write_bytes(secret)  # kept across restarts
    srv = start_server(data_dir)
    srv.admin.post("/api/tenants", json={"name": TENANT})
    deployed = srv.admin.post("/api/services", params={"tenant": TENANT}, content=SPEC)
    assert deployed.status_code == 201, deployed.text
    srv.wait_ready(POOL)
    key = str(srv.admin.post("/api/keys", json={"tenant": TENANT}).json()["key"])
    yield srv, key
    srv.stop()


def _status(srv: Server) -> dict[str, Any]:
    return dict(srv.admin.get(f"/v1/functions/pools/{POOL}").json())


def shout(text: str) -> str:
    return text.upper() + "!"


class _Tap:
    """A TCP proxy on loopback that keeps every byte it forwards, both ways."""

    def __init__(self, target: str) -> None:
        host, port = target.removeprefix("tcp://").rsplit(":", 1)
        self._target = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"tcp://127.0.0.1:{self._listener.getsockname()[1]}"
        self.seen = bytearray()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._target)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                with self._lock:
                    self.seen += data
                sink.sendall(data)
        except OSError:
            pass
        finally:
            sink.close()

    def close(self) -> None:
        self._listener.close()


def test_a_call_crosses_the_broker_encrypted(factory: tuple[Server, str]) -> None:
    srv, key = factory
    status = _status(srv)
    tap = _Tap(status["broker"])
    try:
        with Executor(tap.address, POOL, api_key=key, server_key=status["broker_key"]) as ex:
            assert ex.submit(shout, SECRET).result(60) == SECRET.upper() + "!"
    finally:
        tap.close()
    assert len(tap.seen) > 1000, "the call went through the tap"
    for clear in (SECRET, SECRET.upper(), key, "shout"):
        assert clear.encode() not in tap.seen, f"{clear!r} crossed in clear"


def test_the_broker_keypair_is_kept_private_and_only_its_public_half_is_given(
    factory: tuple[Server, str],
) -> None:
    srv, _ = factory
    key_file = srv.data_dir / "functions-broker.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    secret = key_file.read_bytes().strip()
    public = _status(srv)["broker_key"]
    assert public == zmq.curve_public(secret).decode() and secret.decode() != public
    assert public.startswith("-"), "the key the data directory held is kept; its worker joined"
    script = srv.admin.get(f"/api/services/{POOL}/job-script").text
    assert public in script and secret.decode() not in script, "workers pin the public key only"


def _hello_answered(address: str, key: str, server_key: str | None) -> bool:
    sock: Any = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if server_key is not None:
        pin_server(sock, server_key)
    sock.connect(address)
    try:
        sock.send(p.encode_json(p.HELLO, {"pool": POOL, "api_key": key}))
        return bool(sock.poll(2000))
    finally:
        sock.close()


def test_a_client_without_the_brokers_key_never_gets_through(factory: tuple[Server, str]) -> None:
    srv, key = factory
    status = _status(srv)
    address, right = status["broker"], status["broker_key"]
    assert _hello_answered(address, key, right), "the pinned key gets an answer"
    assert not _hello_answered(address, key, None), "a plain client gets none"
    wrong = zmq.curve_keypair()[0].decode()
    assert not _hello_answered(address, key, wrong), "another server key gets none"
    with pytest.raises(BrokerUnavailable):
        Executor(address, POOL, api_key=key, server_key=wrong, connect_timeout_s=2)
