r"""A batch shard's worker: runs inside a batch job, on whatever node it landed.

It starts the model's engine on a free local port, waits until it is
healthy, and sends it every request of its shard that is not done yet,
appending each answer to the shard's output file as one line, flushed and
fsynced before the next is counted done. A shard stopped at any point
(preempted, timed out, cancelled, its node lost) therefore resumes where it
stopped: a rerun reads the custom_ids already in its output (a torn last
line is cut off) and skips them, so no line is lost or written twice.
Only the standard library is used (nodes may have little installed)::

    python -m aifactory.batches.worker --input FILE --output FILE \
        --shard I --shards N --concurrency C -- ENGINE ARGV WITH {host} {port}

The shard is the input's lines ``i`` with ``i % N == I``. An answer the
engine gave (any HTTP status) is written; a request the engine never
answered (it died, the job is stopping), or failed with a server error while
the job was stopping, is not, and is retried by the next run.
Exit status: 0 when every line of the shard is done, 1 otherwise.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from types import FrameType
from typing import Any

from aifactory.engines import die_with_parent, fill_address
from aifactory.launcher import free_port

_HEALTH_TIMEOUT_S = 600.0
_REQUEST_TIMEOUT_S = 600.0
_STOP_GRACE_S = 5.0
_HOST = "127.0.0.1"


def done_ids(output: Path) -> set[str]:
    """The custom_ids already answered in ``output``; a torn last line is cut off first."""
    if not output.exists():
        return set()
    with output.open("r+b") as handle:
        data = handle.read()
        whole = data.rfind(b"\n") + 1
        if whole != len(data):
            handle.truncate(whole)
            handle.flush()
            os.fsync(handle.fileno())
    return {json.loads(line)["custom_id"] for line in data[:whole].splitlines() if line.strip()}


def shard_lines(input_file: Path, shard: int, shards: int) -> Iterator[dict[str, Any]]:
    """The requests of one shard, in input order."""
    with input_file.open("rb") as handle:
        for index, line in enumerate(handle):
            if index % shards == shard and line.strip():
                yield json.loads(line)


class Appender:
    """Appends answer lines to the shard's output, each durable before the next.

    It holds an exclusive lock on the output for its life: a run started
    while an earlier one is still finishing (the control plane restarted
    and lost track of it) waits for it, and only then reads what is done.
    """

    def __init__(self, output: Path) -> None:
        self._fd = os.open(output, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        self._lock = threading.Lock()

    def append(self, record: dict[str, Any]) -> None:
        """Write one line and fsync it."""
        data = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        with self._lock:
            os.write(self._fd, data)
            os.fsync(self._fd)

    def close(self) -> None:
        """Close the file (which lets the lock go)."""
        os.close(self._fd)


def answer(base_url: str, request: dict[str, Any]) -> dict[str, Any]:
    """One output line: the engine's answer to ``request`` (any HTTP status).

    Raises:
        OSError: the engine did not answer (the request stays undone).
    """
    url = base_url + request["url"]
    body = json.dumps(request["body"]).encode()
    http = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(http, timeout=_REQUEST_TIMEOUT_S) as response:
            status, payload = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, payload = exc.code, exc.read()
    return record_of(request, status, payload)


def record_of(request: dict[str, Any], status: int, payload: bytes) -> dict[str, Any]:
    """The output line of ``request`` the engine answered with ``status`` and ``payload``."""
    try:
        parsed: Any = json.loads(payload)
    except ValueError:
        parsed = {"error": {"message": payload.decode(errors="replace")[:2000]}}
    return {
        "id": "batch_req_" + secrets.token_hex(12),
        "custom_id": request["custom_id"],
        "response": {
            "status_code": status,
            "request_id": "req_" + secrets.token_hex(12),
            "body": parsed,
        },
        "error": None,
    }


def wait_healthy(base_url: str, engine: subprocess.Popen[bytes], stop: threading.Event) -> bool:
    """Whether the engine answered ``/health`` before it died, the job stopped, or the timeout."""
    deadline = time.monotonic() + _HEALTH_TIMEOUT_S
    while time.monotonic() < deadline and not stop.is_set():
        if engine.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(base_url + "/health", timeout=5) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        stop.wait(0.5)
    return False


def run(args: argparse.Namespace, stop: threading.Event) -> int:
    """Answer the shard's undone requests; 0 when all are done."""
    appender = Appender(args.output)
    try:
        done = done_ids(args.output)
        todo = [
            r
            for r in shard_lines(args.input, args.shard, args.shards)
            if r["custom_id"] not in done
        ]
        print(
            f"worker: shard {args.shard}/{args.shards}: {len(done)} done, {len(todo)} to do",
            flush=True,
        )
        answered = _answer_all(args, todo, appender, stop) if todo else 0
    finally:
        appender.close()
    print(f"worker: answered {answered} of {len(todo)}", flush=True)
    return 0 if answered == len(todo) else 1


