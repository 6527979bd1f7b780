"""Function pools run by `aifactory up`, on the local backend and on real Slurm.

The pool's workers run inside allocations the reconciler starts, connect out
to the broker in the control plane, and the pool scales from and to zero
with its queue. The SDK finds the broker through the control plane. The
pool is deployed for tenant ``lab``, whose key submits code to it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle  # type: ignore[import-untyped]
import httpx
import pytest

from aifactory.errors import Unauthorized
from aifactory.functions import Executor, RemoteTraceback
from unix_users import open_folder

from .server import Server, free_port, start_server
from .slurm import MISSING, our_jobs
from .waiting import wait_until

cloudpickle.register_pickle_by_value(sys.modules[__name__])

POOL = "pool"
TENANT = "lab"
USER_MODULE = """
def scale(values, factor=2):
    return [v * factor for v in values]

def fail(message):
    raise ValueError(message)
"""


def deploy_pool(server: Server, spec: str) -> None:
    """Deploy the pool for ``TENANT``, as `aif deploy pool.yaml --tenant lab` does."""
    server.admin.post("/api/tenants", json={"name": TENANT})
    response = server.admin.post("/api/services", params={"tenant": TENANT}, content=spec)
    assert response.status_code == 201, response.text


def pool_spec(backend: str, module_dir: Path) -> str:
    return f"""
