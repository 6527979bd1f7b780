"""Slurm backend: a replica is one batch job, driven only through Slurm's commands.

Each job is submitted as its replica's identity (``identity``: root's
``sbatch --uid/--gid``, else the site's launch prefix), never as the control
plane: ``sbatch --parsable`` to submit (the script on stdin), ``squeue`` to
observe, ``sacct --allusers`` for jobs that left the queue, ``scancel`` to
stop (as the job's owner through the prefix; root cancels any job). The
frequent status poll uses ``squeue``'s formatted output with ``--jobs``:
Slurm 22.05's ``--json`` ignores ``--jobs`` and returns every job slurmctld
remembers (56 ms and 750 KB for ~200 jobs here, growing with the cluster).
``--json`` (parsed off the event loop) is used for the rare scan of this
control plane's tagged jobs, with formatted output as the fallback on Slurm
without it; it lists every user's jobs, so adoption after a restart finds
each tenant's (a site with ``PrivateData=jobs`` shows them to root only). No
plugins: site policy stays in charge.

Every command has its own timeout and runs off the event loop, and its
answer is checked (``commands``): when slurmctld does not answer,
``status`` reports each job ``UNKNOWN`` with ``answered`` False, and
``tagged``, ``submit`` and ``cancel`` raise ``SchedulerUnreachable``; an
empty or missing answer never reads as "gone". A job submitted without a
time limit gets the site's default walltime (``SiteDefaults.time_limit_s``).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

from aifactory.backends.base import (
    AllocationRequest,
    AllocationState,
    AllocationStatus,
    Elapsed,
)
from aifactory.backends.slurm.commands import SlurmTimeouts, jobs_in, sbatch, slurm
from aifactory.backends.slurm.identity import Command, job_owner, sbatch_command, scancel_command
from aifactory.backends.slurm.script import (
    BATCH_JOB_TAG,
    SiteDefaults,
    job_tag,
    render_job_script,
)
from aifactory.backends.slurm.states import job_state, plain_reason, slurm_number
from aifactory.config import Settings, load_settings
from aifactory.errors import BackendError, SchedulerCommandFailed, SchedulerUnreachable
from aifactory.identity import Identity, Privilege

logger = logging.getLogger(__name__)

# The comment comes last: it is the one field that may hold "|".
_FORMAT = "%i|%T|%r|%S|%e|%l|%N|%u|%g|%k"
# Slurm's INFINITE and NO_VAL time limits (minutes), as squeue --json writes them.
_NO_LIMIT = (0, 0xFFFFFFFF, 0xFFFFFFFE)
# sbatch --test-only: "sbatch: Job 834 to start at 2026-11-28T13:27:30 using 1 processors ..."
_WOULD_START = re.compile(r"to start at (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)")


def seconds_until_start(test_only_output: str, now: float) -> float | None:
    """The start estimate in ``sbatch --test-only``'s answer, as seconds from ``now``."""
    found = _WOULD_START.search(test_only_output)
    if found is None:
        return None
    # slurmctld writes its local time, as squeue --start does.
    return max(0.0, _timestamp(found.group(1)) - now)


def parse_elapsed(text: str, job_id: str) -> Elapsed | None:
    """Start, end and node count of ``job_id`` in ``sacct -P`` (JobIDRaw,Start,End,NNodes)."""
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) != 4 or parts[0] != job_id:
            continue
        start, end = _timestamp(parts[1]), _timestamp(parts[2])  # "Unknown" while running
        if start and end and parts[3].isdigit():
            return Elapsed(start, end, int(parts[3]))
    return None


class Queued(NamedTuple):
    """One job as ``squeue`` lists it: its tag, its state and whose it is."""

    comment: str
    status: AllocationStatus
    user: str = ""
    group: str = ""


