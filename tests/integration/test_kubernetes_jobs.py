"""Batch jobs as real batch/v1 Jobs on the dev cluster (deploy/k8s-dev-cluster.sh, Kubernetes 1.20).

The jobs facade is driven directly (and once through its HTTP routes
in-process) against a real API server, Job controller, scheduler and kubelet
running busybox containers. Each module gets its own namespace; each test
its own control-plane instance, whose Jobs are deleted at its end.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from aifactory.backends import KubernetesJobRunner
from aifactory.backends.kubernetes.connection import KubernetesConnection
from aifactory.config import load_settings
from aifactory.errors import BadRequest, NotFound
from aifactory.jobs import JobsManager
from aifactory.specs import load_job
from aifactory.store import Store
from aifactory.tenancy import Principal, UsageLedger

from .jobs_http import jobs_client
from .kube import KUBECONFIG, NODE, fresh_namespace, kubectl, running_cluster

IMAGE = "localhost/busybox:aifactory"
FINISHED = {"completed", "failed", "cancelled", "timeout", "unknown"}

pytestmark = pytest.mark.kubernetes


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    yield from running_cluster(IMAGE)


@pytest.fixture(scope="module")
def namespace(cluster: None) -> Iterator[str]:
    yield from fresh_namespace("aif-jobs")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    settings = load_settings(data_dir=tmp_path / "aifactory")
    store = Store(settings.effective_database_url)
    store.create_schema()
    yield store
    store.close()


@pytest.fixture
def ledger(store: Store) -> UsageLedger:
    return UsageLedger(store)


@pytest.fixture
def manager(
    tmp_path: Path, namespace: str, store: Store, ledger: UsageLedger
) -> Iterator[JobsManager]:
    instance = f"kj-{secrets.token_hex(3)}"
    settings = load_settings(data_dir=tmp_path / "aifactory")
    runner = KubernetesJobRunner(
        instance,
        KubernetesConnection(
            namespace=namespace, image=IMAGE, kubeconfig=KUBECONFIG, termination_grace_s=2
        ),
    )
    jobs = JobsManager(settings, store, instance, ledger=ledger, runners={"kubernetes": runner})
    yield jobs
    asyncio.run(jobs.stop())
    kubectl("delete", "jobs", "-n", namespace, "-l", f"aifactory.io/instance={instance}")


def spec(**fields: Any) -> dict[str, Any]:
    return {"backend": "kubernetes", "resources": {"cpus": 1, "memory_gib": 0.125}, **fields}


async def wait(
    manager: JobsManager, job_id: str, states: set[str] = FINISHED, timeout_s: float = 120
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        view = await manager.describe(job_id)
        if view["state"] in states:
            return view
        assert time.monotonic() < deadline, f"job {job_id} never reached {states}: {view}"
        await asyncio.sleep(0.3)


def run_to_end(manager: JobsManager, document: dict[str, Any]) -> dict[str, Any]:
    async def scenario() -> dict[str, Any]:
        view = await manager.submit(load_job(document), None)
        return await wait(manager, view["id"])

    return asyncio.run(scenario())


def in_cluster(namespace: str, job: dict[str, Any], kind: str = "jobs") -> list[dict[str, Any]]:
    selector = f"aifactory.io/job={job['slurm_job_id']}"
    items: list[dict[str, Any]] = json.loads(
        kubectl("get", kind, "-n", namespace, "-l", selector, "-o", "json")
    )["items"]
    return items


def test_a_job_runs_and_its_output_is_in_the_logs(manager: JobsManager, namespace: str) -> None:
    view = run_to_end(
        manager,
        spec(
            name="hello",
            command=["sh", "-c", 'echo "hello $AIFACTORY_TASK_INDEX/$AIFACTORY_TASK_COUNT"'],
        ),
    )
    assert (view["state"], view["exit_code"], view["nodes"]) == ("completed", 0, NODE), view
    assert [(t["task"], t["state"], t["slurm_state"]) for t in view["tasks"]] == [
        (None, "completed", "Complete")
    ]
    assert asyncio.run(manager.logs(view["id"])) == "hello 0/1\n"
    # The finished Job stays (with its labels and no retries) until it is cancelled.
    [batch_job] = in_cluster(namespace, view)
    assert batch_job["spec"]["backoffLimit"] == 0
    assert batch_job["metadata"]["annotations"]["aifactory.io/job-id"] == view["id"]
    with pytest.raises(BadRequest):
        asyncio.run(manager.logs(view["id"], 0))


def test_a_failing_job_is_failed_with_its_exit_code(manager: JobsManager) -> None:
    view = run_to_end(manager, spec(name="fails", command="sh -c 'echo bye; exit 3'"))
    assert (view["state"], view["exit_code"]) == ("failed", 3), view
    assert view["tasks"][0]["reason"] == "exited with code 3"
    assert asyncio.run(manager.logs("fails")) == "bye\n"


def test_the_time_limit_ends_a_job_as_timeout(manager: JobsManager) -> None:
    view = run_to_end(
        manager, spec(name="late", command="sh -c 'echo started; exec sleep 600'", time_limit=3)
    )
    assert (view["state"], view["reason"]) == ("timeout", "time limit reached"), view
    assert view["started_at"] and view["ended_at"]
    assert asyncio.run(manager.logs(view["id"])) == "started\n"  # the pod kept its log


def test_cancel_deletes_the_jobs_and_their_pods(manager: JobsManager, namespace: str) -> None:
    async def scenario() -> dict[str, Any]:
        view = await manager.submit(load_job(spec(name="sleeper", command="sleep 300")), None)
        running = await wait(manager, view["id"], {"running"})
        assert running["started_at"] and running["nodes"] == NODE
        return await manager.cancel(view["id"])

    view = asyncio.run(scenario())
    assert (view["state"], view["tasks"][0]["state"]) == ("cancelled", "cancelled"), view
    assert view["ended_at"]
    deadline = time.monotonic() + 60
    while in_cluster(namespace, view, "jobs,pods"):
        assert time.monotonic() < deadline, in_cluster(namespace, view, "jobs,pods")
        time.sleep(0.5)
    # Cancelling again is harmless; the job stays as it ended.
    assert asyncio.run(manager.cancel(view["id"]))["state"] == "cancelled"


def test_a_two_node_set_and_an_array_run_every_index_and_are_charged(
    manager: JobsManager, ledger: UsageLedger, namespace: str
) -> None:
    tenant = manager.store.ensure_tenant("physics")
    report = 'echo "index $AIFACTORY_TASK_INDEX=$JOB_COMPLETION_INDEX of $AIFACTORY_TASK_COUNT"'

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        nodes = await manager.submit(
            load_job(spec(name="pair", command=["sh", "-c", report + "; sleep 2"], nodes=2)),
            tenant,
        )
        array = await manager.submit(
            load_job(spec(name="arr", command=["sh", "-c", report], array="1,3")), None
        )
        return await wait(manager, nodes["id"]), await wait(manager, array["id"])

    pair, array = asyncio.run(scenario())
    assert pair["state"] == "completed", pair
    assert [(t["task"], t["state"], t["exit_code"]) for t in pair["tasks"]] == [
        (0, "completed", 0),
        (1, "completed", 0),
    ]
    assert asyncio.run(manager.logs(pair["id"])) == "index 0=0 of 2\nindex 1=1 of 2\n"
    assert asyncio.run(manager.logs(pair["id"], 1)) == "index 1=1 of 2\n"
    assert array["state"] == "completed", array
    assert [t["task"] for t in array["tasks"]] == [1, 3]
    assert asyncio.run(manager.logs(array["id"], 3)) == "index 3=3 of 2\n"
    with pytest.raises(NotFound):
        asyncio.run(manager.logs(array["id"], 2))
    # The ledger gets the node-hours the pods' containers ran, one node each.
    seconds = 0.0
    for pod in in_cluster(namespace, pair, "pods"):
        [container] = pod["status"]["containerStatuses"]
        ran = container["state"]["terminated"]
        seconds += (_time(ran["finishedAt"]) - _time(ran["startedAt"])).total_seconds()
    assert seconds >= 4
    asyncio.run(ledger.flush())
    [usage] = manager.store.usage_report(tenant, None, "kind")
    assert usage["node_hours"] == pytest.approx(seconds / 3600)
    assert usage["seconds"] == pytest.approx(seconds)


def test_hostile_argv_and_env_stay_inert(manager: JobsManager) -> None:
    hostile = [
        "$(touch /tmp/pwned)",
        "`touch /tmp/pwned`",
        "; touch /tmp/pwned",
        "$(AIFACTORY_JOB_ID)",  # the kubelet's own expansion
        "$$(HOME)",
        "' ; touch /tmp/pwned ; '",
    ]
    evil = "$(touch /tmp/pwned) $(HOME)\nsecond line"
    script = 'printf "[%s]\\n" "$@" "$EVIL"; test -e /tmp/pwned && echo PWNED || echo clean'
    view = run_to_end(
        manager,
        spec(name="hostile", command=["sh", "-c", script, "sh", *hostile], env={"EVIL": evil}),
    )
    assert view["state"] == "completed", view
    log = asyncio.run(manager.logs(view["id"]))
    assert log == "".join(f"[{value}]\n" for value in [*hostile, evil]) + "clean\n"


def test_http_routes_submit_show_and_dry_run(manager: JobsManager) -> None:
    principal = Principal(key_id=1, tenant_id=None, tenant="admin", role="admin")

    body = "kind: Job\nname: web\nbackend: kubernetes\ncommand: [echo, hi]\n"

    async def scenario() -> None:
        async with jobs_client(manager, principal) as http:
            dry = await http.post("/api/jobs", content=body, params={"dry_run": "1"})
            assert (
                dry.status_code == 200 and "kind: Job" in dry.text and "backoffLimit: 0" in dry.text
            )
            created = await http.post("/api/jobs", content=body)
            assert created.status_code == 201, created.text
            job_id = created.json()["id"]
            for _ in range(400):
                shown = (await http.get(f"/api/jobs/{job_id}")).json()
                if shown["state"] in FINISHED:
                    break
                await asyncio.sleep(0.3)
            assert shown["state"] == "completed", shown
            assert (await http.get(f"/api/jobs/{job_id}/logs")).text == "hi\n"
            refused = await http.post("/api/jobs", content=body + "tasks_per_node: 2\n")
            assert refused.status_code == 400
            assert "tasks_per_node" in refused.json()["error"]["message"]

    asyncio.run(scenario())


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)
