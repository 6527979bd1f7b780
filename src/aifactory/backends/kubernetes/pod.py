"""A replica's Pod manifest, and what a Pod's status means for it (pure functions).

Rendering checks every name that becomes part of an object name or label
against Kubernetes' own rules (DNS-1123 labels, label values), so a hostile
service or replica name is refused here with a readable error instead of
being half-accepted by the API server. Nothing is ever run through a shell:
the launcher argv becomes the container's ``command`` list. The kubelet
expands ``$(NAME)`` in commands and env values, so every ``$`` is written
as ``$$`` (which it turns back into ``$``): values arrive exactly as given.
The one exception is ``POD_IP``, the launcher's advertise host, which the
kubelet replaces with the Pod's IP (from the downward API).

Three kinds of volume: the site's host paths (``host_paths``: on the dev
cluster the checkout's venv and source, so the launcher argv's interpreter
exists in the Pod at the same path; none with aifactory's own image,
deploy/Containerfile), mounted read-only at the same path; and
the replica's one-time secrets (its registration token, a pool's worker
token, an agent's key) as a Secret named like the Pod, mounted read-only
where the launcher looks for them (readable by the Pod's identity alone).
The Secret never appears in the manifest's text and is deleted with its Pod
(``render_secret``: the Pod owns it); and a job's own host folders and
files (``HostMount``: a batch shard's input and output), at the same path,
the folder writable by the Pod's identity only as the host's modes allow.
A Pod of a request with an identity
runs as it, with an ``emptyDir`` as its home (``identity``).

Status mapping reads the Pod as the API server sends it (a JSON dict), in one
place: ``pod_status``. Pod phases map through ``PHASES``; the reasons that
matter to a control plane (cannot be scheduled, cannot pull the image, out of
memory, past its deadline) become plain words.
"""

from __future__ import annotations

import base64
import logging
import math
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from aifactory.backends.base import (
    AllocationRequest,
    AllocationState,
    AllocationStatus,
    HostMount,
)
from aifactory.backends.kubernetes.identity import confine
from aifactory.errors import BackendError
from aifactory.specs import DNS_LABEL, DNS_SUBDOMAIN, LABEL_VALUE, KubernetesOptions, Resources

logger = logging.getLogger(__name__)

LABEL_PREFIX = "aifactory.io"
INSTANCE_LABEL = f"{LABEL_PREFIX}/instance"
SERVICE_LABEL = f"{LABEL_PREFIX}/service"
REPLICA_LABEL = f"{LABEL_PREFIX}/replica"
CANCELLED_ANNOTATION = f"{LABEL_PREFIX}/cancelled"
CONTAINER_NAME = "replica"
SECRETS_VOLUME = "secrets"
GPU_RESOURCE = "nvidia.com/gpu"
POD_IP_VARIABLE = "AIFACTORY_POD_IP"
# The one argv element the kubelet expands: the launcher reports the Pod's own IP.
POD_IP = f"$({POD_IP_VARIABLE})"

# Pod phases -> ours. Anything else is logged and becomes UNKNOWN.
PHASES = {
    "Pending": AllocationState.PENDING,
    "Running": AllocationState.RUNNING,
    "Succeeded": AllocationState.COMPLETED,
    "Failed": AllocationState.FAILED,
    "Unknown": AllocationState.UNKNOWN,
}

# Container waiting/terminated reasons in plain words; others are shown as sent.
REASONS = {
    "ContainerCreating": "starting the container",
    "PodInitializing": "starting the container",
    "ErrImagePull": "cannot pull the image",
    "ImagePullBackOff": "cannot pull the image (backing off)",
    "InvalidImageName": "the image name is invalid",
    "CreateContainerConfigError": "the container's configuration is invalid",
    "CreateContainerError": "the container could not be created",
    "RunContainerError": "the container could not be started",
    "CrashLoopBackOff": "the container keeps crashing",
    "OOMKilled": "ran out of memory",
    "Error": "exited with an error",
    "Completed": "exited 0",
    "DeadlineExceeded": "time limit reached",
    "Evicted": "evicted from its node",
    "NodeLost": "its node stopped answering",
    "Shutdown": "its node shut down",
}


