"""Replicas as real Pods: a real kube-apiserver, scheduler and kubelet running real containers.

The cluster is deploy/k8s-dev-cluster.sh (Kubernetes 1.20.2 built from
Debian's source; a kubelet with containerd + runc; images made locally from
busybox). Each test module gets its own namespace, deleted at the end.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from aifactory.backends import AllocationRequest, AllocationState, AllocationStatus
from aifactory.backends.kubernetes.backend import KubernetesBackend
from aifactory.backends.kubernetes.connection import KubernetesConnection
from aifactory.specs import Resources

from . import kube
from .kube import KUBECONFIG, NODE, STATE_DIR, fresh_namespace, kubectl, running_cluster
from .waiting import wait_until_async

IMAGE = "localhost/busybox:aifactory"

pytestmark = pytest.mark.kubernetes


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    yield from running_cluster(IMAGE)


@pytest.fixture(scope="module")
def namespace(cluster: None) -> Iterator[str]:
    yield from fresh_namespace("aif-test")


def make_backend(namespace: str, instance: str) -> Any:
    return KubernetesBackend(
        instance,
        KubernetesConnection(
            namespace=namespace, image=IMAGE, kubeconfig=KUBECONFIG, termination_grace_s=2
        ),
    )


def request(replica_id: str, script: str, **changes: Any) -> AllocationRequest:
    values: dict[str, Any] = {
        "replica_id": replica_id,
        "service": replica_id.rsplit("-", 1)[0],
        "argv": ("/bin/sh", "-c", script),
        "resources": Resources(cpus=1, memory_gib=0.125),
        "time_limit_s": None,
        "log_path": Path("/unused/on/kubernetes.log"),
        "env": {"GREETING": "hello from a pod"},
    }
    values.update(changes)
    return AllocationRequest(**values)


async def wait_for(
    backend: Any,
    handle: str,
    accept: Callable[[AllocationStatus], bool],
    timeout_s: float = 90,
) -> AllocationStatus:
    async def status() -> AllocationStatus:
        return (await backend.status([handle]))[handle]

    return await wait_until_async(status, accept, timeout_s=timeout_s, what=f"pod {handle}")


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


def test_a_replica_runs_in_a_real_container_and_cancel_deletes_it(namespace: str) -> None:
    async def scenario() -> None:
        backend = make_backend(namespace, secrets.token_hex(4))
        handle = await backend.submit(request("echo-a1b2c3", 'echo "$GREETING"; exec sleep 600'))
        status = await wait_for(backend, handle, lambda s: s.state is AllocationState.RUNNING)
        assert status.node == NODE
        # The kubelet ran it in a container: its output is in the container log.
        deadline = time.monotonic() + 60  # the kubelet's log API is slow on a loaded machine
        while "hello from a pod" not in (
            logs := kubectl("logs", "-n", namespace, handle, check=False)
        ):
            assert time.monotonic() < deadline, f"no container output: {logs!r}"
            await asyncio.sleep(0.5)
        assert kubectl("exec", "-n", namespace, handle, "--", "cat", "/proc/1/cmdline").startswith(
            "sleep"
        )
        await backend.cancel(handle)
        status = await wait_for(backend, handle, lambda s: s.state.finished)
        assert status.state is AllocationState.CANCELLED
        assert await backend.tagged() == {}
        deadline = time.monotonic() + 30
        while kubectl("get", "pod", "-n", namespace, handle, check=False):
            assert time.monotonic() < deadline, "the pod was not deleted"
            await asyncio.sleep(0.5)
        await backend.cancel(handle)  # gone already: a no-op
        await backend.aclose()

    run(scenario)


def test_exit_codes_and_time_limits_come_back(namespace: str) -> None:
    async def scenario() -> None:
        backend = make_backend(namespace, secrets.token_hex(4))
        failing = await backend.submit(request("fail-a1b2c3", "exit 3"))
        late = await backend.submit(request("late-a1b2c3", "exec sleep 600", time_limit_s=2))
        status = await wait_for(backend, failing, lambda s: s.state.finished)
        assert (status.state, status.exit_code, status.reason) == (
            AllocationState.FAILED,
            3,
            "exited with code 3",
        )
        status = await wait_for(backend, late, lambda s: s.state.finished)
        assert (status.state, status.reason) == (AllocationState.TIMEOUT, "time limit reached")
        await backend.cancel(failing)
        await backend.cancel(late)
        await backend.aclose()

    run(scenario)


def test_the_container_gets_its_argv_literally_and_its_own_ip(namespace: str) -> None:
    async def scenario() -> None:
        backend = make_backend(namespace, secrets.token_hex(4))
        hostile = "$(GREETING) $$ `id`; $(reboot)"
        handle = await backend.submit(
            request(
                "argv-a1b2c3",
                "",
                # The shell is the container's own, given the values as arguments.
                argv=("/bin/sh", "-c", 'echo "$1 $2 $NOTE"', "sh", backend.advertise_host, hostile),
                env={"GREETING": "not expanded", "NOTE": "$(GREETING)"},
            )
        )
        await wait_for(backend, handle, lambda s: s.state is AllocationState.COMPLETED)
        pod_ip = kubectl("get", "pod", "-n", namespace, handle, "-o", "jsonpath={.status.podIP}")
        assert pod_ip.startswith("10.88.")
        logs = kubectl("logs", "-n", namespace, handle).strip()
        assert logs == f"{pod_ip} {hostile} $(GREETING)"
        await backend.cancel(handle)
        await backend.aclose()

    run(scenario)


def test_a_pod_no_node_can_take_is_pending_with_the_reason(namespace: str) -> None:
    async def scenario() -> None:
        backend = make_backend(namespace, secrets.token_hex(4))
        handle = await backend.submit(
            request("gpu-a1b2c3", "exec sleep 600", resources=Resources(cpus=1, gpus=1))
        )
        status = await wait_for(backend, handle, lambda s: "Insufficient" in s.reason)
        assert status.state is AllocationState.PENDING
        assert "no node can take it yet" in status.reason
        assert "nvidia.com/gpu" in status.reason
        await backend.cancel(handle)
        await backend.aclose()

    run(scenario)


def test_a_new_control_plane_adopts_its_pods_by_label(namespace: str) -> None:
    async def scenario() -> None:
        instance = secrets.token_hex(4)
        first = make_backend(namespace, instance)
        handle = await first.submit(request("adopt-a1b2c3", "exec sleep 600"))
        await wait_for(first, handle, lambda s: s.state is AllocationState.RUNNING)
        await first.aclose()

        restarted = make_backend(namespace, instance)
        assert await restarted.tagged() == {"adopt-a1b2c3": handle}
        assert (await restarted.status([handle]))[handle].state is AllocationState.RUNNING
        stranger = make_backend(namespace, secrets.token_hex(4))
        assert await stranger.tagged() == {}
        await restarted.cancel(handle)
        await wait_for(restarted, handle, lambda s: s.state is AllocationState.CANCELLED)
        for backend in (restarted, stranger):
            await backend.aclose()

    run(scenario)


def test_updates_are_retried_when_the_pod_changed_meanwhile(namespace: str) -> None:
    async def scenario() -> None:
        backend = make_backend(namespace, secrets.token_hex(4))
        handle = await backend.submit(request("conflict-a1b2c3", "exec sleep 600"))
        calls = 0

        def change(pod: dict[str, Any]) -> bool:
            nonlocal calls
            calls += 1
            if calls == 1:
                # Someone else writes the pod between our read and our write.
                kubectl("annotate", "-n", namespace, "pod", handle, "other-writer=was-here")
            pod["metadata"].setdefault("annotations", {})["aifactory.io/note"] = "ours"
            return True

        written = await backend.update_pod(handle, change)
        assert calls == 2  # the first write got 409 Conflict, the second landed
        assert written is not None
        annotations = written["metadata"]["annotations"]
        assert annotations["other-writer"] == "was-here"
        assert annotations["aifactory.io/note"] == "ours"
        await backend.cancel(handle)
        await backend.aclose()

    run(scenario)


def test_the_watch_reconnects_after_the_api_server_restarts(namespace: str) -> None:
    async def scenario() -> None:
        backend = make_backend(namespace, secrets.token_hex(4))
        handle = await backend.submit(request("restart-a1b2c3", "exec sleep 600"))
        await wait_for(backend, handle, lambda s: s.state is AllocationState.RUNNING)

        pid = int((STATE_DIR / "run" / "kube-apiserver.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        up = await asyncio.to_thread(kube.script, "up")
        assert up.returncode == 0, up.stderr
        assert int((STATE_DIR / "run" / "kube-apiserver.pid").read_text()) != pid

        # A change made after the restart reaches the cache through the watch.
        kubectl("delete", "pod", "-n", namespace, handle, "--grace-period=1", "--wait=false")
        status = await wait_for(backend, handle, lambda s: s.state.finished, timeout_s=120)
        assert status.state is AllocationState.FAILED
        assert "deleted outside aifactory" in status.reason
        # And the backend keeps working against the new API server.
        again = await backend.submit(request("restart-d4e5f6", "exec sleep 600"))
        await wait_for(backend, again, lambda s: s.state is AllocationState.RUNNING, timeout_s=120)
        await backend.cancel(again)
        await backend.aclose()

    run(scenario)
