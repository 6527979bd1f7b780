"""The Job spec and its batch script: rendered #SBATCH lines, hostile values stay inert."""

import subprocess
from pathlib import Path

import pytest

from aifactory.backends import SiteDefaults
from aifactory.backends.slurm.job_script import JobScriptContext, quote, render_batch_script
from aifactory.backends.slurm.jobs import decode_wait_status, parse_sacct, parse_squeue
from aifactory.errors import BackendError, SpecError
from aifactory.specs import load_job

HOSTILE = ["x; rm -rf ~", "$(touch /tmp/pwned)", "`id`", "a\n#SBATCH --uid=0", "'\"; exit 9 #"]


def _context(
    tmp: Path = Path("/data/logs/jobs/hello-abc123"), **kwargs: object
) -> JobScriptContext:
    return JobScriptContext(
        "hello-abc123",
        "aifactory:inst:job:hello-abc123",
        tmp,
        **kwargs,  # type: ignore[arg-type]
    )


def _sbatch(script: str) -> list[str]:
    return [line for line in script.splitlines() if line.startswith("#SBATCH")]


def _last(script: str) -> str:
    return [line for line in script.splitlines() if line][-1]


def test_single_task_runs_the_command_directly() -> None:
    job = load_job("kind: Job\nname: hello\ncommand: echo 'hello world'\n")
    script = render_batch_script(job, _context())
    assert _sbatch(script) == [
        "#SBATCH --job-name=aif-job-hello",
        "#SBATCH --comment=aifactory:inst:job:hello-abc123",
        "#SBATCH --output=/data/logs/jobs/hello-abc123/%j.log",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --cpus-per-task=1",
        "#SBATCH --mem=1024M",
        "#SBATCH --time=1440",  # no time_limit: the site's default walltime, 24 h
    ]
    assert _last(script) == "exec echo 'hello world'"
    assert script.startswith("#!/bin/bash\n")


def test_multi_node_array_with_everything() -> None:
    job = load_job(
        {
            "name": "train",
            "command": ["python", "train.py", "--lr", "0.1"],
            "nodes": 2,
            "tasks_per_node": 4,
            "resources": {"cpus": 2, "memory_gib": 1.5, "gpus": 4},
            "array": "0-15%4",
            "time_limit": "1h30m",
            "env": {"B": "2", "A": "x y"},
            "workdir": "/home/me/project",
            "slurm": {
                "partition": "gpu",
                "account": "proj1",
                "qos": "high",
                "constraint": "a100&ib",
                "options": {"exclusive": True, "no-requeue": False, "mail-type": "END"},
            },
        }
    )
    script = render_batch_script(job, _context())
    assert _sbatch(script)[2:] == [
        "#SBATCH --output=/data/logs/jobs/hello-abc123/%A_%a.log",
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --cpus-per-task=2",
        "#SBATCH --mem=1536M",
        "#SBATCH --array=0-15%4",
        "#SBATCH --time=90",
        "#SBATCH --gres=gpu:4",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=proj1",
        "#SBATCH --qos=high",
        "#SBATCH --constraint=a100&ib",
        "#SBATCH --exclusive",
        "#SBATCH --mail-type=END",
    ]
    body = script.split("set -euo pipefail\n", 1)[1]
    assert "export A='x y'\nexport B=2\ncd -- /home/me/project\n" in body
    assert _last(script) == (
        "exec srun --nodes=2 --ntasks-per-node=4 --cpus-per-task=2 python train.py --lr 0.1"
    )


def test_one_node_several_tasks_uses_srun() -> None:
    job = load_job({"name": "mpi", "command": ["./a.out"], "tasks_per_node": 3})
    assert _last(render_batch_script(job, _context())).startswith(
        "exec srun --nodes=1 --ntasks-per-node=3"
    )


def test_site_defaults_and_preamble() -> None:
    job = load_job({"name": "a", "command": ["true"], "slurm": {"partition": "mine"}})
    site = SiteDefaults(partition="site", account="acct", preamble="module load cuda")
    script = render_batch_script(job, _context(site=site))
    assert "#SBATCH --partition=mine" in script and "#SBATCH --account=acct" in script
    assert "# site preamble\nmodule load cuda\n" in script


def test_a_job_without_time_limit_gets_the_sites_walltime_never_none() -> None:
    job = load_job({"name": "a", "command": ["true"]})
    site = SiteDefaults(time_limit_s=2 * 3600)
    assert "#SBATCH --time=120" in render_batch_script(job, _context(site=site))
    limited = load_job({"name": "a", "command": ["true"], "time_limit": "90s"})
    assert "#SBATCH --time=2\n" in render_batch_script(limited, _context(site=site))


