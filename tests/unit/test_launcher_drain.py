"""A lent replica's launcher on SIGTERM: reports the preemption, drains, then stops its engine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ENGINE = textwrap.dedent(
    """
    import signal, sys, time
    log = open(sys.argv[1], "a", buffering=1)
    signal.signal(signal.SIGTERM, lambda *_: (log.write("SIGTERM\\n"), sys.exit(0)))
    signal.signal(signal.SIGINT, lambda *_: (log.write("SIGINT\\n"), sys.exit(0)))
    log.write("serving\\n")
    while True:
        time.sleep(0.05)
    """
)


class ControlPlane(BaseHTTPRequestHandler):
    """Registration, then the drain route answering 2, 1, 0 requests in flight."""

    calls: list[tuple[str, str]] = []
    in_flight = [2, 1, 0]

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.calls.append((self.path.rsplit("/", 1)[1], self.headers["Authorization"]))
        answer: dict[str, object] = {"result": "registered"}
        if self.path.endswith("/preempted"):
            answer = {"in_flight": self.in_flight.pop(0) if len(self.in_flight) > 1 else 0}
        body = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        return


@pytest.fixture
def control_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), ControlPlane)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _launch(tmp_path: Path, control_url: str, *lent: str) -> tuple[subprocess.Popen[bytes], Path]:
    (tmp_path / "engine.py").write_text(ENGINE)
    (tmp_path / "r.token").write_text("one-time")
    (tmp_path / "r.drain-token").write_text("drain-secret")
    log = tmp_path / "engine.log"
    launcher = subprocess.Popen(
        [
            sys.executable, "-m", "aifactory.launcher", "--control-url", control_url,
            "--replica-id", "chat-abc123", "--token-file", str(tmp_path / "r.token"),
            "--advertise-host", "127.0.0.1", *lent,
            "--", sys.executable, str(tmp_path / "engine.py"), str(log), "{port}",
        ],
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while "serving" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, "the engine did not start"
        time.sleep(0.05)
    while len(ControlPlane.calls) < 1:
        time.sleep(0.05)
    return launcher, log


def test_sigterm_to_every_process_drains_before_the_engine_stops(
    tmp_path: Path, control_url: str
) -> None:
    ControlPlane.calls, ControlPlane.in_flight = [], [2, 1, 0]
    launcher, log = _launch(
        tmp_path, control_url, "--drain-token-file", str(tmp_path / "r.drain-token"),
        "--drain-within", "20",
    )  # fmt: skip
    assert not (tmp_path / "r.drain-token").exists(), "the drain token is read once, deleted"
    began = time.monotonic()
    os.killpg(launcher.pid, signal.SIGTERM)  # as Slurm signals a preempted job
    assert launcher.wait(timeout=20) == 0
    assert time.monotonic() - began < 15
    # The engine never saw SIGTERM (blocked), served until the drain ended, then got SIGINT.
    assert log.read_text().splitlines() == ["serving", "SIGINT"]
    assert ControlPlane.calls[0] == ("register", "Bearer one-time")
    drains = ControlPlane.calls[1:]
    assert drains == [("preempted", "Bearer drain-secret")] * 3


def test_an_unlent_launcher_stops_its_engine_at_once(tmp_path: Path, control_url: str) -> None:
    ControlPlane.calls = []
    launcher, log = _launch(tmp_path, control_url)
    launcher.send_signal(signal.SIGTERM)
    assert launcher.wait(timeout=15) == 0
    assert log.read_text().splitlines() == ["serving", "SIGTERM"]
    assert [name for name, _ in ControlPlane.calls] == ["register"]
