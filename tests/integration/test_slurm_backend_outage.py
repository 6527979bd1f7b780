"""A slurmctld outage on the real cluster: the backend says "no answer", never "gone" (issue 16).

A replica (a ``sleep``) and a batch job are submitted without a time limit,
as the workload user: squeue shows the site's default walltime on both, and
the replica's time left is that, not a year. Then slurmctld is stopped by
its pid (``slurm_outage``) and every verb of the backend and the job runner
is asked at once: ``status`` answers UNKNOWN, not answered; ``tagged``,
``tasks``, ``cancel`` and ``submit`` raise ``SchedulerUnreachable``; each
within its own timeout. Once slurmctld is back, the same jobs are found
running: nothing was taken for gone, and the submit that got no answer left
no job behind.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from aifactory.backends import (
    AllocationRequest,
    AllocationState,
    AllocationStatus,
    SlurmJobRunner,
    SlurmTimeouts,
    SubmittedJob,
)
from aifactory.backends.slurm.backend import SlurmBackend
from aifactory.errors import SchedulerUnreachable
from aifactory.identity import Identity, Privilege, workload_user
from aifactory.specs import Resources, load_job
from unix_users import WORKLOAD_USER, make_traversable

from .slurm import needs_slurm_as_root
from .slurm_outage import slurmctld_down
from .waiting import wait_until_async

pytestmark = [
    pytest.mark.slurm,
    needs_slurm_as_root("it stops slurmctld and submits as the workload user"),
]

DAY_S = 24 * 3600
# Generous: Slurm's clients give up after 9-20 s by themselves; ours stop at theirs.
MARGIN_S = 8


@dataclass(frozen=True)
class Site:
    """A root control plane's data directory, its instance tag and the workload identity."""

    privilege: Privilege
    identity: Identity
    instance: str


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    make_traversable(tmp_path)
    data_dir = tmp_path / "aifactory"
    data_dir.mkdir(mode=0o711)
    instance = "outage-" + uuid.uuid4().hex[:6]
    yield Site(Privilege("root", data_dir), workload_user(WORKLOAD_USER), instance)
    # Leave nothing of this test running on the shared cluster.
    for job_id, _ in _ours(instance):
        subprocess.run(["scancel", job_id], check=False, timeout=30)


def _ours(instance: str) -> list[tuple[str, str]]:
    """(job id, time limit) of each job in the queue tagged by ``instance``."""
    out = subprocess.run(
        ["squeue", "--noheader", "--format=%i|%l|%k"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    rows = [line.split("|", 2) for line in out.splitlines()]
    return [
        (job_id, limit) for job_id, limit, tag in rows if tag.startswith(f"aifactory:{instance}:")
    ]


def _replica(site: Site, replica_id: str) -> AllocationRequest:
    return AllocationRequest(
        replica_id=replica_id,
        service="outage",
        argv=("sleep", "600"),
        resources=Resources(cpus=1, memory_gib=0.25),
        time_limit_s=None,
        log_path=site.privilege.workload_dir(site.identity) / "logs" / f"{replica_id}.log",
        identity=site.identity,
    )


async def _running(backend: SlurmBackend, handle: str) -> AllocationStatus:
    async def status() -> AllocationStatus:
        return (await backend.status([handle]))[handle]

    return await wait_until_async(
        status,
        lambda found: found.state is AllocationState.RUNNING,
        timeout_s=60,
        what=f"Slurm job {handle} running",
    )


async def _timed(call: Any) -> tuple[Any, float]:
    """What ``call`` returned or raised, and how long it took."""
    started = time.monotonic()
    try:
        result = await call
    except Exception as exc:  # the error is the answer being checked
        result = exc
    return result, time.monotonic() - started


def test_an_outage_is_no_answer_and_jobs_get_the_default_walltime(site: Site) -> None:
    backend = SlurmBackend(site.instance, privilege=site.privilege)
    impatient = SlurmBackend(
        site.instance, privilege=site.privilege, timeouts=SlurmTimeouts(squeue_s=2)
    )
    runner = SlurmJobRunner(site.instance, privilege=site.privilege)
    spec = load_job({"name": "nap", "command": ["sleep", "600"], "resources": {"memory_gib": 0.25}})
    log_dir = site.privilege.workload_dir(site.identity) / "jobs" / "nap"
    site.privilege.make_dir(site.identity, log_dir)

    async def scenario() -> None:
        handle = await backend.submit(_replica(site, "outage-r1"))
        job = SubmittedJob(
            "nap-1", await runner.submit(spec, "nap-1", log_dir, site.identity), spec, log_dir
        )
        status = await _running(backend, handle)
        # No time_limit in either spec: the site's default, 24 h, never UNLIMITED.
        assert sorted(limit for _, limit in _ours(site.instance)) == ["1-00:00:00"] * 2
        assert status.ends_at is not None
        assert DAY_S - 120 < status.ends_at - time.time() <= DAY_S

        with slurmctld_down():
            answers = await asyncio.gather(
                _timed(backend.status([handle])),
                _timed(impatient.status([handle])),
                _timed(backend.tagged()),
                _timed(runner.tasks(job)),
                _timed(backend.cancel(handle)),
                _timed(backend.submit(_replica(site, "outage-r2"))),
            )
        (status_, took), (hurried, hurried_took), *raised = answers
        assert status_[handle].state is AllocationState.UNKNOWN, status_
        assert not status_[handle].answered and status_[handle].reason == "Slurm did not answer"
        assert took < SlurmTimeouts().squeue_s + MARGIN_S, took
        assert hurried[handle].state is AllocationState.UNKNOWN and not hurried[handle].answered
        assert hurried_took < 2 + MARGIN_S / 2  # its own, shorter timeout
        timeouts = SlurmTimeouts()
        own = (timeouts.squeue_s, timeouts.squeue_s, timeouts.scancel_s, timeouts.sbatch_s)
        for (error, took), timeout_s in zip(raised, own, strict=True):
            assert isinstance(error, SchedulerUnreachable), error  # tagged, tasks, cancel, submit
            assert took < timeout_s + MARGIN_S, (error, took)

        # Slurm is back: every job still runs, and the unanswered submit left none.
        assert (await _running(backend, handle)).answered
        assert await backend.tagged() == {"outage-r1": handle}
        assert [t.state for t in await runner.tasks(job)] == [AllocationState.RUNNING]
        assert len(_ours(site.instance)) == 2
        await backend.cancel(handle)
        await runner.cancel(job)

    asyncio.run(scenario())