kind: FunctionPool
name: {POOL}
backend: {backend}
workers: 2
allocations: {{min: 0, max: 1}}
idle_to_zero: 3s
scale_down_window: 1s
resources: {{cpus: 1, memory_gib: 1}}
env: {{PYTHONPATH: "{module_dir}"}}
"""


@pytest.fixture(scope="module", params=["local", "slurm"])
def pool_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    backend = request.param
    if backend == "slurm" and MISSING:
        pytest.skip(MISSING)
    data_dir = tmp_path_factory.mktemp(f"pools-{backend}")
    module_dir = data_dir / "code"
    module_dir.mkdir()
    (module_dir / "usercode.py").write_text(USER_MODULE)
    srv = start_server(data_dir, functions_heartbeat_s="0.5")
    deploy_pool(srv, pool_spec(backend, module_dir))
    yield srv
    srv.stop()
    if backend == "slurm":
        assert our_jobs(srv.data_dir) == {}, "shutdown cancels every pool allocation"


@pytest.fixture(scope="module")
def user_key(pool_server: Server) -> str:
    return str(pool_server.admin.post("/api/keys", json={"tenant": TENANT}).json()["key"])


@pytest.fixture
def executor(
    pool_server: Server, user_key: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Executor]:
    monkeypatch.setenv("AIFACTORY_API_URL", pool_server.url)
    monkeypatch.setenv("AIFACTORY_API_KEY", user_key)
    with Executor(pool=POOL, timeout_s=120) as ex:
        yield ex


def pool_status(server: Server) -> dict[str, Any]:
    response = server.admin.get(f"/v1/functions/pools/{POOL}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def wait_for(server: Server, check: Any, what: str, timeout_s: float = 90) -> dict[str, Any]:
    return wait_until(
        lambda: pool_status(server), check, timeout_s=timeout_s, what=f"the pool: {what}",
        context=server.log_tail,
    )  # fmt: skip


def square(x: int) -> int:
    return x * x


def test_map_over_1000_items_from_zero_keeps_order(pool_server: Server, executor: Executor) -> None:
    assert pool_status(pool_server)["replicas"]["by_state"] == {}, "starts at zero"
    results = list(executor.map(square, range(1000), chunksize=25))
    assert results == [x * x for x in range(1000)]
    status = pool_status(pool_server)
    assert status["workers"] == {"connected": 1, "slots": 2, "running": 0}
    assert status["broker"].startswith("tcp://127.0.0.1:")
    assert status["scaling"][0]["reason"] == "request waiting at zero replicas"
    deadline = time.monotonic() + 10
    while True:  # the broker charges every heartbeat; the ledger flushes every second
        rows = pool_server.admin.get("/api/usage", params={"tenant": "lab", "by": "kind"}).json()
        charged = [r for r in rows["usage"] if r["kind"] == "function"]
        if charged and charged[0]["calls"] >= 40:
            break
        assert time.monotonic() < deadline, rows
        time.sleep(0.3)
    assert charged[0]["calls"] == 40, "1000 items in chunks of 25 are 40 tasks"
    assert charged[0]["seconds"] > 0


def test_remote_traceback_reaches_the_caller(executor: Executor) -> None:
    def explode(depth: int) -> None:
        if depth == 0:
            raise KeyError("missing-thing")
        explode(depth - 1)

    future = executor.submit(explode, 2)
    with pytest.raises(KeyError, match="missing-thing") as caught:
        future.result(timeout=120)
    remote = caught.value.__cause__
    assert isinstance(remote, RemoteTraceback)
    assert str(remote).count("in explode") == 3


def report_and_sleep(marker: str, seconds: float) -> tuple[int, int]:
    path = Path(marker)
    attempt = len(path.read_text().splitlines()) + 1 if path.exists() else 1
    with path.open("a") as handle:
        handle.write(f"{os.getppid()}\n")
    if attempt == 1:
        time.sleep(seconds)
    return attempt, os.getppid()


def test_worker_killed_mid_task_is_retried_and_succeeds(
    pool_server: Server, executor: Executor, tmp_path: Path
) -> None:
    # The task runs as the pool's Unix user: it writes its marker in a folder open to it.
    marker = open_folder(tmp_path) / "attempts"
    future = executor.submit(report_and_sleep, str(marker), 60.0)
    deadline = time.monotonic() + 90
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    manager_pid = int(marker.read_text().split()[0])
    os.kill(manager_pid, signal.SIGKILL)  # the worker manager: its task process dies with it
    attempt, second_manager = future.result(timeout=120)
    assert attempt == 2 and second_manager != manager_pid
    wait_for(pool_server, lambda s: s["workers"]["connected"] == 1, "got a new worker")


def test_idle_pool_scales_to_zero_and_comes_back(pool_server: Server, executor: Executor) -> None:
    assert executor.submit(square, 7).result(timeout=120) == 49
    wait_for(
        pool_server,
        lambda s: s["replicas"]["wanted"] == 0 and not s["replicas"]["by_state"],
        "scaled to zero",
    )
    assert executor.submit(square, 8).result(timeout=120) == 64
    reasons = [d["reason"] for d in pool_status(pool_server)["scaling"]]
    assert any(r.startswith("idle for") for r in reasons), reasons


def test_named_function_over_http(pool_server: Server, user_key: str) -> None:
    # The administrator deploys it on lab's behalf: it is lab's function, not shared.
    deployed = pool_server.cli("functions", "deploy", "scale", "usercode:scale", "--pool", POOL)
    assert "scale: created" in deployed.stdout
    url = f"{pool_server.url}/v1/functions/scale/invoke"
    with httpx.Client(timeout=120) as http:
        anonymous = http.post(url, json={"args": [[1, 2]]})
        assert anonymous.status_code == 401
        assert anonymous.json()["error"]["code"] == "invalid_api_key"
        auth = {"Authorization": f"Bearer {user_key}"}
        done = http.post(url, json={"args": [[1, 2]], "kwargs": {"factor": 10}}, headers=auth)
        assert done.status_code == 200, done.text
        assert done.json()["result"] == [10, 20] and done.json()["status"] == "succeeded"

        queued = http.post(url + "?async=true", json={"args": [[3]]}, headers=auth)
        assert queued.status_code == 202
        call_url = f"{pool_server.url}/v1/functions/calls/{queued.json()['id']}"
        deadline = time.monotonic() + 60
        while (call := http.get(call_url, headers=auth).json())["status"] == "queued":
            assert time.monotonic() < deadline, call
            time.sleep(0.1)
        assert call["result"] == [6]

        other = pool_server.admin.post("/api/keys", json={"tenant": "other"}).json()["key"]
        hidden = http.get(call_url, headers={"Authorization": f"Bearer {other}"})
        assert hidden.status_code == 404, "another tenant cannot read the call"
        bad = http.post(url, json={"args": "not a list"}, headers=auth)
        assert bad.status_code == 400 and "`args`" in bad.json()["error"]["message"]


def test_a_raising_named_function_returns_its_traceback(pool_server: Server) -> None:
    pool_server.cli("functions", "deploy", "fail", "usercode:fail", "--pool", POOL)
    invoke_fail = f"{pool_server.url}/v1/functions/fail/invoke"
    unshared = pool_server.admin.post(invoke_fail, json={"args": ["bad input"]})
    assert unshared.status_code == 403, "the administrator's tenant is not lab"
    assert "belongs to tenant 'lab', which has not shared it" in unshared.json()["error"]["message"]
    for name, target in (("fail", "usercode:fail"), ("scale", "usercode:scale")):
        out = pool_server.cli("functions", "deploy", name, target, "--pool", POOL, "--shared")
        assert f"{name}: shared" in out.stdout or f"{name}: created" in out.stdout
    response = pool_server.admin.post(invoke_fail, json={"args": ["bad input"]})
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["type"] == "builtins.ValueError" and error["message"] == "bad input"
    assert 'usercode.py", line 6, in fail' in error["traceback"]
    cli = pool_server.cli("functions", "invoke", "fail", "--args", '["from cli"]', check=False)
    assert cli.returncode == 1 and "from cli" in cli.stdout
    assert (
        pool_server.cli("functions", "invoke", "scale", "--args", "[[4]]").stdout.strip() == "[8]"
    )
    calls = pool_server.cli("functions", "calls", "--function", "fail").stdout
    assert calls.count("failed") == 2
    assert POOL in pool_server.cli("functions", "pools").stdout


def test_the_broker_refuses_a_bad_key(pool_server: Server) -> None:
    status = pool_status(pool_server)
    with pytest.raises(Unauthorized, match="refused"):
        Executor(
            status["broker"],
            POOL,
            api_key="aif-not-a-key",
            server_key=status["broker_key"],
            connect_timeout_s=10,
        )


def test_a_forged_worker_is_refused(pool_server: Server, tmp_path: Path) -> None:
    log = (pool_server.data_dir / "server.out").read_text()
    workers_at = log.split("functions broker: workers at ")[1].split(",")[0]
    token = tmp_path / "token"
    token.write_text("forged")
    forged = subprocess.run(
        [
            sys.executable, "-m", "aifactory.functions.worker",
            "--broker", workers_at, "--pool", POOL,
            f"--broker-key={pool_status(pool_server)['broker_key']}",
            "--replica-id", f"{POOL}-abcdef", "--token-file", str(token),
        ],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert forged.returncode == 3
    assert "is not one this control plane started" in forged.stderr


def test_a_restarted_control_plane_adopts_its_slurm_pool(tmp_path: Path) -> None:
    if MISSING:
        pytest.skip(MISSING)
    # Workers reconnect to the broker's address, so the restart keeps its ports.
    settings = {
        "default_backend": "slurm",
        "functions_heartbeat_s": "0.5",
        "functions_worker_port": str(free_port()),
        "functions_client_port": str(free_port()),
    }
    data_dir = tmp_path / "adopt"
    (tmp_path / "code").mkdir()
    srv = start_server(data_dir, **settings)
    deploy_pool(srv, pool_spec("slurm", tmp_path / "code").replace("min: 0", "min: 1"))
    srv.wait_ready(POOL)
    key = srv.admin.post("/api/keys", json={"tenant": TENANT}).json()["key"]
    status = pool_status(srv)
    broker, server_key = status["broker"], status["broker_key"]
    with Executor(broker, POOL, api_key=key, server_key=server_key) as ex:
        assert ex.submit(square, 3).result(timeout=60) == 9
    jobs = set(our_jobs(data_dir))
    srv.process.kill()
    srv.process.wait()

    again = start_server(data_dir, port=int(srv.url.rsplit(":", 1)[1]), **settings)
    try:
        wait_for(again, lambda s: s["workers"]["connected"] == 1, "readmitted its worker", 30)
        with Executor(broker, POOL, api_key=key, server_key=server_key) as ex:
            assert ex.submit(square, 4).result(timeout=60) == 16
        (replica,) = [
            r
            for r in again.admin.get(f"/api/services/{POOL}/replicas").json()["replicas"]
            if r["state"] == "ready"
        ]
        assert replica["handle"] in jobs and set(our_jobs(data_dir)) == jobs, "no new job"
    finally:
        again.stop()
    assert our_jobs(data_dir) == {}
