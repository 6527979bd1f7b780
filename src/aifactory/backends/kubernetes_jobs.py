"""Batch jobs on Kubernetes: create, read, log and delete a job's set of batch/v1 Jobs.

Why a set of Jobs, one per task index (``kubernetes_job_set.py`` renders
them): multi-node jobs and arrays need one pod per index, and the two
Kubernetes ways to say that in one object do not exist where we run. The
dev cluster, like many a centre's, is Kubernetes 1.20: ``completionMode:
Indexed`` is alpha only from 1.21, and JobSet is an add-on for newer
clusters still. One ordinary Job per index works on every version and
gives each index its own pod, state, exit code and log, the way Slurm's
array tasks have theirs. A set of Jobs is what ``submit`` creates (all or
nothing), what the labels find again, and what ``cancel`` deletes::

    JobsManager              KubernetesJobRunner                  API server
    -----------              -------------------                  ----------
    submit(job, id)  ------> create one Job per index       ---> Jobs -> pods
                     <------ the set's name (the handle)
    tasks(set, job)  ------> list the set's Jobs and pods   ---> one JobTask per index
    logs(set, index) ------> the index's newest pod's log
    cancel(set)      ------> delete the Jobs (foreground)   ---> pods first, then Jobs

Each Job has ``backoffLimit: 0``: a failed task is reported, never retried
behind the user's back (as on Slurm). Finished Jobs are not left to
``ttlSecondsAfterFinished`` (alpha on 1.20): they stay, with their pods and
logs, until the job is cancelled. Blocking client calls run in threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from aifactory.backends.base import JobTask
from aifactory.backends.kubernetes import api_client, api_message, call_api, reach_fix
from aifactory.backends.kubernetes_job_set import (
    INDEX_LABEL,
    job_task,
    render_jobs,
    selector,
    set_name,
)
from aifactory.backends.kubernetes_pod import CONTAINER_NAME
from aifactory.errors import BackendError
from aifactory.specs import Job

logger = logging.getLogger(__name__)

_NOT_FOUND = 404
_WAITING = 400  # the log of a container that has not started


class KubernetesJobRunner:
    """Submits, observes and cancels batch jobs as sets of batch/v1 Jobs in one namespace."""

    def __init__(
        self,
        instance: str,
        *,
        namespace: str = "default",
        image: str = "localhost/aifactory:latest",
        kubeconfig: Path | str | None = None,
        host_paths: Sequence[Path | str] = (),
        termination_grace_s: int = 30,
        request_timeout_s: float = 30.0,
    ) -> None:
        self.instance = instance
        self.namespace = namespace
        self.image = image
        self.kubeconfig = Path(kubeconfig) if kubeconfig else None
        self.host_paths = tuple(Path(p) for p in host_paths)
        self.termination_grace_s = termination_grace_s
        self.request_timeout_s = request_timeout_s
        self._api_client: client.ApiClient | None = None

    def manifests(self, job: Job, job_id: str) -> list[dict[str, Any]]:
        """The Jobs ``submit`` creates for ``job``.

        Raises:
            BackendError: when a value cannot be rendered for Kubernetes.
        """
        return render_jobs(
            job,
            job_id,
            instance=self.instance,
            namespace=self.namespace,
            image=self.image,
            termination_grace_s=self.termination_grace_s,
            host_paths=self.host_paths,
        )

    def render(self, job: Job, job_id: str) -> str:
        """The Job manifests, as YAML documents, exactly as submitted."""
        return yaml.safe_dump_all(self.manifests(job, job_id), sort_keys=False)

    async def submit(self, job: Job, job_id: str) -> str:
        """Create the set's Jobs, all or none; return the set's name.

        Raises:
            BackendError: when the API server refused a Job or did not answer.
        """
        handle = set_name(job_id)
        try:
            for manifest in self.manifests(job, job_id):
                await self._call(self._batch.create_namespaced_job, self.namespace, manifest)
        except (ApiException, BackendError) as exc:
            with contextlib.suppress(ApiException, BackendError):
                await self.cancel(handle)  # leave no half set behind
            if isinstance(exc, ApiException):
                raise self._refused(handle, exc) from exc
            raise
        logger.info("job %s: created Kubernetes job set %s/%s", job_id, self.namespace, handle)
        return handle

    async def tasks(self, handle: str, job: Job) -> list[JobTask]:
        """Every task of set ``handle`` (``job`` is its spec), by index.

        An empty list means none of the set's Jobs exist any more.

        Raises:
            BackendError: when the API server did not answer or refused.
        """
        labels = selector(self.instance, handle)
        try:
            jobs = await self._call(
                self._batch.list_namespaced_job, self.namespace, label_selector=labels
            )
            pods = await self._call(
                self._core.list_namespaced_pod, self.namespace, label_selector=labels
            )
        except ApiException as exc:
            raise self._refused(handle, exc) from exc
        by_index = {_index(j): j for j in jobs.get("items") or []}
        if not by_index:
            return []
        newest: dict[int | None, dict[str, Any]] = {}
        for pod in sorted(pods.get("items") or [], key=_created):
            newest[_index(pod)] = pod
        numbered = bool(job.array) or job.nodes > 1
        return [
            job_task(index if numbered else None, by_index.get(index), newest.get(index))
            for index in job.task_indexes
        ]

    async def logs(self, handle: str, index: int, lines: int) -> str:
        """The last ``lines`` of the output of task ``index``'s newest pod ("" before it ran).

        Raises:
            BackendError: when the API server did not answer or refused.
        """
        labels = f"{selector(self.instance, handle)},{INDEX_LABEL}={index}"
        try:
            pods = await self._call(
                self._core.list_namespaced_pod, self.namespace, label_selector=labels
            )
            found = sorted(pods.get("items") or [], key=_created)
            if not found:
                return ""
            data = await call_api(
                self._core.read_namespaced_pod_log,
                found[-1]["metadata"]["name"],
                self.namespace,
                container=CONTAINER_NAME,
                tail_lines=lines,
                timeout_s=self.request_timeout_s,
                fix=self._reach_fix(),
            )
        except ApiException as exc:
            if exc.status in (_NOT_FOUND, _WAITING):
                return ""
            raise self._refused(handle, exc) from exc
        return data.decode(errors="replace")

    async def cancel(self, handle: str) -> None:
        """Delete the set's Jobs, their pods first (foreground); a set already gone is fine.

        Raises:
            BackendError: when the API server did not answer or refused.
        """
        try:
            await self._call(
                self._batch.delete_collection_namespaced_job,
                self.namespace,
                label_selector=selector(self.instance, handle),
                propagation_policy="Foreground",
            )
        except ApiException as exc:
            if exc.status != _NOT_FOUND:
                raise self._refused(handle, exc) from exc
        logger.info("Kubernetes job set %s/%s: deleted", self.namespace, handle)

    async def aclose(self) -> None:
        """Close the API client."""
        if self._api_client is not None:
            closing, self._api_client = self._api_client, None
            await asyncio.to_thread(closing.close)

    # ------------------------------------------------------------- helpers

    @property
    def _client(self) -> client.ApiClient:
        if self._api_client is None:
            self._api_client = api_client(self.kubeconfig)
        return self._api_client

    @property
    def _batch(self) -> client.BatchV1Api:
        return client.BatchV1Api(self._client)

    @property
    def _core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self._client)

    async def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        data = await call_api(
            method, *args, timeout_s=self.request_timeout_s, fix=self._reach_fix(), **kwargs
        )
        return json.loads(data) if data else {}

    def _refused(self, handle: str, exc: ApiException) -> BackendError:
        return BackendError(
            f"Kubernetes refused job set {handle} (HTTP {exc.status}): {api_message(exc)}",
            fix=f"check the namespace {self.namespace!r} and this control plane's permissions "
            "(it needs to create, list and delete jobs, and to list pods and read their logs)",
        )

    def _reach_fix(self) -> str:
        return reach_fix(self.kubeconfig)


def _index(item: dict[str, Any]) -> int | None:
    value = (item["metadata"].get("labels") or {}).get(INDEX_LABEL, "")
    return int(value) if str(value).isdigit() else None


def _created(item: dict[str, Any]) -> str:
    return str(item["metadata"].get("creationTimestamp") or "")