class SlurmBackend:
    """Runs each replica as one Slurm batch job, submitted as the replica's identity.

    Args:
        instance: This control plane's id (in each job's ``--comment``).
        site: The operator's partition, account, QOS and time limit defaults and preamble.
        timeouts: How long each Slurm command may take.
        privilege: How this control plane acts as an identity (default: what
            the settings describe).
    """

    name = "slurm"
    advertise_host = "auto"

    def __init__(
        self,
        instance: str,
        site: SiteDefaults | None = None,
        timeouts: SlurmTimeouts | None = None,
        privilege: Privilege | None = None,
    ) -> None:
        self.instance = instance
        self.site = site or SiteDefaults()
        self.timeouts = timeouts or SlurmTimeouts()
        self.privilege = privilege or load_settings().privilege
        self._json = True
        # Job id -> its owner, for scancel through the prefix (root needs none);
        # an adopted job's owner is asked of squeue when it is cancelled.
        self._owners: dict[str, Identity] = {}

    @classmethod
    def from_settings(cls, settings: Settings, instance: str) -> SlurmBackend:
        """The backend the settings describe (site defaults, timeouts, privilege)."""
        return cls(
            instance,
            SiteDefaults.from_settings(settings),
            SlurmTimeouts.from_settings(settings),
            settings.privilege,
        )

    def render(self, request: AllocationRequest) -> str:
        """The batch script, exactly as submitted."""
        return render_job_script(request, self.instance, self.site)

    async def submit(self, request: AllocationRequest) -> str:
        """``sbatch --parsable`` as the request's identity, the script on stdin; return the job id.

        Raises:
            SchedulerUnreachable: slurmctld did not answer (and holds no job
                of the replica's: one whose answer was lost is returned).
            BackendError: sbatch refused the job, or the log folder cannot be
                the identity's.
            ConfigError: this control plane cannot act as the identity.
        """
        script = self.render(request)
        await asyncio.to_thread(self._log_folder, request)
        command = self._sbatch(request, ["--parsable"])
        try:
            job_id = await sbatch(
                command.argv,
                script=script,
                env=command.env,
                job_name=f"aif-{request.replica_id}",
                tag=job_tag(self.instance, request.replica_id),
                timeouts=self.timeouts,
            )
        except SchedulerUnreachable:
            raise
        except SchedulerCommandFailed as exc:
            raise BackendError(
                f"sbatch refused replica {request.replica_id}: {exc.stderr.strip() or exc}",
                fix="check partition, account, QOS and limits with your site's policy",
            ) from exc
        if request.identity is not None and self.privilege.mode == "prefix":
            self._owners[job_id] = request.identity
        logger.info(
            "replica %s: submitted as Slurm job %s%s",
            request.replica_id,
            job_id,
            f" as {request.identity.describe()}" if request.identity else "",
        )
        return job_id

    def _sbatch(self, request: AllocationRequest, options: list[str]) -> Command:
        """How to run sbatch ``options`` as the request's identity, in its log's folder."""
        return sbatch_command(self.privilege, request.identity, options, request.log_path.parent)

    def _log_folder(self, request: AllocationRequest) -> None:
        """Make the log's folder if missing: the identity's, since the job writes there as it."""
        folder = request.log_path.parent
        if folder.is_dir():
            return
        if request.identity is None:
            folder.mkdir(parents=True, exist_ok=True)
            return
        try:
            self.privilege.make_dir(request.identity, folder)
        except ValueError:
            raise BackendError(
                f"the log folder {folder} of replica {request.replica_id} is missing and lies "
                f"outside {request.identity.user}'s own directory, so the job could not write it.",
                fix=f"put it under {self.privilege.workload_dir(request.identity)}",
            ) from None

    async def start_delay(self, request: AllocationRequest) -> float | None:
        """Seconds until Slurm would start ``request``: ``sbatch --test-only`` with its script.

        The backfill scheduler's own estimate, the same figure ``squeue
        --start`` shows for a pending job; None when Slurm would refuse the
        job or does not answer.
        """
        command = self._sbatch(request, ["--test-only"])
        try:
            out = await slurm(
                command.argv,
                timeout_s=self.timeouts.estimate_s,
                stdin=self.render(request),
                with_stderr=True,
                env=command.env,
            )
        except SchedulerCommandFailed as exc:
            logger.info("sbatch --test-only for %s: %s", request.service, exc)
            return None
        return seconds_until_start(out, time.time())

    async def status(self, handles: Sequence[str]) -> dict[str, AllocationStatus]:
        """Each job's state from ``squeue``, else ``sacct``.

        Every job is ``AllocationStatus.no_answer`` when squeue did not
        answer; ``UNKNOWN`` (answered) when Slurm answered but knows no such
        job any more.
        """
        if not handles:
            return {}
        try:
            jobs = await self._query(list(handles))
        except SchedulerCommandFailed as exc:
            logger.warning("squeue failed; keeping replicas as they are: %s", exc)
            return {h: AllocationStatus.no_answer("Slurm did not answer") for h in handles}
        missing = [h for h in handles if h not in jobs]
        if missing:
            jobs.update(await self._accounting(missing))
        for handle, status in jobs.items():
            if status.state.finished:
                self._owners.pop(handle, None)
        forgotten = AllocationStatus(AllocationState.UNKNOWN, "Slurm no longer knows this job")
        return {h: jobs.get(h, forgotten) for h in handles}

    async def _accounting(self, job_ids: list[str]) -> dict[str, AllocationStatus]:
        """Ask ``sacct`` (slurmdbd, else the job-completion log) about jobs gone from squeue.

        ``--allusers``: the jobs are their identities', and sacct shows an
        ordinary caller only its own.
        """
        fields = ["--allusers", "--noheader", "--parsable2", "--format=JobIDRaw,State,ExitCode"]
        select = ["--jobs=" + ",".join(job_ids)]
        for source in ([], ["--completion"]):
            try:
                out = await slurm(
                    ["sacct", *source, *fields, *select], timeout_s=self.timeouts.sacct_s
                )
            except SchedulerCommandFailed:
                continue
            found = {}
            for line in out.splitlines():
                job_id, _, rest = line.partition("|")
                state, _, exit_code = rest.partition("|")
                if job_id in job_ids and state:
                    name = state.split()[0]  # "CANCELLED by 0"
                    code = int(exit_code.split(":")[0]) if exit_code[:1].isdigit() else None
                    found[job_id] = AllocationStatus(
                        job_state(name), f"Slurm job {name.lower()} (from accounting)", code
                    )
            return found
        return {}

    async def elapsed(self, handle: str) -> Elapsed | None:
        """When Slurm says the ended job ran, and on how many nodes (``sacct``).

        Asks slurmdbd, else the job-completion log; None while the job has
        not ended or neither knows it.
        """
        fields = ["--allusers", "--noheader", "--parsable2", "--format=JobIDRaw,Start,End,NNodes"]
        for source in ([], ["--completion"]):
            try:
                out = await slurm(
                    ["sacct", *source, *fields, f"--jobs={handle}"],
                    timeout_s=self.timeouts.sacct_s,
                )
            except SchedulerCommandFailed:
                continue
            found = parse_elapsed(out, handle)
            if found is not None:
                return found
        return None

    async def cancel(self, handle: str) -> None:
        """``scancel`` the job, as its owner unless root; a job already gone is fine.

        Raises:
            SchedulerUnreachable: slurmctld did not answer (nothing was cancelled).
            BackendError: scancel failed, or its owner is no one this control plane can act as.
        """
        owner = await self._owner(handle) if self.privilege.mode == "prefix" else None
        try:
            await slurm(
                scancel_command(self.privilege, owner, handle), timeout_s=self.timeouts.scancel_s
            )
        except SchedulerCommandFailed as exc:
            if "Invalid job id" not in exc.stderr and "already completing" not in exc.stderr:
                raise
        self._owners.pop(handle, None)

    async def _owner(self, handle: str) -> Identity | None:
        """Who the job runs as: known since submit or adoption, else asked of squeue."""
        if handle in self._owners:
            return self._owners[handle]
        found = (await self._formatted([f"--jobs={handle}"])).get(handle)
        if found is None or not found.user:
            return None  # gone: scancel will say so
        return job_owner(handle, found.user, found.group)

    async def tagged(self) -> dict[str, str]:
        """Live replica jobs carrying this control plane's tag: replica id -> job id.

        Its batch jobs (``jobs``) carry the tag too, and are left out:
        they are no replica, and no stray to cancel.

        Raises:
            SchedulerUnreachable: slurmctld did not answer (an empty answer
                always means that none of ours runs).
            SchedulerCommandFailed: squeue failed otherwise.
        """
        prefix = job_tag(self.instance, "")
        found = {}
        for job_id, job in (await self._query_all()).items():
            replica_id = job.comment.removeprefix(prefix)
            if replica_id == job.comment or replica_id.startswith(BATCH_JOB_TAG):
                continue
            if not job.status.state.finished:
                found[replica_id] = job_id
        return found

    async def aclose(self) -> None:
        """Nothing to release: jobs are stopped by the reconciler, one by one."""

    async def _query(self, job_ids: list[str]) -> dict[str, AllocationStatus]:
        everything = await self._formatted(["--jobs=" + ",".join(job_ids)])
        return {job_id: job.status for job_id, job in everything.items()}

    async def _query_all(self) -> dict[str, Queued]:
        """Every user's jobs (not ``--me``: each runs as its own identity)."""
        if self._json:
            argv = ["squeue", "--json", "--states=all"]
            try:
                out = await slurm(argv, timeout_s=self.timeouts.squeue_s)
            except SchedulerUnreachable:
                raise
            except SchedulerCommandFailed as exc:
                if "json" not in (exc.stderr + exc.stdout).lower():
                    raise
                logger.info("squeue has no --json here; using formatted output")
                self._json = False
            else:
                return await asyncio.to_thread(_parse_json, out, argv)
        return await self._formatted([])

    async def _formatted(self, select: list[str]) -> dict[str, Queued]:
        try:
            out = await slurm(
                ["squeue", "--noheader", "--states=all", f"--format={_FORMAT}", *select],
                timeout_s=self.timeouts.squeue_s,
            )
        except SchedulerCommandFailed as exc:
            if "Invalid job id" in exc.stderr:
                return {}  # every job asked for has left slurmctld's memory
            raise
        return _parse_formatted(out)


