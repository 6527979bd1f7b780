"""Fuzz requests on the wire: sent byte for byte, timed, judged, and tallied.

``http.client`` rather than httpx because a fuzzer must send exactly what it
drew: httpx normalises paths (``..``), and builds whole bodies in memory.
"""

from __future__ import annotations

import http.client
import re
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

# "No response over a few seconds", with room for a 2-core CI machine.
SLOW_S = 5.0
_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Request:
    """One HTTP request as it goes on the wire.

    ``body`` may be an iterable of chunks: they are streamed, never joined,
    after the ``content-length`` given in ``headers``.
    """

    label: str  # the route it exercises, e.g. "POST /api/tenants": findings group by it
    method: str
    target: str  # path and query, already percent-encoded
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | Iterable[bytes] = b""

    def describe(self, limit: int = 100) -> str:
        """A short, printable account of the request for a finding."""
        body = self.body if isinstance(self.body, bytes) else b"<streamed>"
        headers = ", ".join(f"{k}: {v[:40]}" for k, v in self.headers[:6])
        if len(self.headers) > 6:
            headers += f", ... ({len(self.headers)} headers)"
        text = f"{self.method} {self.target[:120]} [{headers}] {body[:limit]!r}"
        return text if len(body) <= limit else f"{text} ... ({len(body)} bytes)"


@dataclass(frozen=True)
class Outcome:
    """What came back: ``status`` is None when the server closed without answering."""

    status: int | None
    elapsed_s: float
    headers: dict[str, str]
    body: bytes


def exchange(port: int, request: Request, timeout_s: float = _TIMEOUT_S) -> Outcome:
    """Send ``request`` to 127.0.0.1:``port`` on a fresh connection; read the whole answer."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    started = time.perf_counter()
    try:
        try:
            names = {name.lower() for name, _ in request.headers}
            connection.putrequest(
                request.method,
                request.target,
                skip_host="host" in names,
                skip_accept_encoding=True,
            )
            for name, value in request.headers:
                connection.putheader(name, value)
            if isinstance(request.body, bytes):
                sized = request.body or request.method in ("POST", "PUT")
                if sized and "content-length" not in names:
                    connection.putheader("Content-Length", str(len(request.body)))
                connection.endheaders(request.body or None)
            else:
                connection.endheaders()
                for chunk in request.body:
                    connection.send(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading early: its answer may still be there to read
        try:
            response = connection.getresponse()
            body = response.read()
        except (TimeoutError, ConnectionError, http.client.HTTPException):
            return Outcome(None, time.perf_counter() - started, {}, b"")
        headers = {name.lower(): value for name, value in response.getheaders()}
        return Outcome(response.status, time.perf_counter() - started, headers, body)
    finally:
        connection.close()


# Which answers a test accepts beyond the rule (below 500, never slow): e.g. a
# function that raised is a 500 by design, and a flood of headers may be cut off.
Allowance = Callable[[Request, Outcome], bool]


def nothing_else(_request: Request, _outcome: Outcome) -> bool:
    """The default allowance: only the rule itself."""
    return False


def backpressure(_request: Request, outcome: Outcome) -> bool:
    """A 503 that says when to retry is the server shedding load on purpose."""
    return outcome.status == 503 and "retry-after" in outcome.headers


@dataclass
class Tally:
    """Counts of one category: requests sent, 5xx answers (but by design), the slowest answer."""

    sent: int = 0
    server_errors: int = 0
    slowest_s: float = 0.0
    slowest: str = ""
    answers: Counter[tuple[str, int | None]] = field(default_factory=Counter)  # (label, status)


@dataclass
class Finding:
    """One distinct way the server failed, with its first example."""

    category: str
    label: str
    problem: str
    example: str
    where: str
    count: int = 1

    def __str__(self) -> str:
        return (
            f"[{self.category}] {self.label}: {self.problem} (x{self.count})\n"
            f"    example: {self.example}\n    server: {self.where}"
        )


class Fuzzer:
    """Sends fuzz requests to one server port and keeps what went wrong.

    Args:
        port: The port served.
        log: The server's log file: a 5xx is matched to the traceback it logged.
        category: The tally the requests count in.
        tallies: Shared by every fuzzer of a run, for the summary.
    """

    def __init__(self, port: int, log: Path, category: str, tallies: dict[str, Tally]) -> None:
        self.port = port
        self._log = log
        self.category = category
        self.tally = tallies.setdefault(category, Tally())
        self.findings: dict[tuple[str, str, str], Finding] = {}

    def send(self, request: Request, allowed: Allowance = nothing_else) -> Outcome:
        """Send ``request`` and judge the answer."""
        offset = self._log.stat().st_size
        outcome = exchange(self.port, request)
        self.judge(request, outcome, allowed, offset)
        return outcome

    def judge(
        self,
        request: Request,
        outcome: Outcome,
        allowed: Allowance = nothing_else,
        offset: int = -1,
    ) -> None:
        """Count ``outcome``; keep a finding unless it keeps the rule or is allowed.

        ``offset`` is where the server's log stood before the request: a 5xx is
        matched to the traceback written since.
        """
        tally = self.tally
        tally.sent += 1
        tally.answers[request.label, outcome.status] += 1
        by_design = allowed(request, outcome)
        if outcome.status is not None and outcome.status >= 500 and not by_design:
            tally.server_errors += 1
        if outcome.elapsed_s > tally.slowest_s:
            tally.slowest_s, tally.slowest = outcome.elapsed_s, request.label
        problem = _problem(outcome)
        if problem and not by_design:
            where = _traceback_line(self._read_log(offset)) if offset >= 0 else ""
            self.record(request, problem, where or _excerpt(outcome))

    def log_offset(self) -> int:
        """Where the server's log ends now."""
        return self._log.stat().st_size

    def record(self, request: Request, problem: str, where: str = "") -> None:
        """Keep a finding (once per label, problem and place in the server's code)."""
        key = (request.label, problem, where)
        if key in self.findings:
            self.findings[key].count += 1
        else:
            self.findings[key] = Finding(
                self.category, request.label, problem, request.describe(), where
            )

    def _read_log(self, offset: int) -> str:
        time.sleep(0.05)  # the traceback is written just after the answer
        with self._log.open("rb") as log:
            log.seek(offset)
            return log.read(1_000_000).decode(errors="replace")


