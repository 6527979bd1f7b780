"""The batch-job commands of the CLI: ``aifactory run`` and ``aifactory jobs …``.

``register(app)`` adds them to the main typer app::

    aifactory run [--nodes 2] [--array 0-3] [--wait] -- CMD ARGS…
    aifactory jobs [ls] | submit job.yaml | show ID | logs ID [--task N] | cancel ID
"""

from __future__ import annotations

import re
import shlex
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from aifactory.cli.client import AdminClient
from aifactory.config import load_settings
from aifactory.specs import NAME_PATTERN, load_job

jobs_app = typer.Typer(help="Submit, list, show, read and cancel batch jobs (default: ls).")
console = Console()
_FINISHED = {"completed", "failed", "cancelled", "timeout", "unknown"}


def register(app: typer.Typer) -> None:
    """Add ``run`` and the ``jobs`` sub-app to ``app``."""
    app.command(
        "run",
        context_settings={"allow_interspersed_args": False},
    )(run)
    app.add_typer(jobs_app, name="jobs")


def _client() -> AdminClient:
    return AdminClient(load_settings())


def run(
    command: Annotated[list[str], typer.Argument(help="The command and its arguments.")],
    backend: Annotated[str, typer.Option(help="Where to run it: slurm or kubernetes.")] = "slurm",
    nodes: Annotated[int, typer.Option(min=1, help="How many nodes.")] = 1,
    tasks_per_node: Annotated[int, typer.Option(min=1, help="Tasks (srun) per node.")] = 1,
    cpus: Annotated[int, typer.Option(min=1, help="CPUs per task.")] = 1,
    mem_gib: Annotated[float, typer.Option(help="Memory per node, GiB.")] = 1.0,
    gpus: Annotated[int, typer.Option(min=0, help="GPUs per node.")] = 0,
    time_limit: Annotated[
        str | None, typer.Option("--time", help="Time limit: 90s, 10m, 2h, 01:30:00.")
    ] = None,
    array: Annotated[str | None, typer.Option(help="Array tasks: 0-9, 1,3,5 or 0-15%4.")] = None,
    partition: Annotated[str | None, typer.Option(help="Slurm partition.")] = None,
    account: Annotated[str | None, typer.Option(help="Slurm account.")] = None,
    name: Annotated[str | None, typer.Option(help="Job name (default: the program's).")] = None,
    wait: Annotated[
        bool, typer.Option(help="Follow the job, print its log, exit with its code.")
    ] = True,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the script or manifests; submit nothing.")
    ] = False,
) -> None:
    """Run a command as a batch job: `aifactory run --nodes 2 -- hostname`."""
    document: dict[str, Any] = {
        "kind": "Job",
        "name": name or _default_name(command[0]),
        "command": command,
        "nodes": nodes,
        "tasks_per_node": tasks_per_node,
        "resources": {"cpus": cpus, "memory_gib": mem_gib, "gpus": gpus},
        "backend": backend,
    }
    # A pod's file system is its image's: the current folder means nothing there.
    workdir = _cwd() if backend == "slurm" else None
    if workdir:
        document["workdir"] = workdir
    if time_limit:
        document["time_limit"] = time_limit
    if array:
        document["array"] = array
    slurm = {k: v for k, v in (("partition", partition), ("account", account)) if v}
    if slurm:
        document["slurm"] = slurm
    load_job(document, "aifactory run")  # refuse bad values before talking to the server
    _submit(yaml.safe_dump(document).encode(), "aifactory run", wait, dry_run)


@jobs_app.callback(invoke_without_command=True)
def _jobs_default(context: typer.Context) -> None:
    if context.invoked_subcommand is None:
        jobs_ls()


@jobs_app.command("submit")
def jobs_submit(
    spec: Annotated[Path, typer.Argument(help="Job spec (YAML).", exists=True, dir_okay=False)],
    wait: Annotated[bool, typer.Option(help="Follow the job until it ends.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the script or manifests; submit nothing.")
    ] = False,
) -> None:
    """Submit a job from a YAML spec (`kind: Job`)."""
    load_job(spec.read_text(), str(spec))
    _submit(spec.read_bytes(), str(spec), wait, dry_run)


@jobs_app.command("ls")
def jobs_ls(
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many, newest first.")] = 50,
) -> None:
    """List the newest jobs with their state and exit code."""
    rows = _client().json("GET", "/api/jobs", params={"limit": limit})["jobs"]
    table = Table(
        "id", "slurm job", "runs as", "state", "exit", "nodes", "tasks", "submitted", "command"
    )
    for job in rows:
        table.add_row(
            job["id"],
            job["slurm_job_id"],
            job["run_as"],
            job["state"],
            "" if job["exit_code"] is None else str(job["exit_code"]),
            job["nodes"],
            _task_counts(job),
            job["submitted_at"][:19],
            shlex.join(job["command"])[:60],
        )
    console.print(table)


