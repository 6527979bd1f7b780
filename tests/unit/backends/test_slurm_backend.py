import asyncio
import json
import time
from pathlib import Path

import pytest

from aifactory.backends import (
    AllocationRequest,
    AllocationState,
    SlurmJobRunner,
    SubmittedJob,
)
from aifactory.backends.slurm.backend import (
    SlurmBackend,
    _parse_formatted,
    _parse_json,
    parse_elapsed,
    plain_reason,
    seconds_until_start,
)
from aifactory.errors import SchedulerUnreachable
from aifactory.identity import Privilege
from aifactory.specs import Resources, load_job
from recorded_slurm import outage, recorded_bin, replay


@pytest.fixture
def bin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return recorded_bin(tmp_path, monkeypatch)


def _job(**fields: object) -> dict[str, object]:
    job: dict[str, object] = {
        "job_id": 7,
        "name": "aif-chat-1",
        "comment": "aifactory:abc:chat-1",
        "job_state": "RUNNING",
        "state_reason": "None",
        "batch_host": "n1",
        "nodes": "n1",
        "start_time": int(time.time()) - 10,
        "end_time": int(time.time()) + 50,
        "time_limit": 1,
        "exit_code": 0,
        "user_name": "aif-alice",
        "group_name": "physics",
    }
    job.update(fields)
    return job


def test_running_job_has_node_and_end() -> None:
    ((comment, status, user, group),) = _parse_json(json.dumps({"jobs": [_job()]})).values()
    assert comment == "aifactory:abc:chat-1"
    assert (user, group) == ("aif-alice", "physics")  # whose: to cancel it as them
    assert status.state is AllocationState.RUNNING and status.node == "n1"
    assert status.ends_at is not None and status.ends_at > time.time()


def test_pending_job_has_plain_reason_and_expected_start() -> None:
    start = int(time.time()) + 120
    jobs = _parse_json(
        json.dumps(
            {"jobs": [_job(job_state="PENDING", state_reason="Resources", start_time=start)]}
        )
    )
    status = jobs["7"].status
    assert status.state is AllocationState.PENDING
    assert status.reason == "waiting for resources" and status.starts_at == start


def test_finished_jobs_decode_wait_status() -> None:
    failed = _parse_json(
        json.dumps(
            {"jobs": [_job(job_state="FAILED", state_reason="NonZeroExitCode", exit_code=768)]}
        )
    )["7"].status
    assert failed.state is AllocationState.FAILED and failed.exit_code == 3
    assert "exited with a non-zero code" in failed.reason and "exit code 3" in failed.reason
    timeout = _parse_json(
        json.dumps({"jobs": [_job(job_state="TIMEOUT", state_reason="TimeLimit")]})
    )
    assert timeout["7"].status.state is AllocationState.TIMEOUT


def test_unknown_state_becomes_unknown() -> None:
    jobs = _parse_json(json.dumps({"jobs": [_job(job_state="WARPED")]}))
    assert jobs["7"].status.state is AllocationState.UNKNOWN


def test_formatted_output_fallback() -> None:
    line = "9|PENDING|Priority|2030-01-01T00:00:00|N/A|1-00:00:00||aif-bob|aif-bob|" + (
        "aifactory:abc:chat|2"
    )
    comment, status, user, group = _parse_formatted(line)["9"]
    assert comment == "aifactory:abc:chat|2"  # the comment, last, keeps its "|"
    assert user == group == "aif-bob"
    assert status.state is AllocationState.PENDING
    assert status.reason == "waiting behind higher-priority jobs" and status.starts_at


def test_plain_reasons() -> None:
    assert plain_reason("QOSMaxWallDurationPerJobLimit").startswith("QOS limit")
    assert plain_reason("SomethingNew") == "SomethingNew"


def test_missing_slurm_degrades_to_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        backend = SlurmBackend("abc")
        statuses = await backend.status(["1"])
        assert statuses["1"].state is AllocationState.UNKNOWN
        assert statuses["1"].reason == "Slurm did not answer"

    monkeypatch.setenv("PATH", "/nonexistent")
    asyncio.run(scenario())


def test_the_start_estimate_comes_from_sbatch_test_only() -> None:
    now = time.mktime(time.strptime("2026-11-28T13:00:00", "%Y-%m-%dT%H:%M:%S"))
    answer = (
        "sbatch: Job 834 to start at 2026-11-28T13:27:30 using 1 processors on nodes n1 "
        "in partition debug\n"
    )
    assert seconds_until_start(answer, now) == 1650.0
    assert seconds_until_start(answer, now + 3600) == 0.0  # already due
    refused = "allocation failure: Requested node configuration is not available\n"
    assert seconds_until_start(refused, now) is None


