"""One real `aifactory up` for the fuzz suite, its vitals, and the run's tallies.

The server has what the fuzzers need to get past the first checks: the chat
and embeddings engines, a warm function pool with one named function, a
tenant ``fz`` with a user key, an S3 pair and a bucket holding one object.
Every fuzz test ends with ``target.check()``: no finding, the server
healthy, its event loop never stalled, its memory back near the baseline.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import pytest
from hypothesis import HealthCheck, Phase, settings

from ..server import REPO, Server, processes_mentioning, start_server
from .wire import SLOW_S, Fuzzer, Request, Tally, exchange

# The event loop serves /healthz between any two awaits: a longer wait is a stall
# (1 s seen under load from other jobs on a 2-core machine; hostile inputs stalled 5-11 s).
STALL_S = 3.0
# Memory the server may keep after a test (caches, allocator slack), and hold during one.
KEPT_MIB = 96
PEAK_MIB = 192
TENANT = "fz"
BUCKET = "fz-bucket"
SEED_KEY = "seed.txt"
POOL = "fz-pool"
FUNCTION = "fz-echo"
# What the fuzzers must never delete, rename or roll out: the suite stands on them.
PROTECTED = frozenset({"chat", "embeddings", POOL, FUNCTION, TENANT, BUCKET})

TALLIES: dict[str, Tally] = {}
STALLS: dict[str, float] = {}

_POOL_SPEC = """
kind: FunctionPool
name: {name}
workers: 1
allocations: {{min: 1, max: 1}}
env: {{PYTHONPATH: "{code}"}}
"""
_CODE = "def echo(*args, **kwargs):\n    return {'args': list(args), 'kwargs': kwargs}\n"


def fuzz_settings(max_examples: int) -> settings:
    """Bounded and reproducible: the same examples every run, no shrinking against a live server.

    Failures are collected by the fuzzer rather than raised, so shrinking
    would only cost requests.
    """
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )


class Vitals:
    """The server's /healthz latency, polled from a thread, and its memory from /proc."""

    def __init__(self, pid: int, port: int) -> None:
        self._pid = pid
        self._port = port
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self.longest_stall_s = 0.0
        self.baseline_mib = 0.0

    def start(self) -> None:
        self.baseline_mib = self.rss_mib()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def reset(self) -> None:
        """Start a new measurement: longest stall and peak memory from now on."""
        self.longest_stall_s = 0.0
        Path(f"/proc/{self._pid}/clear_refs").write_text("5")  # resets VmHWM

    def rss_mib(self) -> float:
        return self._status_kib("VmRSS") / 1024

    def peak_mib(self) -> float:
        return self._status_kib("VmHWM") / 1024

    def _status_kib(self, field_name: str) -> int:
        for line in Path(f"/proc/{self._pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
        raise AssertionError(f"no {field_name} for the server")

    def _poll(self) -> None:
        probe = Request("GET /healthz", "GET", "/healthz")
        while not self._stop.wait(0.2):
            took = exchange(self._port, probe).elapsed_s
            self.longest_stall_s = max(self.longest_stall_s, took)


@dataclass
class Target:
    """The fuzzed server and what the fuzzers may use on it."""

    server: Server
    vitals: Vitals
    user_key: str
    s3_credentials: tuple[str, str]
    replica_ids: list[str]
    fuzzers: list[Fuzzer] = field(default_factory=list)
    test: str = ""

    @property
    def port(self) -> int:
        return int(self.server.url.rsplit(":", 1)[1])

    @property
    def s3_port(self) -> int:
        return int(self.server.objects_url.rsplit(":", 1)[1])

    @property
    def admin_auth(self) -> tuple[str, str]:
        return ("Authorization", f"Bearer {self.server.admin_key}")

    @property
    def user_auth(self) -> tuple[str, str]:
        return ("Authorization", f"Bearer {self.user_key}")

    def fuzzer(self, category: str, s3: bool = False) -> Fuzzer:
        """A fuzzer of this test, counted in ``category``."""
        made = Fuzzer(
            self.s3_port if s3 else self.port,
            self.server.data_dir / "server.out",
            category,
            TALLIES,
        )
        self.fuzzers.append(made)
        return made

    def begin(self, test: str) -> None:
        self.test = test
        self.fuzzers.clear()
        self.vitals.reset()

    def check(self) -> None:
        """Fail with every finding of this test's fuzzers, and any harm to the server."""
        problems = [str(f) for fuzzer in self.fuzzers for f in fuzzer.findings.values()]
        vitals = self.vitals
        STALLS[self.test] = vitals.longest_stall_s
        if vitals.longest_stall_s > STALL_S:
            problems.append(f"/healthz waited {vitals.longest_stall_s:.1f} s: the loop stalled")
        peak, kept = vitals.peak_mib(), vitals.rss_mib()
        if peak > vitals.baseline_mib + PEAK_MIB:
            problems.append(
                f"memory peaked at {peak:.0f} MiB (baseline {vitals.baseline_mib:.0f} MiB)"
            )
        if kept > vitals.baseline_mib + KEPT_MIB:
            problems.append(f"memory stayed at {kept:.0f} MiB (baseline {vitals.baseline_mib:.0f})")
        health = exchange(self.port, Request("GET /healthz", "GET", "/healthz"))
        if health.status != 200 or health.elapsed_s > SLOW_S:
            problems.append(f"/healthz answered {health.status} in {health.elapsed_s:.1f} s")
        for key in (self.user_auth, self.admin_auth):
            if exchange(self.port, Request("", "GET", "/v1/models", (key,))).status != 200:
                problems.append(f"the suite's own key {key[1][:12]}... stopped working")
        if self.server.process.poll() is not None:
            problems.append(f"the server exited:\n{self.server.log_tail()}")
        assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems)


