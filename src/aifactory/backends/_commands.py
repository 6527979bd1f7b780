"""The one helper that runs scheduler commands: argv lists, timeouts, off the loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aifactory.errors import SchedulerCommandFailed

logger = logging.getLogger(__name__)


async def run_command(
    argv: list[str],
    *,
    timeout_s: float,
    stdin: str | None = None,
    with_stderr: bool = False,
    env: dict[str, str] | None = None,
) -> str:
    """Run ``argv`` (never through a shell) and return its stdout (then stderr, if asked).

    ``env`` replaces the environment (None: this process's own), for a
    command that passes its environment on to a workload (``sbatch``).

    Raises:
        SchedulerCommandFailed: on a non-zero exit, a timeout, or a missing program.
    """
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
    except OSError as exc:
        raise SchedulerCommandFailed(argv, 127, "", str(exc)) from exc
    try:
        stdout, stderr = await asyncio.wait_for(
            process.communicate(stdin.encode() if stdin is not None else None), timeout_s
        )
    except TimeoutError as exc:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise SchedulerCommandFailed(argv, None, stderr=f"waited {timeout_s:g} s") from exc
    out, err = stdout.decode(errors="replace"), stderr.decode(errors="replace")
    if process.returncode != 0:
        raise SchedulerCommandFailed(argv, process.returncode, out, err)
    return out + err if with_stderr else out