def _status(state_name: str, reason: str, node: str, start: float, end: float) -> AllocationStatus:
    state = job_state(state_name)
    now = time.time()
    if state.finished:
        said = "" if reason in ("", "None") else f": {plain_reason(reason)}"
        described = f"Slurm job {state_name.lower()}{said}"
    elif state is AllocationState.RUNNING:
        described = ""
    else:
        described = plain_reason(reason)
    return AllocationStatus(
        state=state,
        reason=described,
        node=node,
        ends_at=end if state is AllocationState.RUNNING and end > now else None,
        starts_at=start if state is AllocationState.PENDING and start > 0 else None,
    )


def _parse_json(text: str, argv: Sequence[str] = ("squeue", "--json")) -> dict[str, Queued]:
    """Every job of a ``squeue --json`` answer (``argv``), once its ``errors`` say it could look.

    Raises:
        SchedulerUnreachable: the answer says slurmctld did not answer.
        SchedulerCommandFailed: the answer is not squeue's JSON.
    """
    result = {}
    for job in jobs_in(text, argv):
        state = job.get("job_state", "")
        if isinstance(state, list):  # newer Slurm reports a list of flags
            state = state[0] if state else ""
        status = _status(
            str(state),
            str(job.get("state_reason", "")),
            str(job.get("batch_host") or job.get("nodes") or ""),
            slurm_number(job.get("start_time")),
            slurm_number(job.get("end_time")) if _limited(job.get("time_limit")) else 0.0,
        )
        exit_code = job.get("exit_code")
        if status.state.finished and isinstance(exit_code, int):
            status = _with_exit(status, exit_code)
        result[str(job["job_id"])] = Queued(
            str(job.get("comment") or ""),
            status,
            str(job.get("user_name") or ""),
            str(job.get("group_name") or ""),
        )
    return result


