"""Batch jobs on Slurm: submit a rendered script, read each task's state and output, cancel.

Replicas (``backend.py``) are long-running servers; batch jobs run a command to
its end, possibly on several nodes and as an array of tasks. Both use the
same commands and the same state table::

    JobsManager                    SlurmJobRunner                 Slurm
    -----------                    --------------                 -----
    submit(job)     ------------>  render the script (job_script.py)
                                   sbatch --parsable  (stdin)  -> job id
                                   (as the job's identity: identity.py)
    tasks(job)      ------------>  squeue --json --states=all  -> one entry per task
                                   (sacct -c --allusers when it left squeue)
    logs(job, task) ------------>  LOG_DIR/<job id>[_<task>].log (Slurm writes them)
    cancel(job)     ------------>  scancel (as the job's identity, unless root)

A job runs as its tenant's Unix identity (root submits with ``sbatch
--uid/--gid``, an unprivileged control plane through the site's launch
prefix), so ``squeue -u``/``sacct -u`` show it as the tenant's and it writes
its output into its own folder. It runs under its tenant's Slurm account
(the spec cannot name another) and their partition and QOS defaults, else
the site's, and the site's walltime when it sets no ``time_limit``. ``squeue``
reports the raw wait status: the exit code is its high byte and a killing
signal its low seven bits.

When slurmctld does not answer, ``tasks``, ``submit`` and ``cancel`` raise
``SchedulerUnreachable`` (``commands`` checks each answer): a job is
never taken for forgotten because Slurm could not be asked.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from aifactory.backends._commands import run_command
from aifactory.backends._files import tail
from aifactory.backends.base import AllocationState, JobTask, SubmittedJob
from aifactory.backends.slurm.commands import SlurmTimeouts, jobs_in, sbatch, slurm
from aifactory.backends.slurm.identity import sbatch_command, scancel_command, tail_command
from aifactory.backends.slurm.job_script import JobScriptContext, render_batch_script
from aifactory.backends.slurm.script import BATCH_JOB_TAG, SiteDefaults, job_tag
from aifactory.backends.slurm.states import job_state, plain_reason, slurm_number
from aifactory.config import load_settings
from aifactory.errors import (
    BackendError,
    BadRequest,
    NotFound,
    SchedulerCommandFailed,
    SchedulerUnreachable,
)
from aifactory.identity import Identity, Privilege
from aifactory.specs import Job, expand_indexes

if TYPE_CHECKING:
    from aifactory.config import Settings

logger = logging.getLogger(__name__)

_SACCT_FORMAT = "JobID,State,ExitCode,NodeList,Start,End"
# Reading an output file through the launch prefix: no scheduler is asked.
_TAIL_TIMEOUT_S = 30.0


class SlurmJobRunner:
    """Submits, observes and cancels batch jobs with Slurm's own commands.

    Args:
        instance: This control plane's id (in each job's ``--comment``).
        timeouts: How long each Slurm command may take.
        site: The operator's partition, account, QOS and time limit defaults and preamble.
        privilege: How this control plane acts as a job's identity (default:
            what the settings describe).
    """

    name = "slurm"
    scheduler = "Slurm"
    rendered_name = "job.sh"
    cancel_deletes = False

    def __init__(
        self,
        instance: str,
        timeouts: SlurmTimeouts | None = None,
        site: SiteDefaults | None = None,
        privilege: Privilege | None = None,
    ) -> None:
        self.instance = instance
        self.timeouts = timeouts or SlurmTimeouts()
        self.site = site or SiteDefaults()
        self.privilege = privilege or load_settings().privilege

    @classmethod
    def from_settings(cls, settings: Settings, instance: str) -> SlurmJobRunner:
        """The runner the settings describe (site defaults, command timeouts, privilege)."""
        return cls(
            instance,
            SlurmTimeouts.from_settings(settings),
            SiteDefaults.from_settings(settings),
            settings.privilege,
        )

    def tag(self, job_id: str) -> str:
        """The ``--comment`` that marks a batch job as this control plane's."""
        return job_tag(self.instance, BATCH_JOB_TAG + job_id)

    def for_tenant(
        self, job: Job, account: str | None, partition: str | None, qos: str | None
    ) -> Job:
        """``job`` under the tenant's account, with their partition and QOS where it sets none."""
        return job.model_copy(update={"slurm": job.slurm.for_tenant(account, partition, qos)})

    def render(self, job: Job, job_id: str, log_dir: Path, identity: Identity | None = None) -> str:
        """The batch script ``submit`` hands to sbatch.

        ``identity`` goes on sbatch's command line (``--uid``/``--gid`` or the
        launch prefix), not into the script.

        Raises:
            BackendError: when a value could not be rendered safely.
        """
        context = JobScriptContext(job_id, self.tag(job_id), log_dir, self.site)
        return render_batch_script(job, context)

    async def submit(self, job: Job, job_id: str, log_dir: Path, identity: Identity | None) -> str:
        """Render ``job``'s script and sbatch it as ``identity``; return Slurm's job id.

        Raises:
            SchedulerUnreachable: when slurmctld did not answer (and holds no
                job of this one's: one whose answer was lost is returned).
            BackendError: when a value could not be rendered safely, or sbatch
                refused the job.
            ConfigError: when this control plane cannot act as ``identity``.
        """
        script = self.render(job, job_id, log_dir)
        command = sbatch_command(self.privilege, identity, ["--parsable"], log_dir)
        try:
            return await sbatch(
                command.argv,
                script=script,
                env=command.env,
                job_name=f"aif-job-{job.name}",
                tag=self.tag(job_id),
                timeouts=self.timeouts,
            )
        except SchedulerUnreachable:
            raise
        except SchedulerCommandFailed as exc:
            missing = exc.returncode == 127
            raise BackendError(
                f"sbatch refused the job: {exc.stderr.strip() or exc}",
                fix="install Slurm's client commands (sbatch, squeue, scancel) here"
                if missing
                else "check partition, account, QOS, node count and limits (`sinfo`)",
            ) from exc

    async def tasks(self, job: SubmittedJob) -> list[JobTask]:
        """Every task of the job, sorted by array index.

        An empty list means Slurm knows nothing of the job any more (neither
        ``squeue`` nor the completion log), never that it could not be asked.

        Raises:
            SchedulerUnreachable: when slurmctld (or the completion log) did not answer.
            SchedulerCommandFailed: when squeue failed otherwise.
        """
        slurm_id = job.handle
        argv = ["squeue", "--json", "--states=all", f"--jobs={slurm_id}"]
        out = await slurm(argv, timeout_s=self.timeouts.squeue_s)
        found = parse_squeue(out, slurm_id, argv)
        if not found:
            found = await self._from_sacct(slurm_id)
        return found

    def nodes_per_task(self, job: Job) -> int:
        """Every node of the job: a Slurm task (an array task, or the job) holds them all."""
        return job.nodes

    async def keep_output(self, job: SubmittedJob, tasks: Sequence[JobTask]) -> None:
        """Nothing to keep: Slurm writes the output to the job's folder itself."""

    async def logs(self, job: SubmittedJob, task: int | None, lines: int) -> str:
        """The end of ``<job id>.log``, or of an array task's ``<job id>_<task>.log``.

        Without ``task``: an array's first known task ("" before any is known).

        Raises:
            NotFound: no such array task.
            BadRequest: a task asked of a job that is not an array.
        """
        if not job.spec.array:
            if task is not None:
                raise BadRequest(f"job {job.id} is not an array; leave out `task`.", param="task")
            name = f"{job.handle}.log"
        else:
            known = sorted(job.known_tasks)
            if task is None:
                if not known:
                    return ""
                task = known[0]
            elif known and task not in known:
                raise NotFound(
                    f"job {job.id} has no array task {task}.",
                    fix=f"use one of: {', '.join(str(k) for k in known)}",
                )
            name = f"{job.handle}_{task}.log"
        return await self._tail(job, job.log_dir / name, lines)

    async def _tail(self, job: SubmittedJob, path: Path, lines: int) -> str:
        """The end of ``path``, read as the job's identity where only it may (a prefix)."""
        argv = tail_command(self.privilege, job.identity, path, lines)
        if argv is None:
            return await asyncio.to_thread(tail, path, lines)
        try:
            return await run_command(argv, timeout_s=_TAIL_TIMEOUT_S)
        except SchedulerCommandFailed as exc:
            if "No such file" in exc.stderr:
                return ""  # not written yet
            raise

    async def cancel(self, job: SubmittedJob) -> None:
        """``scancel`` the job (every array task) as its identity; a job already gone is fine.

        Raises:
            SchedulerUnreachable: when slurmctld did not answer (nothing was cancelled).
            SchedulerCommandFailed: when scancel fails for another reason.
            ConfigError: when this control plane cannot act as the job's identity.
        """
        argv = scancel_command(self.privilege, job.identity, job.handle)
        try:
            await slurm(argv, timeout_s=self.timeouts.scancel_s)
        except SchedulerCommandFailed as exc:
            if "Invalid job id" not in exc.stderr and "already completing" not in exc.stderr:
                raise
        logger.info("job %s: cancel requested (Slurm job %s)", job.id, job.handle)

    async def aclose(self) -> None:
        """Nothing to release: every Slurm command is its own process."""

    async def _from_sacct(self, slurm_id: str) -> list[JobTask]:
        # The job left squeue (MinJobAge): the completion log still knows how
        # it ended. Without a completion log, say so rather than guess; but a
        # log that did not answer in time says nothing. The job is its
        # identity's: without --allusers sacct shows a caller's own.
        try:
            out = await slurm(
                [
                    "sacct",
                    "-c",
                    "--allusers",
                    "-P",
                    "-n",
                    "-j",
                    slurm_id,
                    f"--format={_SACCT_FORMAT}",
                ],
                timeout_s=self.timeouts.sacct_s,
            )
        except SchedulerUnreachable:
            raise
        except SchedulerCommandFailed as exc:
            logger.info("sacct -c could not tell about job %s: %s", slurm_id, exc)
            return []
        return parse_sacct(out, slurm_id)