def pod_name(instance: str, replica_id: str) -> str:
    """The Pod's name: the control plane's instance id and the replica id.

    Raises:
        BackendError: when the result is not a valid Pod name.
    """
    name = f"aif-{instance}-{replica_id}"
    if not DNS_SUBDOMAIN.fullmatch(name):
        raise BackendError(
            f"replica id {replica_id!r} cannot name a Kubernetes pod ({name!r} must be "
            "lower-case letters, digits, '-' and '.').",
            fix="use service names of lower-case letters, digits and '-'",
        )
    return name


def labels(instance: str, service: str, replica_id: str) -> dict[str, str]:
    """The labels that mark a Pod as this control plane's replica (for watch and adoption).

    Raises:
        BackendError: when a value is not a valid label value.
    """
    for what, value in (("instance id", instance), ("service", service), ("replica", replica_id)):
        if not value or not LABEL_VALUE.fullmatch(value) or not DNS_LABEL.fullmatch(value):
            raise BackendError(
                f"{what} {value!r} cannot be a Kubernetes label value.",
                fix="on Kubernetes, use service names of at most 56 lower-case letters, "
                "digits and '-' (the replica id adds 7)",
            )
    return {INSTANCE_LABEL: instance, SERVICE_LABEL: service, REPLICA_LABEL: replica_id}


def resources(needs: Resources) -> dict[str, str]:
    """CPU, memory and GPUs, as both requests and limits (a Guaranteed pod)."""
    amounts = {"cpu": str(needs.cpus), "memory": f"{math.ceil(needs.memory_gib * 1024)}Mi"}
    if needs.gpus:
        amounts[GPU_RESOURCE] = str(needs.gpus)
    return amounts


def render_pod(
    request: AllocationRequest,
    *,
    instance: str,
    namespace: str,
    image: str,
    termination_grace_s: int,
    host_paths: tuple[Path, ...] = (),
) -> dict[str, Any]:
    """The Pod manifest for one replica, as a dict ready for the API (and for YAML).

    With the request's identity, the Pod runs as it (``identity``);
    without one (single-user mode) as the image's own user.

    Raises:
        BackendError: for a name or label value Kubernetes would refuse, or a
            root identity.
    """
    if not request.argv:
        raise BackendError(f"replica {request.replica_id} has an empty command.")
    amounts = resources(request.resources)
    name = pod_name(instance, request.replica_id)
    pod_volumes, mounts = volumes(name, host_paths, request.secret_files)
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": image,
        # No registry to pull from on the dev cluster; a site's nodes may still pull.
        "imagePullPolicy": "IfNotPresent",
        "command": [arg if arg == POD_IP else literal(arg) for arg in request.argv],
        "env": [
            *({"name": k, "value": literal(v)} for k, v in sorted(request.env.items())),
            {
                "name": POD_IP_VARIABLE,
                "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
            },
        ],
        "resources": {"requests": amounts, "limits": dict(amounts)},
    }
    if mounts:
        container["volumeMounts"] = mounts
    spec: dict[str, Any] = {
        # The control plane replaces failed replicas itself, possibly elsewhere.
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": termination_grace_s,
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
        "containers": [container],
    }
    if pod_volumes:
        spec["volumes"] = pod_volumes
    if request.time_limit_s is not None:
        spec["activeDeadlineSeconds"] = max(1, math.ceil(request.time_limit_s))
    spec.update(placement(request.kubernetes))
    if request.identity is not None:
        confine(spec, container, request.identity)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels(instance, request.service, request.replica_id),
        },
        "spec": spec,
    }