def _answer_all(
    args: argparse.Namespace, todo: list[dict[str, Any]], appender: Appender, stop: threading.Event
) -> int:
    """Start the engine, send it ``todo`` ``args.concurrency`` at a time; how many it answered."""
    port = free_port(_HOST)
    engine = subprocess.Popen(
        fill_address(tuple(args.engine), _HOST, port), preexec_fn=die_with_parent
    )
    base_url = f"http://{_HOST}:{port}"
    started = time.monotonic()
    answered = 0
    try:
        if not wait_healthy(base_url, engine, stop):
            print("worker: the engine never became healthy", flush=True)
            return 0
        print(f"worker: engine ready after {time.monotonic() - started:.1f}s", flush=True)
        pending = iter(todo)
        with ThreadPoolExecutor(args.concurrency) as pool:
            running: set[Future[dict[str, Any]]] = set()
            while not stop.is_set():
                while len(running) < args.concurrency and (request := next(pending, None)):
                    running.add(pool.submit(answer, base_url, request))
                if not running:
                    break
                finished, running = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    try:
                        answered += _keep(appender, future.result(), stop)
                    except OSError as exc:
                        print(f"worker: the engine did not answer ({exc}); stopping", flush=True)
                        stop.set()
            finished, unfinished = wait(running, timeout=_STOP_GRACE_S)
            for future in finished:
                if future.exception() is None:
                    answered += _keep(appender, future.result(), stop)
            if unfinished:
                # The engine may never answer them (a preempted one hears the signal
                # too): stopping it ends their connections, so their threads end.
                _stop_engine(engine)
    finally:
        _stop_engine(engine)
    return answered


def _keep(appender: Appender, record: dict[str, Any], stop: threading.Event) -> int:
    """Write ``record``; 1 when written. A server error while stopping is not an answer.

    A preempted job's engine hears the signal too and may fail what it has in
    flight as it shuts down: such a line is left for the next run.
    """
    if stop.is_set() and record["response"]["status_code"] >= 500:
        return 0
    appender.append(record)
    return 1


def _stop_engine(engine: subprocess.Popen[bytes]) -> None:
    engine.terminate()
    try:
        engine.wait(_STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        engine.kill()
        engine.wait()


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse the worker's command line."""
    parser = argparse.ArgumentParser(prog="aifactory.batches.worker")
    parser.add_argument("--input", required=True, type=Path)
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--shard", type=int, default=0)
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("engine", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.engine and args.engine[0] == "--":
        args.engine = args.engine[1:]
    if not args.engine:
        parser.error("give the engine command after --")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run one shard; stop sending on SIGTERM/SIGINT (what is answered stays written)."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    die_with_parent()
    stop = threading.Event()

    def stopping(signum: int, _frame: FrameType | None) -> None:
        print(f"worker: got {signal.Signals(signum).name}; finishing what is in flight", flush=True)
        stop.set()

    signal.signal(signal.SIGTERM, stopping)
    signal.signal(signal.SIGINT, stopping)
    return run(args, stop)


if __name__ == "__main__":
    sys.exit(main())
