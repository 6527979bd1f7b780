"""Slurm commands as a workload's identity, without a scheduler: the argv and what it reaches.

The end-to-end runs are in tests/integration/test_identity_slurm.py; here a
recorded ``sbatch``/``scancel`` on PATH records what the backend and the job
runner hand it.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from aifactory.backends import AllocationRequest, SlurmJobRunner, SubmittedJob
from aifactory.backends.slurm.backend import SlurmBackend
from aifactory.backends.slurm.identity import (
    job_owner,
    sbatch_command,
    scancel_command,
    tail_command,
)
from aifactory.errors import BackendError, ConfigError
from aifactory.identity import Identity, Privilege
from aifactory.specs import Resources, load_job

# A uid no test runs as, so the control plane never "is" this identity.
ALICE = Identity("aif-alice", 4242, "physics", 4343, (100,), "/home/aif-alice")
SUDO = ("sudo", "-n", "-u", "{user}", "--")
HOSTILE_DIR = Path("/data/x; rm -rf ~ $(touch /tmp/pwned) `id`\nline")


def test_root_submits_with_uid_and_gid_in_the_identitys_folder(tmp_path: Path) -> None:
    command = sbatch_command(Privilege("root", tmp_path), ALICE, ["--parsable"], HOSTILE_DIR)
    assert command.argv == [
        "sbatch",
        "--uid=4242",
        "--gid=4343",
        f"--chdir={HOSTILE_DIR}",  # one word: never seen by a shell
        "--parsable",
    ]


def test_the_prefix_runs_sbatch_as_the_user(tmp_path: Path) -> None:
    privilege = Privilege("prefix", tmp_path, SUDO)
    command = sbatch_command(privilege, ALICE, ["--test-only"], Path("/d"))
    assert command.argv == [
        "sudo", "-n", "-u", "aif-alice", "--", "sbatch", "--chdir=/d", "--test-only",
    ]  # fmt: skip
    assert scancel_command(privilege, ALICE, "77") == [
        "sudo", "-n", "-u", "aif-alice", "--", "scancel", "77",
    ]  # fmt: skip


def test_root_cancels_any_job_as_itself(tmp_path: Path) -> None:
    assert scancel_command(Privilege("root", tmp_path), ALICE, "77") == ["scancel", "77"]


def test_output_is_read_through_the_prefix_only(tmp_path: Path) -> None:
    log = Path("/home/aif-alice/.aifactory/jobs/a/7.log")
    assert tail_command(Privilege("prefix", tmp_path, SUDO), ALICE, log, 5) == [
        "sudo", "-n", "-u", "aif-alice", "--", "tail", "-n", "5", "--", str(log),
    ]  # fmt: skip
    assert tail_command(Privilege("root", tmp_path), ALICE, log, 5) is None  # root opens it


def test_the_job_gets_the_identitys_login_and_none_of_the_control_planes_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIFACTORY_API_KEY", "admin-secret")
    monkeypatch.setenv("HOME", "/root")
    command = sbatch_command(Privilege("root", tmp_path), ALICE, [], Path("/d"))
    assert command.env is not None
    assert command.env["HOME"] == "/home/aif-alice" and command.env["USER"] == "aif-alice"
    assert not [name for name in command.env if name.startswith("AIFACTORY_")]
    assert command.env["PATH"] == os.environ["PATH"]


def test_without_an_identity_or_in_single_user_mode_commands_are_as_before(
    tmp_path: Path,
) -> None:
    for privilege, identity in (
        (Privilege("root", tmp_path), None),
        (Privilege("prefix", tmp_path, SUDO), None),
        (Privilege("single-user", tmp_path), ALICE),
    ):
        command = sbatch_command(privilege, identity, ["--parsable"], Path("/d"))
        assert command.argv == ["sbatch", "--parsable"] and command.env is None
        assert scancel_command(privilege, identity, "9") == ["scancel", "9"]


def test_no_root_and_no_prefix_refuses_rather_than_submit_as_itself(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="AIFACTORY_LAUNCH_PREFIX"):
        sbatch_command(Privilege("prefix", tmp_path), ALICE, ["--parsable"], Path("/d"))
    with pytest.raises(ConfigError, match="AIFACTORY_LAUNCH_PREFIX"):
        scancel_command(Privilege("prefix", tmp_path), ALICE, "9")


def test_an_adopted_jobs_owner_must_be_someone_to_act_as() -> None:
    with pytest.raises(BackendError, match="scancel 5"):
        job_owner("5", "root", "root")
    with pytest.raises(BackendError, match="does not exist"):
        job_owner("5", "aif-nobody-here", "")


@pytest.fixture
def recorded_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``sbatch`` and ``scancel`` on PATH that record whom they ran as, its HOME and argv."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "calls"
    for name, answer in (("sbatch", "4242"), ("scancel", "")):
        script = bin_dir / name
        script.write_text(
            "#!/bin/sh\n"
            f'printf "%s|%s|%s\\n" "$RUN_AS" "$HOME" "{name} $*" >> {record}\n'
            f"echo {answer}\n"
        )
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return record


# A stand-in launcher: `env RUN_AS=USER CMD...` marks what ran "as" the user.
MARK = ("env", "RUN_AS={user}")


def test_the_backend_submits_and_cancels_through_the_prefix(
    tmp_path: Path, recorded_slurm: Path
) -> None:
    log = tmp_path / "logs" / "r1.log"
    log.parent.mkdir()
    request = AllocationRequest(
        "chat-r1", "chat", ("sleep", "60"), Resources(), None, log, identity=ALICE
    )
    backend = SlurmBackend("ab12", privilege=Privilege("prefix", tmp_path, MARK))

    async def scenario() -> None:
        assert await backend.submit(request) == "4242"
        await backend.cancel("4242")

    asyncio.run(scenario())
    submitted, cancelled = recorded_slurm.read_text().splitlines()
    assert submitted == f"aif-alice|/home/aif-alice|sbatch --chdir={log.parent} --parsable"
    assert cancelled.startswith("aif-alice|") and cancelled.endswith("|scancel 4242")


def test_the_job_runner_submits_and_cancels_as_the_jobs_identity(
    tmp_path: Path, recorded_slurm: Path
) -> None:
    runner = SlurmJobRunner("ab12", privilege=Privilege("prefix", tmp_path, MARK))
    job = load_job({"name": "a", "command": ["id", "-u"]})

    async def scenario() -> None:
        handle = await runner.submit(job, "a-000001", tmp_path, ALICE)
        submitted = SubmittedJob("a-000001", handle, job, tmp_path, identity=ALICE)
        assert await runner.logs(submitted, None, 5) == ""  # not written yet
        (tmp_path / f"{handle}.log").write_text("one\ntwo\n")
        assert await runner.logs(submitted, None, 1) == "two\n"
        await runner.cancel(submitted)

    asyncio.run(scenario())
    submitted, cancelled = recorded_slurm.read_text().splitlines()
    assert submitted == f"aif-alice|/home/aif-alice|sbatch --chdir={tmp_path} --parsable"
    assert cancelled.startswith("aif-alice|") and cancelled.endswith("|scancel 4242")
