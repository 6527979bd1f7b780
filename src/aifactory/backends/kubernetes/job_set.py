"""A batch job as an indexed set of ``batch/v1`` Jobs: its manifests and its tasks' states.

Pure functions, no API calls (``jobs.py`` makes those). One Job
per task index: the array indexes of an array job, ``0 … nodes-1`` of a
multi-node job, ``0`` of a plain one. Each Job runs one pod, and every Job
and pod carries the labels that find its set (``aifactory.io/instance``,
``aifactory.io/job``) and its index (``aifactory.io/index``); the job id
itself is an annotation, since it can be longer than a label value. Each
pod runs as the job's identity, as a replica's does (``identity``).

The pod learns its place from the environment, under the names an Indexed
Job would use where Kubernetes has one::

    AIFACTORY_JOB_ID      the control plane's job id
    AIFACTORY_TASK_INDEX  the array index, or the node index 0 … nodes-1
    JOB_COMPLETION_INDEX  the same (Kubernetes' name in Indexed Jobs)
    AIFACTORY_TASK_COUNT  how many tasks the set has

The command and environment values reach the container as they are: there
is no shell, and every ``$`` is doubled (``literal``) so that the kubelet's
``$(NAME)`` expansion leaves them alone.

A task's state comes from its Job's final condition (``Complete``/``Failed``)
and its newest pod, read as ``pod_status`` reads a replica's pod: a finished
pod says how the task ended (exit code, time limit, out of memory); the
Job's condition covers a pod that is already gone.
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from typing import Any

from aifactory.backends.base import (
    DEFAULT_TIME_LIMIT_S,
    AllocationState,
    AllocationStatus,
    HostMount,
    JobTask,
)
from aifactory.backends.kubernetes.identity import confine
from aifactory.backends.kubernetes.pod import (
    CONTAINER_NAME,
    INSTANCE_LABEL,
    LABEL_PREFIX,
    container_status,
    literal,
    placement,
    pod_status,
    resources,
    volumes,
)
from aifactory.errors import BackendError
from aifactory.identity import Identity
from aifactory.specs import LABEL_VALUE, Job

JOB_LABEL = f"{LABEL_PREFIX}/job"
INDEX_LABEL = f"{LABEL_PREFIX}/index"
JOB_NAME_LABEL = f"{LABEL_PREFIX}/job-name"
JOB_ID_ANNOTATION = f"{LABEL_PREFIX}/job-id"


def set_name(job_id: str) -> str:
    """The set's name (its Jobs are ``<set>-<index>``): the job id, its name cut to 20.

    At most 27 characters, so a Job's name stays a valid label value (the
    Job controller labels pods with it) with any index.
    """
    name, _, suffix = job_id.rpartition("-")
    return f"{name[:20].rstrip('-')}-{suffix}"


def selector(instance: str, handle: str) -> str:
    """The label selector of a set's Jobs and pods."""
    return f"{INSTANCE_LABEL}={instance},{JOB_LABEL}={handle}"


def render_jobs(
    job: Job,
    job_id: str,
    *,
    instance: str,
    namespace: str,
    image: str,
    termination_grace_s: int,
    host_paths: tuple[Path, ...] = (),
    identity: Identity | None = None,
    default_time_limit_s: float = DEFAULT_TIME_LIMIT_S,
    mounts: tuple[HostMount, ...] = (),
    priority_class: str = "",
) -> list[dict[str, Any]]:
    """The Job manifests of ``job``'s set, one per task index, ready for the API.

    Each pod runs as ``identity`` (``identity``); None (single-user
    mode) leaves it to the image's user. A job without ``time_limit`` gets
    ``default_time_limit_s``. ``mounts`` are host paths its pods see (a batch
    shard's input and folder). ``priority_class`` is the pods' PriorityClass,
    one the site named (lent batch work); "" leaves the cluster's default.

    Raises:
        BackendError: when ``instance`` cannot be a label value, or for a root identity.
    """
    if not instance or not LABEL_VALUE.fullmatch(instance):
        raise BackendError(
            f"instance id {instance!r} cannot be a Kubernetes label value.",
            fix="use at most 63 letters, digits, '-', '_' or '.' in the instance file",
        )
    handle = set_name(job_id)
    indexes = job.task_indexes
    pod_volumes, container_mounts = volumes(handle, host_paths, (), mounts)
    pod: dict[str, Any] = {
        # A failed task is reported, not retried (as on Slurm).
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": termination_grace_s,
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
        **placement(job.kubernetes),
    }
    if pod_volumes:
        pod["volumes"] = pod_volumes
    if priority_class:
        pod["priorityClassName"] = priority_class
    # On the pod, not the Job: counted from the pod's start (as Slurm counts
    # from the job's), and the kubelet stops the pod in place, so its exit
    # record and log remain (a Job's deadline deletes its pods).
    time_limit_s = default_time_limit_s if job.time_limit_s is None else job.time_limit_s
    pod["activeDeadlineSeconds"] = max(1, math.ceil(time_limit_s))
    if job.nodes > 1:
        # Like Slurm's nodes, a multi-node job's pods go to different nodes
        # when the cluster has them.
        pod["affinity"] = _spread(instance, handle)
    amounts = resources(job.resources)
    manifests = []
    for index in indexes:
        labels = {
            INSTANCE_LABEL: instance,
            JOB_LABEL: handle,
            INDEX_LABEL: str(index),
            JOB_NAME_LABEL: job.name,
        }
        env = {
            **job.env,
            "AIFACTORY_JOB_ID": job_id,
            "AIFACTORY_TASK_INDEX": str(index),
            "JOB_COMPLETION_INDEX": str(index),
            "AIFACTORY_TASK_COUNT": str(len(indexes)),
        }
        container: dict[str, Any] = {
            "name": CONTAINER_NAME,
            "image": job.kubernetes.image or image,
            # No registry to pull from on the dev cluster; a site's nodes may still pull.
            "imagePullPolicy": "IfNotPresent",
            "command": [literal(arg) for arg in job.command],
            "env": [{"name": k, "value": literal(v)} for k, v in sorted(env.items())],
            "resources": {"requests": amounts, "limits": dict(amounts)},
        }
        if job.workdir:
            container["workingDir"] = job.workdir
        if container_mounts:
            container["volumeMounts"] = container_mounts
        pod_spec = {**pod, "containers": [container]}
        if identity is not None:
            confine(pod_spec, container, identity)
        manifests.append(
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {
                    "name": f"{handle}-{index}",
                    "namespace": namespace,
                    "labels": labels,
                    "annotations": {JOB_ID_ANNOTATION: job_id},
                },
                "spec": {
                    "backoffLimit": 0,
                    "template": {
                        "metadata": {"labels": dict(labels)},
                        "spec": pod_spec,
                    },
                },
            }
        )
    return manifests