@pytest.fixture(scope="package")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    data_dir = tmp_path_factory.mktemp("fuzz")
    code = data_dir / "code"
    code.mkdir()
    (code / "fz_code.py").write_text(_CODE)
    server = start_server(data_dir, local_cpus="3")
    admin = server.admin
    assert admin.post("/api/tenants", json={"name": TENANT}).status_code == 201
    for name in ("chat", "embeddings"):
        server.deploy((REPO / "examples" / f"{name}.yaml").read_text())
    pool = admin.post(
        "/api/services", params={"tenant": TENANT}, content=_POOL_SPEC.format(name=POOL, code=code)
    )
    assert pool.status_code == 201, pool.text
    issued = admin.post("/api/keys", json={"tenant": TENANT}).json()
    assert admin.post("/api/buckets", json={"name": BUCKET, "tenant": TENANT}).status_code == 201
    s3 = boto3.client(
        "s3",
        endpoint_url=server.objects_url,
        aws_access_key_id=issued["s3_access_key_id"],
        aws_secret_access_key=issued["s3_secret_access_key"],
        region_name="us-east-1",
    )
    s3.put_object(Bucket=BUCKET, Key=SEED_KEY, Body=b"0123456789" * 100)
    for name in ("chat", "embeddings", POOL):
        server.wait_ready(name)
    deployed = admin.post(
        "/api/functions", json={"name": FUNCTION, "target": "fz_code:echo", "pool": POOL}
    )
    assert deployed.status_code == 201, deployed.text
    replicas = admin.get("/api/services/chat/replicas").json()["replicas"]
    vitals = Vitals(server.process.pid, int(server.url.rsplit(":", 1)[1]))
    target = Target(
        server,
        vitals,
        issued["key"],
        (issued["s3_access_key_id"], issued["s3_secret_access_key"]),
        [replica["id"] for replica in replicas],
    )
    _warm_up(target)
    vitals.start()
    yield target
    vitals.stop()
    # uvicorn re-raises SIGTERM after a graceful shutdown.
    assert server.stop() in (0, -signal.SIGTERM), server.log_tail()
    assert processes_mentioning(str(data_dir)) == []


@pytest.fixture
def target(fuzz_server: Target, request: pytest.FixtureRequest) -> Target:
    """The fuzzed server, its measurements started afresh for this test."""
    fuzz_server.begin(request.node.name)
    return fuzz_server


def _warm_up(target: Target) -> None:
    """One ordinary request of each kind, so the baseline has everything imported and cached."""
    chat = b'{"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}'
    for request in (
        Request("", "POST", "/v1/chat/completions", (target.user_auth,), chat),
        Request(
            "", "POST", "/v1/embeddings", (target.user_auth,), b'{"model":"embed","input":"a"}'
        ),
        Request("", "POST", f"/v1/functions/{FUNCTION}/invoke", (target.user_auth,), b"{}"),
        Request("", "GET", "/api/services", (target.admin_auth,)),
    ):
        outcome = exchange(target.port, request)
        assert outcome.status == 200, (request.target, outcome.status, outcome.body[:300])
    time.sleep(0.5)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not TALLIES:
        return
    write = terminalreporter.write_line
    terminalreporter.section("fuzz")
    write(f"{'category':<10} {'requests':>9} {'5xx':>5} {'slowest':>9}  slowest request")
    for category, tally in sorted(TALLIES.items()):
        write(
            f"{category:<10} {tally.sent:>9} {tally.server_errors:>5} "
            f"{tally.slowest_s:>8.2f}s  {tally.slowest}"
        )
    if terminalreporter.config.option.verbose > 0:
        for category, tally in sorted(TALLIES.items()):
            for (label, status), count in sorted(tally.answers.items(), key=str):
                write(f"  {category:<8} {label:<50} {status!s:>5} x{count}")
    if STALLS:
        test, stall = max(STALLS.items(), key=lambda item: item[1])
        write(f"longest event-loop stall (/healthz wait): {stall:.2f} s, during {test}")