def decode_wait_status(wait_status: int) -> tuple[int, int | None]:
    """Split a raw wait status into (exit code, killing signal or None)."""
    signal = wait_status & 0x7F
    return (wait_status >> 8) & 0xFF, signal or None


def _reason(state: AllocationState, slurm_state: str, reason: str) -> str:
    if state is AllocationState.RUNNING:
        return ""
    if state.finished:
        return "" if reason in ("", "None") else plain_reason(reason)
    return plain_reason(reason) if reason else slurm_state.lower()


def parse_squeue(
    text: str, slurm_id: str, argv: Sequence[str] = ("squeue", "--json")
) -> list[JobTask]:
    """The tasks of job ``slurm_id`` in ``squeue --json`` output (of ``argv``).

    Array tasks that have not started yet share one entry (``array_task_string``
    ``"3-9"``); it is expanded to one pending task per index.

    Raises:
        SchedulerUnreachable: the answer says slurmctld did not answer.
        SchedulerCommandFailed: the answer is not squeue's JSON.
    """
    tasks: dict[int | None, JobTask] = {}
    for job in jobs_in(text, argv):
        own_id = str(job.get("job_id", ""))
        array_id = str(job.get("array_job_id") or "")
        if own_id != slurm_id and array_id != slurm_id:
            continue  # squeue may list every job, whatever --jobs says
        slurm_state = job.get("job_state", "")
        if isinstance(slurm_state, list):  # newer Slurm: a list of flags
            slurm_state = slurm_state[0] if slurm_state else ""
        slurm_state = str(slurm_state)
        state = job_state(slurm_state)
        wait_status = job.get("exit_code")
        exit_code = signal = None
        if state.finished and isinstance(wait_status, int):
            exit_code, signal = decode_wait_status(wait_status)
        started, ended = slurm_number(job.get("start_time")), slurm_number(job.get("end_time"))
        task = JobTask(
            task=None,
            slurm_job_id=own_id,
            state=state,
            slurm_state=slurm_state,
            reason=_reason(state, slurm_state, str(job.get("state_reason") or "")),
            exit_code=exit_code,
            signal=signal,
            nodes=str(job.get("nodes") or ""),
            started_at=started if started and state is not AllocationState.PENDING else None,
            ended_at=ended if ended and state.finished else None,
            # A pending job's start_time is the backfill scheduler's estimate.
            expected_start=started if started and state is AllocationState.PENDING else None,
        )
        index = job.get("array_task_id")
        pending_indexes = str(job.get("array_task_string") or "")
        if isinstance(index, int):
            tasks[index] = replace(task, task=index)
        elif pending_indexes:
            for number in expand_indexes(pending_indexes):
                tasks.setdefault(number, replace(task, task=number))
        else:
            tasks[None] = task
    return sorted(tasks.values(), key=lambda t: -1 if t.task is None else t.task)


def parse_sacct(text: str, slurm_id: str) -> list[JobTask]:
    """The finished job ``slurm_id`` in ``sacct -c -P -n`` output (not arrays)."""
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) < 6 or parts[0] != slurm_id:
            continue
        slurm_state = parts[1].split()[0] if parts[1] else ""
        code, _, signal = parts[2].partition(":")
        state = job_state(slurm_state)
        return [
            JobTask(
                task=None,
                slurm_job_id=slurm_id,
                state=state,
                slurm_state=slurm_state,
                reason="from the completion log",
                exit_code=int(code) if code.isdigit() else None,
                signal=int(signal) if signal.isdigit() and int(signal) else None,
                nodes=parts[3],
            )
        ]
    return []
