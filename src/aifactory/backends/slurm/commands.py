"""Slurm's client commands, each with its own timeout, and their answers checked.

Slurm 22.05's clients do not always say that they could not ask slurmctld.
Measured on the dev cluster, with slurmctld stopped (its port refuses) and
frozen (SIGSTOP: its port accepts, nothing answers)::

    command                     slurmctld stopped                 slurmctld frozen
    squeue --json               exit 0 after 9 s:                 exit 0 after 10 s, the same
                                {"errors": [{"source":
                                "slurm_load_jobs", ...}],
                                "jobs": []}
    squeue --format --jobs=ID   exit 1 after 18 s                 exit 1 after 20 s
    sbatch --parsable           exit 1 after 9 s
    sbatch --test-only          exit 1 after 18 s                 exit 1 after 20 s
    scancel ID                  exit 8 after 9 s                  exit 140 after 10 s
    sacct -c                    exit 0 at once: it reads the completion log, not slurmctld

An empty job list is no proof that jobs are gone, then: ``jobs_in`` reads
``squeue --json``'s ``errors``, and ``slurm`` sorts a failed command into
``SchedulerUnreachable`` (slurmctld did not answer: nothing is known of any
job) or ``SchedulerCommandFailed`` (it answered, and said no). Each command
has its own timeout (``SlurmTimeouts``), shorter than Slurm's own retries
where a caller waits on the answer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aifactory.backends._commands import run_command
from aifactory.errors import BackendError, SchedulerCommandFailed, SchedulerUnreachable

if TYPE_CHECKING:
    from aifactory.config import Settings

__all__ = ["SlurmTimeouts", "jobs_in", "sbatch", "slurm"]

logger = logging.getLogger(__name__)

# What Slurm's clients print when they could not reach slurmctld (or got no answer).
_UNREACHABLE = (
    "Unable to contact slurm controller",
    "Socket timed out",
    "Zero Bytes were transmitted or received",
    "Communication connection failure",
    "Connection refused",
)
# The client sent its request but heard nothing back: slurmctld may have acted on it.
_UNANSWERED = ("Socket timed out", "Zero Bytes were transmitted or received")
# ESLURM_INVALID_JOB_ID: the job asked for is unknown, which is an answer.
_INVALID_JOB_ID = 2017


@dataclass(frozen=True)
class SlurmTimeouts:
    """How long each Slurm command may take before the backend stops waiting for it.

    Attributes:
        squeue_s: The queue: asked every reconcile interval, and at adoption.
        estimate_s: ``sbatch --test-only``, asked before a burst replica is placed.
        sbatch_s: A submission.
        scancel_s: A cancellation.
        sacct_s: Accounting (slurmdbd, or the completion log).
    """

    squeue_s: float = 10.0
    estimate_s: float = 10.0
    sbatch_s: float = 30.0
    scancel_s: float = 30.0
    sacct_s: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> SlurmTimeouts:
        """Queries (squeue, the estimate) within the query timeout; the others the command one."""
        query, command = settings.slurm_query_timeout_s, settings.slurm_command_timeout_s
        return cls(query, query, command, command, command)


async def slurm(
    argv: list[str],
    *,
    timeout_s: float,
    stdin: str | None = None,
    with_stderr: bool = False,
    env: dict[str, str] | None = None,
) -> str:
    """Run one Slurm command (``run_command``) and return its output.

    Raises:
        SchedulerUnreachable: it timed out, or could not reach slurmctld.
        SchedulerCommandFailed: any other non-zero exit, or a missing program.
    """
    try:
        return await run_command(
            argv, timeout_s=timeout_s, stdin=stdin, with_stderr=with_stderr, env=env
        )
    except SchedulerCommandFailed as exc:
        if exc.returncode is None or any(sign in exc.stderr for sign in _UNREACHABLE):
            raise SchedulerUnreachable(exc.argv, exc.returncode, exc.stdout, exc.stderr) from exc
        raise


async def sbatch(
    argv: list[str],
    *,
    script: str,
    env: dict[str, str] | None,
    job_name: str,
    tag: str,
    timeouts: SlurmTimeouts,
) -> str:
    """``sbatch --parsable`` (``argv``) with ``script`` on stdin; return the job id.

    When the answer was lost after slurmctld may have acted on the request
    (a timeout, not a refused connection), the job is looked for by its name
    and tag before giving up, so that the caller's retry does not submit it twice.

    Raises:
        SchedulerUnreachable: no answer, and no such job found (or no answer to the lookup).
        SchedulerCommandFailed: sbatch refused the job.
        BackendError: sbatch answered something that is not a job id.
    """
    try:
        out = await slurm(argv, timeout_s=timeouts.sbatch_s, stdin=script, env=env)
    except SchedulerUnreachable as exc:
        if not _may_have_reached(exc):
            raise
        try:
            found = await _job_tagged(job_name, tag, timeouts.squeue_s)
        except SchedulerCommandFailed:
            raise exc from None
        if found is None:
            raise
        logger.warning("sbatch's answer was lost, but job %s carries %s: submitted", found, tag)
        return found
    job_id = out.strip().split(";")[0]
    if not job_id.isdigit():
        raise BackendError(f"sbatch answered {out!r}, not a job id.")
    return job_id


def _may_have_reached(exc: SchedulerUnreachable) -> bool:
    # A refused connection never reached slurmctld; a timeout (ours or
    # Slurm's) may have come after it acted.
    return exc.returncode is None or any(sign in exc.stderr for sign in _UNANSWERED)


async def _job_tagged(job_name: str, tag: str, timeout_s: float) -> str | None:
    """The id of the job called ``job_name`` whose comment is ``tag``, if Slurm has one."""
    out = await slurm(
        ["squeue", "--noheader", "--states=all", f"--name={job_name}", "--format=%F|%k"],
        timeout_s=timeout_s,
    )
    for line in out.splitlines():
        job_id, _, comment = line.partition("|")
        if comment == tag and job_id.isdigit():
            return job_id
    return None


def jobs_in(answer: str, argv: Sequence[str]) -> list[dict[str, Any]]:
    """The ``jobs`` of a ``squeue --json`` answer, once its ``errors`` say it could look.

    An error saying only that a job asked for is unknown (newer Slurm
    honours ``--jobs`` with ``--json``) is an answer: that job is not listed.

    Raises:
        SchedulerUnreachable: the answer carries errors (Slurm 22.05 exits 0
            with ``"jobs": []`` and an error when slurmctld does not answer).
        SchedulerCommandFailed: the answer is not squeue's JSON.
    """
    try:
        document = json.loads(answer)
    except ValueError:
        document = None
    if not isinstance(document, dict) or not isinstance(document.get("jobs"), list):
        raise SchedulerCommandFailed(
            list(argv), 0, stderr=f"answered with no job list: {answer[:200]!r}"
        )
    errors = document.get("errors") or []
    if not isinstance(errors, list):
        errors = [errors]
    told = [_described(error) for error in errors if not _unknown_job(error)]
    if told:
        raise SchedulerUnreachable(list(argv), 0, stderr="; ".join(told))
    jobs: list[dict[str, Any]] = [job for job in document["jobs"] if isinstance(job, dict)]
    return jobs


def _unknown_job(error: Any) -> bool:
    if not isinstance(error, dict):
        return False
    words = f"{error.get('error', '')} {error.get('description', '')}"
    return error.get("error_number") == _INVALID_JOB_ID or "Invalid job id" in words


def _described(error: Any) -> str:
    if not isinstance(error, dict):
        return str(error)
    source, description = error.get("source"), error.get("description") or error.get("error")
    cause = error.get("error") if error.get("error") != description else None
    text = f"{source}: {description}" if source else str(description)
    return f"{text} ({cause})" if cause else text
