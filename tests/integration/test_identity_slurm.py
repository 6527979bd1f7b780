"""Slurm workloads run as their tenant's Unix user, on the real cluster (issue 14).

A batch job and a replica are submitted as aif-alice, the job runner and the
backend driven directly: from inside, each is alice's uid and cannot read a
root-only 0600 file (standing in for admin.key) nor a file in aif-bob's own
0700 folder; Slurm itself (``squeue -u``, ``sacct -u``) shows alice as the
owner; a restarted control plane adopts the job and cancels it, once as root
and once through a launch prefix (``runuser -u {user} --``, root's stand-in
for a site's ``sudo``).
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from aifactory.backends import AllocationRequest, AllocationState, SlurmJobRunner, SubmittedJob
from aifactory.backends.slurm.backend import SlurmBackend
from aifactory.identity import Identity, Privilege, lookup
from aifactory.specs import Resources, load_job
from unix_users import TENANT_USERS, make_traversable

from .slurm import needs_slurm_as_root

pytestmark = [pytest.mark.slurm, needs_slurm_as_root("jobs are submitted as other Unix users")]

DENIED = "Permission denied"
# Prints the uid, tries both secrets (each failure on its own line), then stays up.
PROBE = 'id -u; cat -- "$1" || true; cat -- "$2" || true; echo probed; exec sleep 300'


@dataclass(frozen=True)
class Site:
    """A root control plane's data directory with two tenants' secrets in it."""

    privilege: Privilege
    alice: Identity
    bob: Identity
    admin_key: Path
    bobs_file: Path
    instance: str


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    make_traversable(tmp_path)
    data_dir = tmp_path / "aifactory"
    data_dir.mkdir(mode=0o711)
    privilege = Privilege("root", data_dir)
    alice, bob = (lookup(user) for user in TENANT_USERS)
    admin_key = data_dir / "admin.key"
    admin_key.write_text("the administrator's key\n")
    admin_key.chmod(0o600)
    bobs_folder = privilege.workload_dir(bob) / "secrets"
    privilege.make_dir(bob, bobs_folder)
    bobs_file = bobs_folder / "replica.token"
    privilege.give_file(bob, bobs_file, "bob's token\n")
    instance = "idtest-" + uuid.uuid4().hex[:6]
    yield Site(privilege, alice, bob, admin_key, bobs_file, instance)
    # Leave nothing of this test running on the shared cluster.
    for job_id in _squeue(
        lambda job: str(job.get("comment", "")).startswith(f"aifactory:{instance}:")
    ):
        subprocess.run(["scancel", job_id], check=False, timeout=30)


def _squeue(keep: Callable[[dict[str, object]], bool], *options: str) -> list[str]:
    out = subprocess.run(
        ["squeue", "--json", *options], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    return [str(job["job_id"]) for job in json.loads(out)["jobs"] if keep(job)]


def _owner_in_squeue(job_id: str) -> str:
    """The user ``squeue -u aif-alice`` lists ``job_id`` under ("" if absent)."""
    out = subprocess.run(
        ["squeue", "--noheader", "--states=all", "--user=aif-alice", "--format=%i|%u"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    return dict(line.split("|", 1) for line in out.splitlines()).get(job_id, "")


def _until(check: Callable[[], str], what: str, timeout_s: float = 90) -> str:
    deadline = time.monotonic() + timeout_s
    while not (found := check()):
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(0.3)
    return found


def _text(log: Path) -> str:
    return log.read_text() if log.exists() else ""


def _probed(log: Path) -> str:
    text = _text(log)
    return text if "probed" in text else ""


def _assert_ran_as_alice(output: str, site: Site) -> None:
    lines = output.splitlines()
    assert lines[0] == str(site.alice.uid), output
    denied = [line for line in lines if DENIED in line]
    assert len(denied) == 2, output
    assert str(site.admin_key) in denied[0] and str(site.bobs_file) in denied[1]
    assert "administrator" not in output and "bob's token" not in output


def test_a_batch_job_runs_as_its_tenant_and_reads_nothing_of_others(site: Site) -> None:
    runner = SlurmJobRunner(site.instance, privilege=site.privilege)
    job = load_job(
        {
            "name": "probe",
            "command": ["bash", "-c", PROBE, "probe", str(site.admin_key), str(site.bobs_file)],
            "resources": {"cpus": 1, "memory_gib": 0.25},
        }
    )
    job_id = "probe-" + uuid.uuid4().hex[:6]
    log_dir = site.privilege.workload_dir(site.alice) / "jobs" / job_id
    site.privilege.make_dir(site.alice, log_dir)

    async def scenario() -> None:
        handle = await runner.submit(job, job_id, log_dir, site.alice)
        submitted = SubmittedJob(job_id, handle, job, log_dir, identity=site.alice)
        output = await asyncio.to_thread(
            _until, lambda: _probed(log_dir / f"{handle}.log"), "output"
        )
        _assert_ran_as_alice(output, site)
        assert _owner_in_squeue(handle) == "aif-alice"
        assert "slurmstepd" not in output  # started in its own folder, no chdir error
        assert "probed" in await runner.logs(submitted, None, 5)  # root reads it back

        await runner.cancel(submitted)
        tasks = await runner.tasks(submitted)
        while tasks[0].state is not AllocationState.CANCELLED:
            await asyncio.sleep(0.3)
            tasks = await runner.tasks(submitted)
        accounted = await asyncio.to_thread(_until, lambda: _sacct_user(handle), "sacct")
        assert accounted.startswith("aif-alice")

    asyncio.run(scenario())


def _sacct_user(job_id: str) -> str:
    """The user ``sacct -u aif-alice`` (the completion log) records ``job_id`` under."""
    done = subprocess.run(
        ["sacct", "-c", "-u", "aif-alice", "-P", "-n", "-j", job_id, "--format=JobID,User"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    rows = dict(line.split("|", 1) for line in done.stdout.splitlines() if "|" in line)
    return rows.get(job_id, "")


def _replica(site: Site) -> AllocationRequest:
    # The log's folder does not exist yet: the backend makes it alice's.
    log = site.privilege.workload_dir(site.alice) / "logs" / "probe" / "probe-r1.log"
    return AllocationRequest(
        replica_id="probe-r1",
        service="probe",
        argv=("bash", "-c", PROBE, "probe", str(site.admin_key), str(site.bobs_file)),
        resources=Resources(cpus=1, memory_gib=0.25),
        time_limit_s=None,
        log_path=log,
        identity=site.alice,
    )


@pytest.mark.parametrize("adopted_by", ["root", "prefix"])
def test_a_replica_runs_as_its_tenant_and_a_restarted_control_plane_adopts_it(
    site: Site, adopted_by: str
) -> None:
    backend = SlurmBackend(site.instance, privilege=site.privilege)
    request = _replica(site)
    # After a restart: a new backend knows nothing of the job but its tag.
    restarted = SlurmBackend(
        site.instance,
        privilege=site.privilege
        if adopted_by == "root"
        else Privilege("prefix", site.privilege.data_dir, ("runuser", "-u", "{user}", "--")),
    )

    async def scenario() -> None:
        handle = await backend.submit(request)
        output = await asyncio.to_thread(_until, lambda: _probed(request.log_path), "output")
        _assert_ran_as_alice(output, site)
        assert request.log_path.parent.stat().st_uid == site.alice.uid
        assert _owner_in_squeue(handle) == "aif-alice"

        assert await restarted.tagged() == {"probe-r1": handle}
        await restarted.cancel(handle)
        state = AllocationState.RUNNING
        while state is AllocationState.RUNNING:
            await asyncio.sleep(0.3)
            state = (await restarted.status([handle]))[handle].state
        assert state is AllocationState.CANCELLED
        # Through the prefix, scancel ran as the job's owner, as a site's sudo would run it.
        assert _cancelled_by(handle) == (site.alice.uid if adopted_by == "prefix" else 0)

    asyncio.run(scenario())


def _cancelled_by(job_id: str) -> int:
    """The uid slurmctld's log says first asked to cancel ``job_id``."""
    config = subprocess.run(
        ["scontrol", "show", "config"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    log = next(
        line.split("=", 1)[1].strip()
        for line in config.splitlines()
        if line.startswith("SlurmctldLogFile")
    )
    found = re.search(rf"REQUEST_KILL_JOB JobId={job_id} uid (\d+)", Path(log).read_text())
    assert found, f"slurmctld logged no cancel of job {job_id} in {log}"
    return int(found.group(1))


def test_the_prefix_submits_as_the_tenant_too(site: Site) -> None:
    runner = SlurmJobRunner(
        site.instance,
        privilege=Privilege("prefix", site.privilege.data_dir, ("runuser", "-u", "{user}", "--")),
    )
    job = load_job({"name": "whoami", "command": ["id", "-un"], "resources": {"memory_gib": 0.25}})
    log_dir = site.privilege.workload_dir(site.bob) / "jobs" / "whoami"
    site.privilege.make_dir(site.bob, log_dir)

    async def scenario() -> None:
        handle = await runner.submit(job, "whoami", log_dir, site.bob)
        log = log_dir / f"{handle}.log"
        said = await asyncio.to_thread(_until, lambda: _text(log), "output")
        assert said.strip() == "aif-bob"
        submitted = SubmittedJob("whoami", handle, job, log_dir, identity=site.bob)
        assert await runner.logs(submitted, None, 5) == said  # read through the prefix too

    asyncio.run(scenario())
