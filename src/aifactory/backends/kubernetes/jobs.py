"""Batch jobs on Kubernetes: create, read, log and delete a job's set of batch/v1 Jobs.

Why a set of Jobs, one per task index (``job_set.py`` renders
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
    tasks(job)       ------> list the set's Jobs and pods   ---> one JobTask per index
    keep_output(job) ------> each pod's log -> LOG_DIR/<index>.log, once the job ended
    logs(job, index) ------> the kept file, else the index's newest pod's log
    cancel(job)      ------> delete the Jobs (foreground)   ---> pods first, then Jobs

Each Job has ``backoffLimit: 0``: a failed task is reported, never retried
behind the user's back (as on Slurm). Finished Jobs are not left to
``ttlSecondsAfterFinished`` (alpha on 1.20): they stay, with their pods and
logs, until the job is cancelled. Cancelling deletes them (``cancel_deletes``),
so the caller records the job as cancelled, and its output is kept, first.
Blocking client calls run in threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from kubernetes.client.exceptions import ApiException

from aifactory.backends._files import tail, write_text
from aifactory.backends.base import DEFAULT_TIME_LIMIT_S, HostMount, JobTask, SubmittedJob
from aifactory.backends.kubernetes.connection import KubernetesConnection, api_message, call_api
from aifactory.backends.kubernetes.job_set import (
    INDEX_LABEL,
    job_task,
    render_jobs,
    selector,
    set_name,
)
from aifactory.backends.kubernetes.pod import CONTAINER_NAME
from aifactory.errors import BackendError, BadRequest, NotFound
from aifactory.identity import Identity
from aifactory.specs import Job

if TYPE_CHECKING:
    from aifactory.config import Settings

logger = logging.getLogger(__name__)

_NOT_FOUND = 404
_WAITING = 400  # the log of a container that has not started
# How much of each finished task's output is kept (the jobs API's `lines` cap).
_KEPT_LINES = 100_000


class KubernetesJobRunner:
    """Submits, observes and cancels batch jobs as sets of batch/v1 Jobs in one namespace."""

    name = "kubernetes"
    scheduler = "Kubernetes"
    rendered_name = "job.yaml"
    cancel_deletes = True

    def __init__(
        self,
        instance: str,
        connection: KubernetesConnection,
        *,
        default_time_limit_s: float = DEFAULT_TIME_LIMIT_S,
    ) -> None:
        self.instance = instance
        self.connection = connection
        self.default_time_limit_s = default_time_limit_s

    @classmethod
    def from_settings(cls, settings: Settings, instance: str) -> KubernetesJobRunner:
        """The runner the settings describe (namespace, image, kubeconfig, host paths, walltime)."""
        return cls(
            instance,
            KubernetesConnection.from_settings(settings),
            default_time_limit_s=settings.default_time_limit_s,
        )

    def for_tenant(
        self, job: Job, account: str | None, partition: str | None, qos: str | None
    ) -> Job:
        """``job`` itself: a tenant's Slurm account and defaults do not apply here."""
        return job

    def manifests(
        self,
        job: Job,
        job_id: str,
        identity: Identity | None = None,
        mounts: tuple[HostMount, ...] = (),
        priority_class: str = "",
    ) -> list[dict[str, Any]]:
        """The Jobs ``submit`` creates for ``job``, their pods running as ``identity``.

        ``mounts`` are host paths the pods see besides the site's (a batch
        shard's input and folder), ``priority_class`` their PriorityClass (the
        site's class for lent work): never from a user's spec.

        Raises:
            BackendError: when a value cannot be rendered for Kubernetes, or
                for a root identity.
        """
        return render_jobs(
            job,
            job_id,
            instance=self.instance,
            namespace=self.connection.namespace,
            image=self.connection.image,
            termination_grace_s=self.connection.termination_grace_s,
            host_paths=self.connection.host_paths,
            identity=identity,
            default_time_limit_s=self.default_time_limit_s,
            mounts=mounts,
            priority_class=priority_class,
        )

    def render(
        self,
        job: Job,
        job_id: str,
        log_dir: Path | None = None,
        identity: Identity | None = None,
        mounts: tuple[HostMount, ...] = (),
        priority_class: str = "",
    ) -> str:
        """The Job manifests, as YAML documents, exactly as submitted as ``identity``.

        ``log_dir`` is unused: the pods' output is kept by ``keep_output``.
        """
        manifests = self.manifests(job, job_id, identity, mounts, priority_class)
        return yaml.safe_dump_all(manifests, sort_keys=False)

    async def submit(
        self,
        job: Job,
        job_id: str,
        log_dir: Path | None = None,
        identity: Identity | None = None,
        mounts: tuple[HostMount, ...] = (),
        priority_class: str = "",
    ) -> str:
        """Create the set's Jobs, all or none; return the set's name.

        Their pods run as ``identity``; None (single-user mode only) runs them
        as the image's user. They see ``mounts`` and have ``priority_class``
        (``manifests``).

        Raises:
            BackendError: when the API server refused a Job or did not answer,
                or for a root identity.
        """
        handle = set_name(job_id)
        if priority_class:
            await self._require_class(priority_class)
        try:
            for manifest in self.manifests(job, job_id, identity, mounts, priority_class):
                await self._call(
                    self.connection.batch.create_namespaced_job, self.connection.namespace, manifest
                )
        except (ApiException, BackendError) as exc:
            with contextlib.suppress(ApiException, BackendError):
                await self._delete(handle)  # leave no half set behind
            if isinstance(exc, ApiException):
                raise self._refused(handle, exc) from exc
            raise
        logger.info(
            "job %s: created Kubernetes job set %s/%s", job_id, self.connection.namespace, handle
        )
        return handle

    async def _require_class(self, name: str) -> None:
        """Refuse a PriorityClass the cluster lacks: its Jobs' pods would never be made.

        A control plane not allowed to read PriorityClasses does not know:
        it goes on (the pods' creation then says).

        Raises:
            BackendError: when the cluster has no such class.
        """
        try:
            await self._call(self.connection.scheduling.read_priority_class, name)
        except ApiException as exc:
            if exc.status == _NOT_FOUND:
                raise BackendError(
                    f"the cluster has no PriorityClass {name!r} (the site's class for lent work)",
                    fix="create it (deploy/k8s-priority-classes.yaml has one: kubectl apply -f) "
                    "or set AIFACTORY_KUBERNETES_LENT_PRIORITY_CLASS to a class the cluster has",
                ) from exc
            logger.warning("PriorityClass %s not checked: %s", name, api_message(exc))

    async def tasks(self, job: SubmittedJob) -> list[JobTask]:
        """Every task of the job's set, by index.

        An empty list means none of the set's Jobs exist any more.

        Raises:
            BackendError: when the API server did not answer or refused.
        """
        handle, spec = job.handle, job.spec
        labels = selector(self.instance, handle)
        try:
            jobs = await self._call(
                self.connection.batch.list_namespaced_job,
                self.connection.namespace,
                label_selector=labels,
            )
            pods = await self._call(
                self.connection.core.list_namespaced_pod,
                self.connection.namespace,
                label_selector=labels,
            )
        except ApiException as exc:
            raise self._refused(handle, exc) from exc
        by_index = {_index(j): j for j in jobs.get("items") or []}
        if not by_index:
            return []
        newest: dict[int | None, dict[str, Any]] = {}
        for pod in sorted(pods.get("items") or [], key=_created):
            newest[_index(pod)] = pod
        numbered = bool(spec.array) or spec.nodes > 1
        return [
            job_task(index if numbered else None, by_index.get(index), newest.get(index))
            for index in spec.task_indexes
        ]

    def nodes_per_task(self, job: Job) -> int:
        """One: each task is one pod on one node."""
        return 1

    async def keep_output(self, job: SubmittedJob, tasks: Sequence[JobTask]) -> None:
        """Copy each pod's output to ``<index>.log`` in the job's folder, to outlive the pods."""
        for task in tasks:
            number = 0 if task.task is None else task.task
            try:
                text = await self._pod_log(job.handle, number, _KEPT_LINES)
            except BackendError as exc:
                logger.warning("job %s: output of task %s not kept: %s", job.id, number, exc)
                continue
            await asyncio.to_thread(write_text, job.log_dir / f"{number}.log", text)

    async def logs(self, job: SubmittedJob, task: int | None, lines: int) -> str:
        """A task's output: its kept file once the job ended, else its pod's log.

        Without ``task``: an array's first task, every node of a multi-node
        job one after the other (as Slurm writes them to one file).

        Raises:
            NotFound: no such task.
            BadRequest: a task asked of a job that has one.
            BackendError: when the API server did not answer or refused.
        """
        spec = job.spec
        indexes = spec.task_indexes
        if task is None:
            chosen = indexes[:1] if spec.array else indexes
        elif not spec.array and spec.nodes == 1:
            raise BadRequest(f"job {job.id} has one task; leave out `task`.", param="task")
        elif task not in indexes:
            raise NotFound(
                f"job {job.id} has no task {task}.",
                fix=f"use one of: {', '.join(str(i) for i in indexes[:20])}",
            )
        else:
            chosen = [task]
        texts = []
        for index in chosen:
            kept = job.log_dir / f"{index}.log"
            if await asyncio.to_thread(kept.exists):
                texts.append(await asyncio.to_thread(tail, kept, lines))
            else:
                texts.append(await self._pod_log(job.handle, index, lines))
        return "".join("".join(texts).splitlines(keepends=True)[-lines:])

    async def _pod_log(self, handle: str, index: int, lines: int) -> str:
        """The last ``lines`` of the output of task ``index``'s newest pod ("" before it ran).

        Raises:
            BackendError: when the API server did not answer or refused.
        """
        labels = f"{selector(self.instance, handle)},{INDEX_LABEL}={index}"
        try:
            pods = await self._call(
                self.connection.core.list_namespaced_pod,
                self.connection.namespace,
                label_selector=labels,
            )
            found = sorted(pods.get("items") or [], key=_created)
            if not found:
                return ""
            data = await call_api(
                self.connection.core.read_namespaced_pod_log,
                found[-1]["metadata"]["name"],
                self.connection.namespace,
                container=CONTAINER_NAME,
                tail_lines=lines,
                timeout_s=self.connection.request_timeout_s,
                fix=self.connection.reach_fix(),
            )
        except ApiException as exc:
            if exc.status in (_NOT_FOUND, _WAITING):
                return ""
            raise self._refused(handle, exc) from exc
        return data.decode(errors="replace")

    async def cancel(self, job: SubmittedJob) -> None:
        """Delete the job's set of Jobs, their pods first; a set already gone is fine.

        Raises:
            BackendError: when the API server did not answer or refused.
        """
        await self._delete(job.handle)

    async def _delete(self, handle: str) -> None:
        try:
            await self._call(
                self.connection.batch.delete_collection_namespaced_job,
                self.connection.namespace,
                label_selector=selector(self.instance, handle),
                propagation_policy="Foreground",
            )
        except ApiException as exc:
            if exc.status != _NOT_FOUND:
                raise self._refused(handle, exc) from exc
        logger.info("Kubernetes job set %s/%s: deleted", self.connection.namespace, handle)

    async def aclose(self) -> None:
        """Close the API client."""
        await self.connection.aclose()

    # ------------------------------------------------------------- helpers

    async def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await self.connection.call(method, *args, **kwargs) or {}

    def _refused(self, handle: str, exc: ApiException) -> BackendError:
        return BackendError(
            f"Kubernetes refused job set {handle} (HTTP {exc.status}): {api_message(exc)}",
            fix=f"check the namespace {self.connection.namespace!r} and this control plane's "
            "permissions (it needs to create, list and delete jobs, and to list pods and read "
            "their logs)",
        )


def _index(item: dict[str, Any]) -> int | None:
    value = (item["metadata"].get("labels") or {}).get(INDEX_LABEL, "")
    return int(value) if str(value).isdigit() else None


def _created(item: dict[str, Any]) -> str:
    return str(item["metadata"].get("creationTimestamp") or "")