def _limited(time_limit: Any) -> bool:
    """Whether squeue's ``time_limit`` is a real limit (not INFINITE, not unset)."""
    if isinstance(time_limit, dict):  # newer Slurm: {"set": …, "infinite": …, "number": …}
        if time_limit.get("infinite") or not time_limit.get("set", True):
            return False
        time_limit = time_limit.get("number")
    return isinstance(time_limit, int) and time_limit not in _NO_LIMIT


def _with_exit(status: AllocationStatus, wait_status: int) -> AllocationStatus:
    # squeue reports the raw wait status: the exit code is in the high byte.
    code = wait_status >> 8
    reason = status.reason
    if code:
        reason = f"{reason}, exit code {code}"
    return AllocationStatus(status.state, reason, code, status.node, None, None)


def _parse_formatted(text: str) -> dict[str, Queued]:
    result = {}
    for line in text.splitlines():
        parts = line.split("|", 9)
        if len(parts) != 10:
            continue
        job_id, state, reason, start, end, limit, nodes, user, group, comment = parts
        # An unlimited job's end time is 365 days on: no end, not "31535982s left".
        ends = _timestamp(end) if limit not in ("UNLIMITED", "NOT_SET", "INVALID") else 0.0
        result[job_id] = Queued(
            comment if comment != "(null)" else "",
            _status(state, reason, nodes, _timestamp(start), ends),
            user,
            group,
        )
    return result


def _timestamp(text: str) -> float:
    try:
        return time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return 0.0
