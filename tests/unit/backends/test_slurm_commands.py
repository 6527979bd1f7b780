"""Slurm's answers checked: error fields, exit codes and timeouts (recorded 22.05 answers)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from aifactory.backends import SlurmTimeouts
from aifactory.backends.slurm.commands import jobs_in, sbatch, slurm
from aifactory.config import load_settings
from aifactory.errors import BackendError, SchedulerCommandFailed, SchedulerUnreachable
from recorded_slurm import OUTAGE_JSON, UNREACHABLE, recorded_bin, replay


@pytest.fixture
def bin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return recorded_bin(tmp_path, monkeypatch)


def test_squeue_json_with_errors_is_no_answer_not_an_empty_queue() -> None:
    with pytest.raises(SchedulerUnreachable) as raised:
        jobs_in(OUTAGE_JSON, ["squeue", "--json"])
    assert "slurm_load_jobs: Failed while looking for jobs (Unspecified error)" in str(raised.value)
    assert raised.value.returncode == 0


def test_an_error_about_an_unknown_job_id_is_an_answer() -> None:
    answer = {"errors": [{"error_number": 2017, "error": "Invalid job id specified"}], "jobs": []}
    assert jobs_in(json.dumps(answer), ["squeue", "--json", "--jobs=9"]) == []
    assert jobs_in(json.dumps({"errors": [], "jobs": [{"job_id": 4}]}), ["squeue"]) == [
        {"job_id": 4}
    ]


@pytest.mark.parametrize("answer", ["", "squeue: error: oops", "[]", '{"errors": []}'])
def test_an_answer_without_a_job_list_fails(answer: str) -> None:
    with pytest.raises(SchedulerCommandFailed, match="answered with no job list") as raised:
        jobs_in(answer, ["squeue", "--json"])
    assert not isinstance(raised.value, SchedulerUnreachable)


def test_a_command_that_cannot_reach_slurmctld_is_unreachable(bin_dir: Path) -> None:
    replay(
        bin_dir,
        "scancel",
        f"echo 'scancel: error: Kill job error on job id 7: {UNREACHABLE}' >&2\nexit 8\n",
    )
    replay(
        bin_dir,
        "sbatch",
        "echo 'sbatch: error: Batch job submission failed: Invalid account' >&2\nexit 1\n",
    )

    async def scenario() -> None:
        with pytest.raises(
            SchedulerUnreachable, match="Slurm did not answer `scancel 7`"
        ) as raised:
            await slurm(["scancel", "7"], timeout_s=5)
        assert raised.value.returncode == 8
        with pytest.raises(SchedulerCommandFailed, match="Invalid account") as refused:
            await slurm(["sbatch"], timeout_s=5)
        assert not isinstance(refused.value, SchedulerUnreachable)

    asyncio.run(scenario())


def test_each_command_stops_waiting_at_its_own_timeout(bin_dir: Path) -> None:
    replay(bin_dir, "squeue", "exec /bin/sleep 30\n")

    async def scenario() -> None:
        started = time.monotonic()
        with pytest.raises(SchedulerUnreachable, match=r"`squeue --json` in time: waited 0\.5 s"):
            await slurm(["squeue", "--json"], timeout_s=0.5)
        assert time.monotonic() - started < 5

    asyncio.run(scenario())


def test_timeouts_come_from_the_settings() -> None:
    settings = load_settings(slurm_query_timeout_s=4, slurm_command_timeout_s=40)
    timeouts = SlurmTimeouts.from_settings(settings)
    assert (timeouts.squeue_s, timeouts.estimate_s) == (4, 4)
    assert (timeouts.sbatch_s, timeouts.scancel_s, timeouts.sacct_s) == (40, 40, 40)
    assert SlurmTimeouts.from_settings(load_settings()).squeue_s == 10


def _submit(timeouts: SlurmTimeouts | None = None) -> str:
    return asyncio.run(
        sbatch(
            ["sbatch", "--parsable"],
            script="#!/bin/bash\ntrue\n",
            env=None,
            job_name="aif-chat-r1",
            tag="aifactory:abc:chat-r1",
            timeouts=timeouts or SlurmTimeouts(),
        )
    )


def test_a_lost_sbatch_answer_finds_the_job_it_submitted(bin_dir: Path) -> None:
    replay(
        bin_dir,
        "sbatch",
        "echo 'sbatch: error: Batch job submission failed: Socket timed out on send/recv "
        "operation' >&2\nexit 1\n",
    )
    # squeue is asked by name and must hold the exact tag: 41 is another's.
    replay(
        bin_dir,
        "squeue",
        "echo '41|aifactory:other:chat-r1'\necho '42|aifactory:abc:chat-r1'\n",
    )
    assert _submit() == "42"


def test_a_lost_sbatch_answer_and_no_such_job_is_no_answer(bin_dir: Path) -> None:
    replay(bin_dir, "sbatch", "exec /bin/sleep 30\n")
    replay(bin_dir, "squeue", "echo '41|aifactory:other:chat-r1'\n")
    with pytest.raises(SchedulerUnreachable, match="in time"):
        _submit(SlurmTimeouts(sbatch_s=0.5))


def test_a_refused_connection_submitted_nothing_and_is_not_looked_up(bin_dir: Path) -> None:
    looked = bin_dir / "looked"
    replay(bin_dir, "sbatch", f"echo 'sbatch: error: {UNREACHABLE}' >&2\nexit 1\n")
    replay(bin_dir, "squeue", f"/usr/bin/touch {looked}\necho '42|aifactory:abc:chat-r1'\n")
    with pytest.raises(SchedulerUnreachable, match="connect failure"):
        _submit()
    assert not looked.exists()


def test_sbatch_answers_a_job_id_or_fails(bin_dir: Path) -> None:
    replay(bin_dir, "sbatch", "/bin/cat >/dev/null\necho '42;aifdev'\n")
    assert _submit() == "42"
    replay(bin_dir, "sbatch", "echo 'Submitted batch job'\n")
    with pytest.raises(BackendError, match="not a job id"):
        _submit()