def _problem(outcome: Outcome) -> str:
    if outcome.status is None and outcome.elapsed_s > SLOW_S:
        return f"no answer for more than {SLOW_S:.0f} s"
    if outcome.status is None:
        return "connection closed without an answer"
    if outcome.status >= 500:
        return f"answered {outcome.status}"
    if outcome.elapsed_s > SLOW_S:
        return f"answered {outcome.status} after more than {SLOW_S:.0f} s"
    return ""


def _excerpt(outcome: Outcome) -> str:
    return outcome.body[:200].decode(errors="replace")


_FRAME = re.compile(r'File "[^"]*/(aifactory/[^"]+)", line (\d+), in (\S+)')


def _traceback_line(log: str) -> str:
    """The innermost frame of our code and the exception of the last traceback in ``log``."""
    start = log.rfind("Traceback (most recent call last):")
    if start < 0:
        return ""
    frames, error = [], ""
    for line in log[start:].splitlines()[1:]:
        frame = _FRAME.search(line)
        if frame:
            frames.append(f"{frame[1]}:{frame[2]} in {frame[3]}")
        elif line and not line[0].isspace():
            error = line.strip()
            break
    return f"{frames[-1] if frames else '(no frame of ours)'}: {error[:200]}"


def flood(port: int, head: bytes, filler: int, wait_s: float) -> Outcome:
    """Send ``head`` then ``filler`` bytes of ``a`` on a raw socket, never ending the request.

    Returns once the server answers or closes, or ``wait_s`` after the last
    byte went out (status None, and then elapsed beyond ``wait_s``).
    """
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=_TIMEOUT_S) as connection:
        try:
            connection.sendall(head)
            block = b"a" * (1024 * 1024)
            for offset in range(0, filler, len(block)):
                connection.sendall(block[: filler - offset])
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server hung up while we sent: it refused in time
        connection.settimeout(wait_s)
        try:
            answer = connection.recv(65536)
        except TimeoutError:
            return Outcome(None, time.perf_counter() - started, {}, b"")
        except ConnectionError:
            answer = b""
    elapsed = time.perf_counter() - started
    status = re.match(rb"HTTP/1\.[01] (\d{3})", answer)
    return Outcome(int(status[1]) if status else None, elapsed, {}, answer)