def test_an_ended_jobs_elapsed_time_comes_from_sacct() -> None:
    out = "41|2026-11-28T13:25:12|2026-11-28T13:25:14|2\n41.0|2026-11-28T13:25:12|Unknown|2\n"
    elapsed = parse_elapsed(out, "41")
    assert elapsed is not None and elapsed.nodes == 2
    assert elapsed.ended_at - elapsed.started_at == 2.0
    assert parse_elapsed("42|2026-11-28T13:25:12|Unknown|1\n", "42") is None  # still running
    assert parse_elapsed(out, "43") is None


def test_an_unlimited_job_has_no_end_rather_than_a_year() -> None:
    start = int(time.time()) - 10
    year = start + 365 * 24 * 3600  # what Slurm writes as an unlimited job's end
    for limit in (4294967295, {"set": True, "infinite": True, "number": 0}):
        job = _job(start_time=start, end_time=year, time_limit=limit)
        assert _parse_json(json.dumps({"jobs": [job]}))["7"].status.ends_at is None
    line = "9|RUNNING|None|2030-01-01T00:00:00|2031-01-01T00:00:00|UNLIMITED|n1|u|g|tag"
    assert _parse_formatted(line)["9"].status.ends_at is None
    limited = "9|RUNNING|None|2030-01-01T00:00:00|2030-01-02T00:00:00|1-00:00:00|n1|u|g|tag"
    assert _parse_formatted(limited)["9"].status.ends_at is not None


def _request(tmp_path: Path) -> AllocationRequest:
    return AllocationRequest(
        replica_id="chat-r1",
        service="chat",
        argv=("sleep", "300"),
        resources=Resources(cpus=1, memory_gib=0.25),
        time_limit_s=None,
        log_path=tmp_path / "logs" / "chat-r1.log",
    )


def test_an_outage_is_no_answer_never_gone(bin_dir: Path, tmp_path: Path) -> None:
    outage(bin_dir)
    backend = SlurmBackend("abc", privilege=Privilege("root", tmp_path))

    async def scenario() -> None:
        status = (await backend.status(["7"]))["7"]
        assert status.state is AllocationState.UNKNOWN and not status.answered
        assert status.reason == "Slurm did not answer"
        with pytest.raises(SchedulerUnreachable, match="slurm_load_jobs: Failed while looking"):
            await backend.tagged()
        with pytest.raises(SchedulerUnreachable, match="scancel 7"):
            await backend.cancel("7")
        with pytest.raises(SchedulerUnreachable, match="connect failure"):
            await backend.submit(_request(tmp_path))
        assert await backend.start_delay(_request(tmp_path)) is None

    asyncio.run(scenario())


def test_a_batch_job_is_never_taken_for_forgotten_in_an_outage(
    bin_dir: Path, tmp_path: Path
) -> None:
    outage(bin_dir)
    runner = SlurmJobRunner("abc", privilege=Privilege("root", tmp_path))
    job = SubmittedJob("hello-1", "7", load_job({"name": "hello", "command": ["true"]}), tmp_path)

    async def scenario() -> None:
        with pytest.raises(SchedulerUnreachable, match="slurm_load_jobs"):
            await runner.tasks(job)  # not [], which would read "Slurm no longer knows this job"
        with pytest.raises(SchedulerUnreachable, match="scancel 7"):
            await runner.cancel(job)
        with pytest.raises(SchedulerUnreachable, match="connect failure"):
            await runner.submit(job.spec, "hello-1", tmp_path, None)

    asyncio.run(scenario())


def test_a_job_slurm_no_longer_knows_is_an_answer(bin_dir: Path, tmp_path: Path) -> None:
    replay(
        bin_dir, "squeue", "echo 'slurm_load_jobs error: Invalid job id specified' >&2\nexit 1\n"
    )
    replay(bin_dir, "sacct", "echo 'Slurm accounting storage is disabled' >&2\nexit 1\n")
    backend = SlurmBackend("abc", privilege=Privilege("root", tmp_path))
    status = asyncio.run(backend.status(["7"]))["7"]
    assert status.state is AllocationState.UNKNOWN and status.answered
    assert status.reason == "Slurm no longer knows this job"


def test_tagged_lists_this_planes_live_replicas_not_its_batch_jobs(
    bin_dir: Path, tmp_path: Path
) -> None:
    jobs = [
        _job(job_id=1, comment="aifactory:abc:chat-1"),
        _job(job_id=2, comment="aifactory:abc:job:nap-1"),  # a batch job: no stray
        _job(job_id=3, comment="aifactory:other:chat-2"),
        _job(job_id=4, comment="aifactory:abc:chat-3", job_state="COMPLETED"),
    ]
    (bin_dir / "queue.json").write_text(json.dumps({"errors": [], "jobs": jobs}))
    replay(bin_dir, "squeue", f"/bin/cat {bin_dir / 'queue.json'}\n")
    backend = SlurmBackend("abc", privilege=Privilege("root", tmp_path))
    assert asyncio.run(backend.tagged()) == {"chat-1": "1"}
