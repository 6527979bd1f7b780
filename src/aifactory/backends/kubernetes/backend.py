"""Kubernetes backend: a replica is one bare Pod, owned by the control plane.

Why a Pod and not a Deployment per service: the control plane already is the
controller. It decides how many replicas exist, where (across stacks), which
one to drain and when to replace one before its time limit; a Deployment
would be a second controller with its own idea of all that (it recreates a
Pod we stopped, picks its own victim on scale-down, rolls out on its own
schedule). One Pod per replica maps one-to-one to the ``Backend`` verbs, the
same as one Slurm job or one local process: ``submit`` creates it, ``cancel``
deletes it, and its labels carry this control plane's instance id, the
service and the replica id so a restarted control plane can adopt it
(``tagged``). ``restartPolicy: Never``: a failed replica is replaced by the
control plane, possibly on another stack. The Pod runs as the request's
identity, its tenant's uid and gid, never root (``identity``).

A replica's one-time files (its registration token...) travel in a Secret
the Pod owns, created right after the Pod (the kubelet waits for a Secret a
volume names), and are then removed from the control plane's disk; the
Kubernetes garbage collector deletes the Secret with the Pod.

State is watched, never polled: ``PodWatch`` lists this instance's Pods once
and then follows a watch (resuming after API-server restarts), and
``status``/``tagged`` answer from that cache. While the watch cannot reach the
API server (``PodWatch.outage``) the cache may be stale: ``status`` then
answers ``no_answer`` for every Pod (a Pod that runs on keeps serving, and
none is taken for gone), ``tagged``, ``submit`` and ``cancel`` raise
``KubernetesUnreachable``, and ``start_delay`` cannot tell. Blocking client calls run in
threads. Metadata updates are read-modify-write with the object's
``resourceVersion`` and are retried on 409 conflicts (``update_pod``).

The client comes from an explicit kubeconfig, else the in-cluster service
account, else the default kubeconfig (``~/.kube/config`` or ``$KUBECONFIG``,
read by the client library).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from aifactory.backends.base import AllocationRequest, AllocationState, AllocationStatus
from aifactory.backends.kubernetes.capacity import fits_now, waiting_for_room
from aifactory.backends.kubernetes.connection import KubernetesConnection, api_message
from aifactory.backends.kubernetes.pod import (
    CANCELLED_ANNOTATION,
    INSTANCE_LABEL,
    PHASES,
    POD_IP,
    REPLICA_LABEL,
    pod_status,
    render_pod,
    render_secret,
    resources,
)
from aifactory.backends.kubernetes.watch import PodWatch
from aifactory.errors import BackendError, CapacityExceeded, KubernetesUnreachable

if TYPE_CHECKING:
    from aifactory.config import Settings

logger = logging.getLogger(__name__)

_CONFLICT = 409
_NOT_FOUND = 404
_CONFLICT_ATTEMPTS = 8
_FORBIDDEN = 403


class KubernetesBackend:
    """Runs each replica as one Pod in one namespace."""

    name = "kubernetes"
    # The kubelet puts the Pod's IP here: a Pod's host name resolves only inside it.
    advertise_host = POD_IP

    def __init__(
        self, instance: str, connection: KubernetesConnection, *, sync_timeout_s: float = 10.0
    ) -> None:
        self.instance = instance
        self.connection = connection
        self.sync_timeout_s = sync_timeout_s
        self._watch: PodWatch | None = None

    @classmethod
    def from_settings(cls, settings: Settings, instance: str) -> KubernetesBackend:
        """The backend the settings describe."""
        return cls(instance, KubernetesConnection.from_settings(settings))

    # ------------------------------------------------------------- Backend

    def render(self, request: AllocationRequest) -> str:
        """The Pod manifest, as YAML, exactly as submitted."""
        return yaml.safe_dump(self._manifest(request), sort_keys=False)

    async def submit(self, request: AllocationRequest) -> str:
        """Create the replica's Pod; return its name."""
        manifest = self._manifest(request)
        name: str = manifest["metadata"]["name"]
        watch = self._started_watch()
        self._check_reachable(watch)
        try:
            created = await self._call(
                self.core.create_namespaced_pod, self.connection.namespace, manifest
            )
        except ApiException as exc:
            if exc.status == _CONFLICT and await self._is_ours(name, request.replica_id):
                return name  # a retried submit: the Pod is already there
            raise self._refused(name, exc) from exc
        watch.put(created)
        if request.secret_files:
            await self._deliver_secrets(created, request.secret_files)
        logger.info(
            "replica %s: created pod %s/%s", request.replica_id, self.connection.namespace, name
        )
        return name

    async def status(self, handles: Sequence[str]) -> dict[str, AllocationStatus]:
        """Each Pod's state from the watched cache; no answer while the cache may be stale."""
        if not handles:
            return {}
        watch = self._started_watch()
        if not watch.synced and not await asyncio.to_thread(watch.wait_synced, self.sync_timeout_s):
            why = f"no list of pods within {self.sync_timeout_s:g} s"
            return {h: AllocationStatus.no_answer(_no_answer(why)) for h in handles}
        outage = watch.outage()
        if outage is not None:
            return {h: AllocationStatus.no_answer(_no_answer(outage[1])) for h in handles}
        result = {}
        for handle in handles:
            pod, deleted = watch.get(handle)
            if pod is None:
                result[handle] = AllocationStatus(AllocationState.UNKNOWN, "no such pod")
            else:
                result[handle] = pod_status(pod, deleted=deleted)
        return result

    async def start_delay(self, request: AllocationRequest) -> float | None:
        """0 when a node has room for ``request``'s Pod and none of ours waits; else None.

        Kubernetes makes no start estimate (see ``capacity``): a
        Pod that fits starts now, one that does not waits for an unknown time.
        Without permission to list nodes and Pods cluster-wide, only this
        control plane's pending Pods are looked at.
        """
        watch = self._started_watch()
        synced = watch.synced or await asyncio.to_thread(watch.wait_synced, self.sync_timeout_s)
        if not synced or watch.outage() is not None or waiting_for_room(watch.pods()):
            return None
        try:
            nodes = await self._call(self.core.list_node)
            pods = await self._call(
                self.core.list_pod_for_all_namespaces,
                field_selector="status.phase!=Succeeded,status.phase!=Failed",
            )
        except ApiException as exc:
            return 0.0 if exc.status == _FORBIDDEN else None
        except BackendError:
            return None
        room = fits_now(
            nodes["items"], pods["items"], resources(request.resources), request.kubernetes
        )
        return 0.0 if room else None

    async def cancel(self, handle: str) -> None:
        """Mark the Pod cancelled, then delete it with its grace period; gone is fine.

        A Pod that already finished is deleted too (its final status stays
        known to ``status``), so no finished Pods pile up in the namespace.

        Raises:
            KubernetesUnreachable: while the API server does not answer.
            BackendError: when it refused.
        """
        self._check_reachable(self._started_watch())
        await self.update_pod(handle, _mark_cancelled)
        try:
            await self._call(
                self.core.delete_namespaced_pod,
                handle,
                self.connection.namespace,
                grace_period_seconds=self.connection.termination_grace_s,
            )
        except ApiException as exc:
            if exc.status != _NOT_FOUND:
                raise self._refused(handle, exc) from exc
        logger.info("pod %s/%s: deleted", self.connection.namespace, handle)

    async def tagged(self) -> dict[str, str]:
        """Live Pods carrying this control plane's labels: replica id -> Pod name.

        Raises:
            KubernetesUnreachable: when the API server did not answer the first
                list, or the watch cannot reach it now.
        """
        watch = self._started_watch()
        if not await asyncio.to_thread(watch.wait_synced, self.sync_timeout_s):
            raise KubernetesUnreachable(
                f"no list of pods within {self.sync_timeout_s:g} s", fix=self.connection.reach_fix()
            )
        self._check_reachable(watch)
        found = {}
        for pod in watch.pods():
            metadata = pod["metadata"]
            replica_id = (metadata.get("labels") or {}).get(REPLICA_LABEL)
            live = not pod_status(pod).state.finished and not metadata.get("deletionTimestamp")
            if replica_id and live:
                found[replica_id] = metadata["name"]
        return found

    async def aclose(self) -> None:
        """Stop watching; Pods keep running (the reconciler stops them one by one)."""
        if self._watch is not None:
            self._watch.stop()
            self._watch = None
        await self.connection.aclose()

    # ------------------------------------------------------------- beyond the protocol

    async def update_pod(
        self, handle: str, change: Callable[[dict[str, Any]], bool]
    ) -> dict[str, Any] | None:
        """Read-modify-write a Pod, retried when someone else changed it in between.

        ``change`` edits the Pod (a JSON dict) in place and returns whether it
        changed anything. The write carries the ``resourceVersion`` that was
        read, so the API server refuses it (409) if the Pod changed meanwhile;
        then the Pod is read again and ``change`` applied anew.

        Returns:
            The Pod as written (or as read, when nothing changed); None when
            there is no such Pod.

        Raises:
            BackendError: when the write keeps conflicting or is refused.
        """
        for attempt in range(1, _CONFLICT_ATTEMPTS + 1):
            try:
                pod = await self._call(
                    self.core.read_namespaced_pod, handle, self.connection.namespace
                )
            except ApiException as exc:
                if exc.status == _NOT_FOUND:
                    return None
                raise self._refused(handle, exc) from exc
            if not change(pod):
                read: dict[str, Any] = pod
                return read
            try:
                written: dict[str, Any] = await self._call(
                    self.core.replace_namespaced_pod, handle, self.connection.namespace, pod
                )
                return written
            except ApiException as exc:
                if exc.status == _NOT_FOUND:
                    return None
                if exc.status != _CONFLICT:
                    raise self._refused(handle, exc) from exc
                logger.info(
                    "pod %s changed while being updated (try %d); retrying", handle, attempt
                )
        raise BackendError(
            f"pod {handle} kept changing: {_CONFLICT_ATTEMPTS} updates in a row conflicted.",
            fix="something else is rewriting this pod; find it with `kubectl get events`",
        )

    @property
    def core(self) -> client.CoreV1Api:
        """The CoreV1 API."""
        return self.connection.core

    # ------------------------------------------------------------- helpers

    def _manifest(self, request: AllocationRequest) -> dict[str, Any]:
        return render_pod(
            request,
            instance=self.instance,
            namespace=self.connection.namespace,
            image=self.connection.image,
            termination_grace_s=self.connection.termination_grace_s,
            host_paths=self.connection.host_paths,
        )

    async def _deliver_secrets(self, pod: dict[str, Any], files: tuple[Path, ...]) -> None:
        """Move ``files`` into the Pod's Secret; delete the Pod when that fails.

        Raises:
            BackendError: when the Secret could not be created.
        """
        name = pod["metadata"]["name"]
        try:
            contents = await asyncio.to_thread(lambda: {p.name: p.read_bytes() for p in files})
            await self._call(
                self.core.create_namespaced_secret,
                self.connection.namespace,
                render_secret(pod, contents),
            )
        except (OSError, ApiException, BackendError) as exc:
            with contextlib.suppress(ApiException, BackendError):
                await self._call(self.core.delete_namespaced_pod, name, self.connection.namespace)
            if isinstance(exc, ApiException):
                raise self._refused(f"{name} (its secret)", exc) from exc
            if isinstance(exc, OSError):
                raise BackendError(f"pod {name}: cannot read its secrets: {exc}") from exc
            raise
        for path in files:
            path.unlink(missing_ok=True)

    def _started_watch(self) -> PodWatch:
        if self._watch is None:
            self._watch = PodWatch(
                self.core, self.connection.namespace, f"{INSTANCE_LABEL}={self.instance}"
            )
            self._watch.start()
        return self._watch

    def _check_reachable(self, watch: PodWatch) -> None:
        """Raise while the watch cannot reach the API server (its calls would fail or hang).

        Raises:
            KubernetesUnreachable: since when and why.
        """
        outage = watch.outage()
        if outage is not None:
            raise KubernetesUnreachable(outage[1], fix=self.connection.reach_fix())

    async def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One API call in a thread; the answer as the JSON dict the server sent.

        Raises:
            ApiException: when the server answered with an error.
            KubernetesUnreachable: when the server could not be reached.
        """
        return await self.connection.call(method, *args, **kwargs)

    async def _is_ours(self, name: str, replica_id: str) -> bool:
        try:
            pod = await self._call(self.core.read_namespaced_pod, name, self.connection.namespace)
        except ApiException:
            return False
        pod_labels = pod["metadata"].get("labels") or {}
        return bool(
            pod_labels.get(INSTANCE_LABEL) == self.instance
            and pod_labels.get(REPLICA_LABEL) == replica_id
        )

    def _refused(self, name: str, exc: ApiException) -> BackendError:
        message = api_message(exc)
        namespace = self.connection.namespace
        if exc.status == 403 and "exceeded quota" in message:
            return CapacityExceeded(
                f"pod {name}: the namespace {namespace!r} is out of quota: {message}",
                fix="lower `resources`, delete another service, or ask for a larger quota",
            )
        return BackendError(
            f"Kubernetes refused pod {name} (HTTP {exc.status}): {message}",
            fix=f"check the namespace {namespace!r} and this control plane's permissions "
            "(it needs to create, get, list, watch, update and delete pods, and to create secrets)",
        )


def _no_answer(why: str) -> str:
    return f"the Kubernetes API server did not answer ({why})"


def _mark_cancelled(pod: dict[str, Any]) -> bool:
    """Annotate a Pod that has not finished as cancelled by this control plane."""
    metadata = pod["metadata"]
    annotations = metadata.get("annotations") or {}
    phase = (pod.get("status") or {}).get("phase", "Pending")
    if CANCELLED_ANNOTATION in annotations or PHASES.get(phase, AllocationState.UNKNOWN).finished:
        return False
    annotations[CANCELLED_ANNOTATION] = "true"
    metadata["annotations"] = annotations
    return True