@jobs_app.command("show")
def jobs_show(id_or_name: Annotated[str, typer.Argument(help="Job id or name.")]) -> None:
    """Show a job: state, exit code, nodes and each array task."""
    job = _client().json("GET", f"/api/jobs/{id_or_name}")
    console.print(f"[bold]{job['id']}[/bold] ({_scheduler_id(job)}): {_line(job)}")
    console.print(f"command: {shlex.join(job['command'])}", highlight=False)
    console.print(f"logs:    {job['log_dir']}", highlight=False)
    if job["array"] or len(job["tasks"]) > 1:
        table = Table("task", "slurm job", "state", "exit", "nodes", "reason")
        for task in job["tasks"]:
            table.add_row(
                str(task["task"]),
                task["slurm_job_id"],
                task["state"],
                "" if task["exit_code"] is None else str(task["exit_code"]),
                task["nodes"],
                task["reason"],
            )
        console.print(table)


@jobs_app.command("logs")
def jobs_logs(
    id_or_name: Annotated[str, typer.Argument(help="Job id or name.")],
    task: Annotated[int | None, typer.Option(help="Array task (default: the first).")] = None,
    lines: Annotated[int, typer.Option("--lines", "-n", help="How many lines.")] = 200,
) -> None:
    """Print the output of a job (or of one array task)."""
    params: dict[str, Any] = {"lines": lines}
    if task is not None:
        params["task"] = task
    text = _client().request("GET", f"/api/jobs/{id_or_name}/logs", params=params).text
    console.out(text, end="", highlight=False)


@jobs_app.command("cancel")
def jobs_cancel(id_or_name: Annotated[str, typer.Argument(help="Job id or name.")]) -> None:
    """Cancel a job (every array task)."""
    job = _client().json("DELETE", f"/api/jobs/{id_or_name}")
    console.print(f"job {job['id']}: cancel requested ({job['state']})")


def _submit(body: bytes, origin: str, wait: bool, dry_run: bool) -> None:
    client = _client()
    headers = {"X-Spec-Origin": origin}
    if dry_run:
        script = client.request(
            "POST", "/api/jobs", content=body, headers=headers, params={"dry_run": "1"}
        ).text
        console.out(script, highlight=False)
        return
    job = client.json("POST", "/api/jobs", content=body, headers=headers)
    console.print(f"job [bold]{job['id']}[/bold] submitted as {_scheduler_id(job)}")
    if wait:
        raise typer.Exit(_follow(client, job["id"]))


def _follow(client: AdminClient, job_id: str) -> int:
    """Show a live status line until the job ends; print its log; return its exit code."""
    started = time.monotonic()
    with console.status(f"{job_id}: submitted") as status:
        while True:
            job = client.json("GET", f"/api/jobs/{job_id}")
            elapsed = round(time.monotonic() - started)
            status.update(f"{job_id}: {_line(job)} ({elapsed}s)")
            if job["state"] in _FINISHED:
                break
            time.sleep(0.5)
    tasks = [t["task"] for t in job["tasks"]] if job["array"] else [None]
    for task in tasks:
        if task is not None:
            console.rule(f"task {task}")
        params = {"lines": 10_000} if task is None else {"lines": 10_000, "task": task}
        text = client.request("GET", f"/api/jobs/{job_id}/logs", params=params).text
        console.out(text, end="", highlight=False)
    console.print(f"job {job_id}: {_line(job)}", highlight=False, style=None)
    if job["state"] == "completed":
        return int(job["exit_code"] or 0)
    return int(job["exit_code"] or 1)


def _scheduler_id(job: dict[str, Any]) -> str:
    """``Slurm job 4711`` or ``Kubernetes job set train-0a1b2c`` (its Jobs' name prefix)."""
    if job["backend"] == "kubernetes":
        return f"Kubernetes job set {job['slurm_job_id']}"
    return f"Slurm job {job['slurm_job_id']}"


def _line(job: dict[str, Any]) -> str:
    parts = [job["state"]]
    if job["exit_code"]:
        parts.append(f"exit code {job['exit_code']}")
    if job["nodes"]:
        parts.append(f"on {job['nodes']}")
    if job["array"]:
        parts.append(_task_counts(job))
    if job["reason"]:
        parts.append(job["reason"])
    return ", ".join(parts)


def _task_counts(job: dict[str, Any]) -> str:
    counts: dict[str, int] = {}
    for task in job["tasks"]:
        counts[task["state"]] = counts.get(task["state"], 0) + 1
    return " ".join(f"{n} {state}" for state, n in sorted(counts.items()))


def _default_name(program: str) -> str:
    base = re.sub(r"[^a-z0-9-]+", "-", Path(program).name.lower()).strip("-")
    name = base if base[:1].isalpha() else f"job-{base}".rstrip("-")
    name = name[:63].rstrip("-") or "job"
    return name if re.match(NAME_PATTERN, name) else "job"


def _cwd() -> str | None:
    try:
        return str(Path.cwd())
    except OSError:  # the folder was deleted under us
        print(
            "warning: the current folder is gone; the job runs in Slurm's default", file=sys.stderr
        )
        return None
