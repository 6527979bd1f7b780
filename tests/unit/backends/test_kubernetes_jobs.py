"""Batch jobs on Kubernetes without a cluster: the Jobs a spec becomes, what their states mean."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from aifactory.backends import AllocationState, HostMount, KubernetesJobRunner
from aifactory.backends.kubernetes.connection import KubernetesConnection
from aifactory.backends.kubernetes.job_set import job_task, set_name
from aifactory.errors import BackendError, SpecError
from aifactory.specs import load_job


def runner(instance: str = "ab12cd34") -> KubernetesJobRunner:
    # No such kubeconfig: rendering must not need a cluster or even a config.
    return KubernetesJobRunner(
        instance,
        KubernetesConnection(
            namespace="batch",
            image="localhost/aif:1",
            kubeconfig="/nonexistent/kubeconfig",
            host_paths=["/opt/venv"],
        ),
    )


def rendered(job_id: str = "train-0a1b2c", **fields: Any) -> list[dict[str, Any]]:
    document = {"name": "train", "command": ["python", "train.py"], "backend": "kubernetes"}
    documents = yaml.safe_load_all(runner().render(load_job({**document, **fields}), job_id))
    return list(documents)


def env_of(manifest: dict[str, Any]) -> dict[str, str]:
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    return {item["name"]: item["value"] for item in container["env"]}


def test_a_plain_job_is_one_batch_job_that_is_never_retried() -> None:
    (manifest,) = rendered(
        resources={"cpus": 2, "memory_gib": 1.5, "gpus": 1},
        time_limit="90s",
        workdir="/data/run",
        env={"SEED": "7"},
        kubernetes={
            "image": "registry.example/train:2",
            "nodeSelector": {"gpu": "a100"},
            "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        },
    )
    assert (manifest["apiVersion"], manifest["kind"]) == ("batch/v1", "Job")
    metadata = manifest["metadata"]
    assert (metadata["name"], metadata["namespace"]) == ("train-0a1b2c-0", "batch")
    labels = {
        "aifactory.io/instance": "ab12cd34",
        "aifactory.io/job": "train-0a1b2c",
        "aifactory.io/index": "0",
        "aifactory.io/job-name": "train",
    }
    assert metadata["labels"] == labels
    assert metadata["annotations"] == {"aifactory.io/job-id": "train-0a1b2c"}
    assert manifest["spec"]["backoffLimit"] == 0
    assert "ttlSecondsAfterFinished" not in manifest["spec"]
    template = manifest["spec"]["template"]
    assert template["metadata"]["labels"] == labels
    pod = template["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["activeDeadlineSeconds"] == 90
    assert pod["nodeSelector"] == {"gpu": "a100"}
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["volumes"] == [{"name": "host-0", "hostPath": {"path": "/opt/venv"}}]

    assert "affinity" not in pod
    (container,) = pod["containers"]
    assert container["image"] == "registry.example/train:2"
    assert container["command"] == ["python", "train.py"]
    assert container["workingDir"] == "/data/run"
    amounts = {"cpu": "2", "memory": "1536Mi", "nvidia.com/gpu": "1"}
    assert container["resources"] == {"requests": amounts, "limits": amounts}
    assert env_of(manifest) == {
        "AIFACTORY_JOB_ID": "train-0a1b2c",
        "AIFACTORY_TASK_COUNT": "1",
        "AIFACTORY_TASK_INDEX": "0",
        "JOB_COMPLETION_INDEX": "0",
        "SEED": "7",
    }


def test_a_job_without_time_limit_gets_the_sites_walltime() -> None:
    (manifest,) = rendered()
    assert manifest["spec"]["template"]["spec"]["activeDeadlineSeconds"] == 24 * 3600
    shorter = KubernetesJobRunner(
        "ab12cd34", KubernetesConnection(kubeconfig="/nonexistent"), default_time_limit_s=600
    )
    job = load_job({"name": "train", "command": ["true"], "backend": "kubernetes"})
    (manifest,) = yaml.safe_load_all(shorter.render(job, "train-0a1b2c"))
    assert manifest["spec"]["template"]["spec"]["activeDeadlineSeconds"] == 600


def test_the_image_defaults_to_the_runners() -> None:
    (manifest,) = rendered()
    assert manifest["spec"]["template"]["spec"]["containers"][0]["image"] == "localhost/aif:1"


def test_nodes_and_arrays_become_one_job_per_index() -> None:
    pair = rendered(nodes=2)
    assert [m["metadata"]["name"] for m in pair] == ["train-0a1b2c-0", "train-0a1b2c-1"]
    assert [env_of(m)["AIFACTORY_TASK_INDEX"] for m in pair] == ["0", "1"]
    assert {env_of(m)["AIFACTORY_TASK_COUNT"] for m in pair} == {"2"}
    spread = pair[0]["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert "preferredDuringSchedulingIgnoredDuringExecution" in spread
    array = rendered(array="1-5:2,8")
    assert [m["metadata"]["labels"]["aifactory.io/index"] for m in array] == ["1", "3", "5", "8"]
    assert [env_of(m)["JOB_COMPLETION_INDEX"] for m in array] == ["1", "3", "5", "8"]


def test_hostile_argv_and_env_reach_the_container_literally() -> None:
    hostile = ["$(touch /tmp/pwned)", "`id`", "; rm -rf ~", "$(HOME)", "a\nb"]
    (manifest,) = rendered(command=["sh", "-c", 'echo "$@"', "sh", *hostile], env={"E": "$(X)"})
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    # No shell between; `$` doubled so the kubelet's $(NAME) expansion gives it back.
    assert container["command"] == ["sh", "-c", 'echo "$$@"', "sh"] + [
        h.replace("$", "$$") for h in hostile
    ]
    assert "args" not in container
    assert env_of(manifest)["E"] == "$$(X)"


def test_long_names_are_cut_so_job_names_stay_label_values() -> None:
    name = "a" * 63
    assert set_name(f"{name}-0a1b2c") == "a" * 20 + "-0a1b2c"
    assert set_name("ab-cdefghijklmnopqrst-uv-0a1b2c") == "ab-cdefghijklmnopqrs-0a1b2c"


def test_a_bad_instance_id_is_refused() -> None:
    with pytest.raises(BackendError, match="instance id"):
        runner("bad id!").render(
            load_job({"name": "a", "command": "true", "backend": "kubernetes"}), "a-0a1b2c"
        )


def batch_job(*conditions: dict[str, str], start: str = "2025-01-01T10:00:00Z") -> dict[str, Any]:
    return {
        "metadata": {"name": "train-0a1b2c-0"},
        "status": {"startTime": start, "conditions": list(conditions)},
    }


def pod(phase: str, state: dict[str, Any], reason: str = "") -> dict[str, Any]:
    status: dict[str, Any] = {
        "phase": phase,
        "containerStatuses": [{"name": "replica", "state": state}],
    }
    if reason:
        status["reason"] = reason
    return {
        "metadata": {"name": "train-0a1b2c-0-xyz"},
        "spec": {"nodeName": "n1"},
        "status": status,
    }


TERMINATED = {"startedAt": "2025-01-01T10:00:05Z", "finishedAt": "2025-01-01T10:01:05Z"}
COMPLETE = {"type": "Complete", "status": "True", "lastTransitionTime": "2025-01-01T10:01:06Z"}
FAILED = {
    "type": "Failed",
    "status": "True",
    "reason": "BackoffLimitExceeded",
    "message": "Job has reached the specified backoff limit",
    "lastTransitionTime": "2025-01-01T10:01:06Z",
}


def test_a_completed_task_has_its_containers_times() -> None:
    done = pod("Succeeded", {"terminated": {"exitCode": 0, **TERMINATED}})
    task = job_task(None, batch_job(COMPLETE), done)
    assert (task.state, task.exit_code, task.slurm_state, task.nodes) == (
        AllocationState.COMPLETED,
        0,
        "Complete",
        "n1",
    )
    assert task.ended_at is not None and task.started_at is not None
    assert task.ended_at - task.started_at == 60
    assert task.slurm_job_id == "train-0a1b2c-0"


def test_a_failed_task_has_its_exit_code() -> None:
    failed = pod("Failed", {"terminated": {"exitCode": 3, "reason": "Error", **TERMINATED}})
    task = job_task(2, batch_job(FAILED), failed)
    assert (task.task, task.state, task.exit_code, task.reason) == (
        2,
        AllocationState.FAILED,
        3,
        "exited with code 3",
    )


def test_a_pod_past_its_deadline_is_a_timeout() -> None:
    late = pod("Failed", {"terminated": {"exitCode": 137, **TERMINATED}}, reason="DeadlineExceeded")
    task = job_task(None, batch_job(FAILED), late)
    assert (task.state, task.reason) == (AllocationState.TIMEOUT, "time limit reached")
    deadline = {**FAILED, "reason": "DeadlineExceeded", "message": "Job was active longer"}
    assert job_task(None, batch_job(deadline), None).state is AllocationState.TIMEOUT


def test_a_job_whose_pod_is_gone_ends_as_its_condition_says() -> None:
    task = job_task(None, batch_job(COMPLETE), None)
    assert (task.state, task.exit_code) == (AllocationState.COMPLETED, 0)
    assert task.started_at == pytest.approx(task.ended_at - 66)  # Job start to condition
    task = job_task(None, batch_job(FAILED), None)
    assert (task.state, task.reason) == (AllocationState.FAILED, FAILED["message"])


def test_pending_running_and_missing_tasks() -> None:
    assert job_task(0, batch_job(), None).state is AllocationState.PENDING
    waiting = pod("Pending", {"waiting": {"reason": "ContainerCreating"}})
    task = job_task(0, batch_job(), waiting)
    assert (task.state, task.reason, task.started_at) == (
        AllocationState.PENDING,
        "starting the container",
        None,
    )
    running = job_task(
        0, batch_job(), pod("Running", {"running": {"startedAt": TERMINATED["startedAt"]}})
    )
    assert (running.state, running.reason, running.ended_at) == (AllocationState.RUNNING, "", None)
    assert running.started_at is not None
    missing = job_task(1, None, None)
    assert (missing.state, missing.reason) == (
        AllocationState.FAILED,
        "its Kubernetes Job was deleted outside aifactory",
    )


def test_cancelling_keeps_a_finished_task_as_it_ended() -> None:
    running = job_task(
        0, batch_job(), pod("Running", {"running": {"startedAt": TERMINATED["startedAt"]}})
    )
    cancelled = running.cancelled(at=1e9)
    assert (cancelled.state, cancelled.reason, cancelled.ended_at) == (
        AllocationState.CANCELLED,
        "cancelled",
        1e9,
    )
    done = job_task(0, batch_job(COMPLETE), None)
    assert done.cancelled(at=1e9) == done


def test_a_pod_just_past_its_deadline_ends_at_the_deadline() -> None:
    # The kubelet marks the pod Failed before its container is killed: no
    # finish time, no Job condition yet, and the container still "running".
    late = pod(
        "Failed", {"running": {"startedAt": "2025-01-01T10:00:05Z"}}, reason="DeadlineExceeded"
    )
    late["status"]["startTime"] = "2025-01-01T10:00:04Z"
    late["spec"]["activeDeadlineSeconds"] = 3
    task = job_task(None, batch_job(), late)
    assert task.state is AllocationState.TIMEOUT
    assert task.started_at is not None and task.ended_at is not None
    assert task.ended_at - task.started_at == 2  # the container started 1 s after the pod


def test_a_jobs_own_mounts_are_at_their_host_paths_the_folder_alone_writable() -> None:
    job = load_job({"name": "shard", "command": ["python", "-V"], "backend": "kubernetes"})
    mounts = (
        HostMount(Path("/data/batches-a/files/f.jsonl"), file=True),
        HostMount(Path("/data/identities/alice/batches/b1"), writable=True),
    )
    (manifest,) = yaml.safe_load_all(runner().render(job, "shard-0a1b2c", mounts=mounts))
    pod = manifest["spec"]["template"]["spec"]
    assert pod["volumes"] == [
        {"name": "host-0", "hostPath": {"path": "/opt/venv"}},
        {"name": "mount-0", "hostPath": {"path": "/data/batches-a/files/f.jsonl", "type": "File"}},
        {
            "name": "mount-1",
            "hostPath": {"path": "/data/identities/alice/batches/b1", "type": "Directory"},
        },
    ]
    (container,) = pod["containers"]
    assert container["volumeMounts"] == [
        {"name": "host-0", "mountPath": "/opt/venv", "readOnly": True},
        {"name": "mount-0", "mountPath": "/data/batches-a/files/f.jsonl", "readOnly": True},
        {"name": "mount-1", "mountPath": "/data/identities/alice/batches/b1", "readOnly": False},
    ]


def test_a_pods_priority_class_is_the_runners_to_give_never_the_specs() -> None:
    job = load_job({"name": "shard", "command": ["python", "-V"], "backend": "kubernetes"})
    (manifest,) = yaml.safe_load_all(runner().render(job, "shard-0a1b2c", priority_class="low"))
    assert manifest["spec"]["template"]["spec"]["priorityClassName"] == "low"
    (plain,) = rendered()
    assert "priorityClassName" not in plain["spec"]["template"]["spec"]
    for field in ("priorityClassName", "priority_class_name", "priority"):
        with pytest.raises(SpecError, match=f"kubernetes.{field}: Extra inputs are not permitted"):
            load_job({"name": "j", "command": ["ls"], "kubernetes": {field: "urgent"}})