def test_string_command_is_split_like_a_shell() -> None:
    job = load_job({"name": "a", "command": "bash -c 'echo $HOME; ls'"})
    assert job.command == ("bash", "-c", "echo $HOME; ls")


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_command_env_and_workdir_stay_quoted(value: str, tmp_path: Path) -> None:
    job = load_job(
        {
            "name": "evil",
            "command": ["echo", value],
            "env": {"EVIL": value},
            "workdir": "/tmp/" + value.replace("\n", " "),
        }
    )
    script = render_batch_script(job, _context())
    # No header line comes from the spec's values...
    assert all("uid" not in line for line in _sbatch(script))
    # ...and bash reads each value back as one literal word.
    body = script.split("set -euo pipefail\n", 1)[1]
    # ...no value spans lines...
    assert len(body.splitlines()) == 4
    probe = tmp_path / "probe.sh"
    probe.write_text(
        body.replace("exec echo", "printf '%s\\n' \"$EVIL\"; printf '<%s>' ").replace(
            "cd -- ", ": "
        )
    )
    out = subprocess.run(["bash", str(probe)], capture_output=True, text=True, check=True).stdout
    assert out == f"{value}\n<{value}>"
    assert not Path("/tmp/pwned").exists()


@pytest.mark.parametrize(
    "field,value",
    [
        ("array", "0-3; rm -rf ~"),
        ("array", "$(touch /tmp/pwned)"),
        ("array", "0-3\n#SBATCH --uid=0"),
        ("array", "0-3\n"),
        ("name", "x; rm -rf ~"),
        ("name", "a\n#SBATCH --uid=0"),
        ("slurm", {"partition": "x; rm -rf ~"}),
        ("slurm", {"partition": "debug\n#SBATCH --uid=0"}),
        ("slurm", {"constraint": "$(touch /tmp/pwned)"}),
        ("slurm", {"options": {"uid": "0"}}),
        ("slurm", {"options": {"mail-user": "a b"}}),
        ("env", {"A;B": "x"}),
        ("env", {"A": "x\0y"}),
        ("workdir", "relative/dir"),
        ("workdir", "/tmp/a\n#SBATCH --uid=0"),
        ("command", ["-c", "id"]),
        ("command", []),
        ("nodes", 0),
        ("time_limit", "soon"),
        ("backend", "nomad"),
        ("surprise", 1),
    ],
)
def test_hostile_or_bad_spec_values_are_refused(field: str, value: object) -> None:
    document: dict[str, object] = {"name": "ok", "command": ["true"], field: value}
    with pytest.raises(SpecError):
        load_job(document)


def test_unsafe_log_dir_is_refused() -> None:
    job = load_job({"name": "a", "command": ["true"]})
    with pytest.raises(BackendError, match="unsafe"):
        render_batch_script(job, _context(Path("/data dir/$(id)")))


def test_spec_round_trips() -> None:
    job = load_job({"name": "a", "command": "sleep 1", "time_limit": "2m", "array": "1,3,5"})
    assert load_job(job.to_document()) == job


SQUEUE = """{"jobs": [
 {"job_id": 7, "array_job_id": 5, "array_task_id": 1, "job_state": "FAILED",
  "state_reason": "NonZeroExitCode", "exit_code": 768, "nodes": "n1",
  "start_time": 100, "end_time": 110},
 {"job_id": 5, "array_job_id": 5, "array_task_id": null, "array_task_string": "2-3",
  "job_state": "PENDING", "state_reason": "Resources", "exit_code": 0, "nodes": "",
  "start_time": 4000, "end_time": 0},
 {"job_id": 6, "array_job_id": 5, "array_task_id": 0, "job_state": "CANCELLED",
  "state_reason": "None", "exit_code": 15, "nodes": "n2", "start_time": 100, "end_time": 101},
 {"job_id": 9, "array_job_id": 0, "job_state": "RUNNING", "exit_code": 0}
]}"""


def test_squeue_tasks_exit_codes_and_pending_ranges() -> None:
    tasks = parse_squeue(SQUEUE, "5")
    assert [t.task for t in tasks] == [0, 1, 2, 3]
    assert (tasks[0].state.value, tasks[0].exit_code, tasks[0].signal) == ("cancelled", 0, 15)
    assert (tasks[1].state.value, tasks[1].exit_code, tasks[1].reason) == (
        "failed",
        3,
        "exited with a non-zero code",
    )
    assert tasks[2].state.value == "pending" and tasks[2].reason == "waiting for resources"
    assert (tasks[2].started_at, tasks[2].expected_start) == (None, 4000)
    assert tasks[1].expected_start is None
    assert parse_squeue(SQUEUE, "9")[0].task is None
    assert parse_squeue(SQUEUE, "42") == []


def test_wait_status_and_sacct() -> None:
    assert decode_wait_status(768) == (3, None)
    assert decode_wait_status(9) == (0, 9)
    [task] = parse_sacct("4|FAILED|3:0|n[1-2]|2026-01-01T00:00:00|2026-01-01T00:00:01\n", "4")
    assert (task.state.value, task.exit_code, task.nodes) == ("failed", 3, "n[1-2]")


@pytest.mark.parametrize(
    "value", ["plain", "", "it's", "a\nb", "tab\there", "\x1b[31mred", "back\\slash\n'", "é ü 日本"]
)
def test_quote_is_one_line_and_round_trips_through_bash(value: str) -> None:
    quoted = quote(value)
    assert "\n" not in quoted
    out = subprocess.run(
        ["bash", "-c", f"printf '%s' {quoted}"], capture_output=True, text=True, check=True
    ).stdout
    assert out == value