def placement(options: KubernetesOptions) -> dict[str, Any]:
    """The pod spec's ``nodeSelector`` and ``tolerations``, where the options set them."""
    spec: dict[str, Any] = {}
    if options.node_selector:
        spec["nodeSelector"] = dict(options.node_selector)
    if options.tolerations:
        spec["tolerations"] = [
            t.model_dump(by_alias=True, exclude_defaults=True) for t in options.tolerations
        ]
    return spec


def volumes(
    name: str,
    host_paths: tuple[Path, ...],
    secret_files: tuple[Path, ...],
    host_mounts: tuple[HostMount, ...] = (),
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The Pod's volumes and the container's mounts: host paths, the job's mounts, the secrets.

    Raises:
        BackendError: when the secret files do not share one directory.
    """
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    for index, path in enumerate(host_paths):
        volumes.append({"name": f"host-{index}", "hostPath": {"path": str(path)}})
        mounts.append({"name": f"host-{index}", "mountPath": str(path), "readOnly": True})
    for index, mount in enumerate(host_mounts):
        kind = "File" if mount.file else "Directory"
        volumes.append(
            {"name": f"mount-{index}", "hostPath": {"path": str(mount.path), "type": kind}}
        )
        mounts.append(
            {"name": f"mount-{index}", "mountPath": str(mount.path), "readOnly": not mount.writable}
        )
    if secret_files:
        folders = {path.parent for path in secret_files}
        if len(folders) != 1:
            raise BackendError(f"the secret files of {name} are not in one folder: {folders}")
        # Group-readable, and the kubelet writes the files as root: a Pod that
        # runs as an identity has its gid as fsGroup, which then owns them;
        # without one, aifactory's image runs as a user in group 0
        # (deploy/Containerfile).
        secret = {"secretName": name, "defaultMode": 0o440}
        volumes.append({"name": SECRETS_VOLUME, "secret": secret})
        mounts.append({"name": SECRETS_VOLUME, "mountPath": str(folders.pop()), "readOnly": True})
    return volumes, mounts


def render_secret(pod: dict[str, Any], contents: dict[str, bytes]) -> dict[str, Any]:
    """The Secret holding a replica's one-time files, owned by its Pod (deleted with it).

    ``contents`` maps file names to their bytes; ``pod`` is the Pod as created
    (the owner reference needs its uid).
    """
    metadata = pod["metadata"]
    owner = {"apiVersion": "v1", "kind": "Pod", "name": metadata["name"], "uid": metadata["uid"]}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": metadata["name"],
            "namespace": metadata["namespace"],
            "labels": dict(metadata.get("labels") or {}),
            "ownerReferences": [owner],
        },
        "data": {name: base64.b64encode(data).decode() for name, data in contents.items()},
    }


def literal(value: str) -> str:
    """``value`` escaped so the kubelet's ``$(NAME)`` expansion leaves it as it is."""
    return value.replace("$", "$$")


def pod_status(pod: dict[str, Any], *, deleted: bool = False) -> AllocationStatus:
    """What a Pod (a JSON dict from the API) means for its replica.

    ``deleted`` says the Pod is gone from the API server: a Pod that had not
    finished ended because someone deleted it (this control plane, if it
    marked it cancelled first).
    """
    metadata = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    node = str(spec.get("nodeName") or "")
    phase = str(status.get("phase") or "Pending")
    state = PHASES.get(phase)
    if state is None:
        logger.warning("unknown pod phase %r of pod %s", phase, metadata.get("name"))
        return AllocationStatus(AllocationState.UNKNOWN, f"pod phase {phase}", node=node)
    terminated = _terminated(status)
    exit_code = terminated.get("exitCode") if terminated else None
    cancelled = CANCELLED_ANNOTATION in (metadata.get("annotations") or {})
    if state.finished:
        return _finished(state, status, terminated, node, cancelled, _killed_by_deletion(pod))
    if deleted or metadata.get("deletionTimestamp"):
        if deleted:
            if cancelled:
                return AllocationStatus(AllocationState.CANCELLED, "cancelled", exit_code, node)
            return AllocationStatus(
                AllocationState.FAILED, "the pod was deleted outside aifactory", exit_code, node
            )
        return AllocationStatus(AllocationState.RUNNING, "stopping", node=node)
    if state is AllocationState.PENDING:
        return AllocationStatus(AllocationState.PENDING, _pending_reason(status), node=node)
    if state is AllocationState.UNKNOWN:
        return AllocationStatus(AllocationState.UNKNOWN, "its node stopped reporting", node=node)
    return AllocationStatus(AllocationState.RUNNING, node=node)


def _finished(
    state: AllocationState,
    status: dict[str, Any],
    terminated: dict[str, Any],
    node: str,
    cancelled: bool,
    killed_by_deletion: bool,
) -> AllocationStatus:
    exit_code = terminated.get("exitCode") if terminated else None
    code = exit_code if isinstance(exit_code, int) else None
    pod_reason = str(status.get("reason") or "")
    if pod_reason == "DeadlineExceeded":
        return AllocationStatus(AllocationState.TIMEOUT, REASONS[pod_reason], code, node)
    if cancelled:
        return AllocationStatus(AllocationState.CANCELLED, "cancelled", code, node)
    if killed_by_deletion:
        return AllocationStatus(
            AllocationState.FAILED, "the pod was deleted outside aifactory", code, node
        )
    if state is AllocationState.COMPLETED:
        return AllocationStatus(state, "exited 0", code if code is not None else 0, node)
    if pod_reason:
        said = REASONS.get(pod_reason, pod_reason)
        message = str(status.get("message") or "")
        return AllocationStatus(state, f"{said}: {message}" if message else said, code, node)
    reason = str(terminated.get("reason") or "")
    if reason == "OOMKilled":
        described = REASONS[reason]
    elif code is not None:
        described = f"exited with code {code}"
    else:
        described = REASONS.get(reason, reason) or "failed"
    return AllocationStatus(state, described, code, node)


def _killed_by_deletion(pod: dict[str, Any]) -> bool:
    """Whether the container ended after the Pod was marked for deletion (so because of it).

    ``deletionTimestamp`` is when the grace period ends, so the deletion was
    asked for ``deletionGracePeriodSeconds`` earlier. A Pod marked for deletion
    that ended with no termination record (its container killed before the
    kubelet could write one) ended because of it too.
    """
    metadata = pod.get("metadata") or {}
    deletion = metadata.get("deletionTimestamp")
    if not deletion:
        return False
    finished = _terminated(pod.get("status") or {}).get("finishedAt")
    if not finished:
        return True
    grace = timedelta(seconds=int(metadata.get("deletionGracePeriodSeconds") or 0))
    return _rfc3339(str(finished)) >= _rfc3339(str(deletion)) - grace


def _rfc3339(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def container_status(status: dict[str, Any]) -> dict[str, Any]:
    """The status of the Pod's one container (``CONTAINER_NAME``); empty before it exists."""
    for container in status.get("containerStatuses") or []:
        if container.get("name") == CONTAINER_NAME:
            return dict(container)
    return {}


def _terminated(status: dict[str, Any]) -> dict[str, Any]:
    state = container_status(status).get("state") or {}
    return dict(state.get("terminated") or {})


def _pending_reason(status: dict[str, Any]) -> str:
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            message = str(condition.get("message") or "")
            if condition.get("reason") == "Unschedulable":
                return (
                    f"no node can take it yet: {message}" if message else "no node can take it yet"
                )
    waiting = (container_status(status).get("state") or {}).get("waiting") or {}
    reason = str(waiting.get("reason") or "")
    if reason:
        said = REASONS.get(reason, reason)
        message = str(waiting.get("message") or "")
        return (
            f"{said}: {message}"
            if message and reason in ("ErrImagePull", "ImagePullBackOff")
            else said
        )
    if any(
        c.get("type") == "PodScheduled" and c.get("status") == "True"
        for c in status.get("conditions") or []
    ):
        return "starting on its node"
    return "waiting for the scheduler"