def _spread(instance: str, handle: str) -> dict[str, Any]:
    term = {
        "labelSelector": {"matchLabels": {INSTANCE_LABEL: instance, JOB_LABEL: handle}},
        "topologyKey": "kubernetes.io/hostname",
    }
    return {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 100, "podAffinityTerm": term}
            ]
        }
    }


def job_task(
    task: int | None, batch_job: dict[str, Any] | None, pod: dict[str, Any] | None
) -> JobTask:
    """One task's state from its Job and its newest pod (JSON dicts from the API).

    ``batch_job`` None means the Job is gone while others of its set remain:
    someone deleted it outside aifactory.
    """
    if batch_job is None:
        return JobTask(
            task,
            "",
            AllocationState.FAILED,
            "Deleted",
            "its Kubernetes Job was deleted outside aifactory",
        )
    name = str(batch_job["metadata"]["name"])
    final = _final_condition(batch_job)
    status = pod_status(pod) if pod is not None else None
    if final.get("reason") == "DeadlineExceeded":
        status = AllocationStatus(AllocationState.TIMEOUT, "time limit reached", node=_node(status))
    elif status is None or not status.state.finished:
        if final.get("type") == "Complete":
            status = AllocationStatus(AllocationState.COMPLETED, "exited 0", 0, _node(status))
        elif final.get("type") == "Failed":
            said = str(final.get("message") or final.get("reason") or "failed")
            status = AllocationStatus(AllocationState.FAILED, said, node=_node(status))
        elif status is None:
            status = AllocationStatus(AllocationState.PENDING, "waiting for its pod to be created")
    word = str(final.get("type") or ((pod or {}).get("status") or {}).get("phase") or "Pending")
    started, ended, signal = _container_times(pod)
    if status.state.finished:
        job_status = batch_job.get("status") or {}
        started = started or _epoch(job_status.get("startTime"))
        ended = ended or _epoch(final.get("lastTransitionTime")) or _deadline(pod)
    elif status.state is AllocationState.PENDING:
        started = None
    return JobTask(
        task=task,
        slurm_job_id=name,
        state=status.state,
        slurm_state=word,
        reason="" if status.state is AllocationState.RUNNING else status.reason,
        exit_code=status.exit_code if status.state.finished else None,
        signal=signal,
        nodes=status.node,
        started_at=started,
        ended_at=ended if status.state.finished else None,
    )


def _node(status: AllocationStatus | None) -> str:
    return status.node if status is not None else ""


def _final_condition(batch_job: dict[str, Any]) -> dict[str, Any]:
    for condition in (batch_job.get("status") or {}).get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return dict(condition)
    return {}


def _container_times(pod: dict[str, Any] | None) -> tuple[float | None, float | None, int | None]:
    """When the pod's container started and ended, and the signal that ended it."""
    state = container_status((pod or {}).get("status") or {}).get("state") or {}
    running = state.get("running") or {}
    terminated = state.get("terminated") or {}
    started = _epoch(terminated.get("startedAt") or running.get("startedAt"))
    signal = terminated.get("signal")
    return started, _epoch(terminated.get("finishedAt")), signal if signal else None


def _deadline(pod: dict[str, Any] | None) -> float | None:
    """When a pod stopped by its time limit was declared ended (its container may linger)."""
    status, spec = (pod or {}).get("status") or {}, (pod or {}).get("spec") or {}
    started, limit = _epoch(status.get("startTime")), spec.get("activeDeadlineSeconds")
    if status.get("reason") != "DeadlineExceeded" or started is None or limit is None:
        return None
    return started + float(limit)


def _epoch(text: Any) -> float | None:
    return datetime.fromisoformat(text).timestamp() if isinstance(text, str) and text else None
