"""Run ``aifactory up`` in the background and stop it again."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import deque

from aifactory.cli.client import AdminClient, ClientError
from aifactory.config import Settings


def pid_file(settings: Settings) -> os.PathLike[str]:
    """Where the background server's pid is kept."""
    return settings.data_dir / "server.pid"


def start_background(settings: Settings, timeout_s: float = 60.0) -> int:
    """Start the server detached, wait until it answers; return its pid.

    Raises:
        ClientError: when it exits or stays silent (with its log's tail).
    """
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    log_path = settings.logs_dir / "server.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "aifactory", "up"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    with open(pid_file(settings), "w") as handle:
        handle.write(str(process.pid))
    client = AdminClient(settings)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ClientError(
                f"the server exited with code {process.returncode}:\n{_tail(log_path)}",
                fix=f"read {log_path}",
            )
        if client.healthy():
            return process.pid
        time.sleep(0.2)
    raise ClientError(f"the server did not answer within {timeout_s:.0f}s.", fix=f"read {log_path}")


def stop_background(settings: Settings, timeout_s: float = 60.0) -> bool:
    """SIGTERM the background server and wait for it; False when none ran."""
    path = pid_file(settings)
    try:
        with open(path) as handle:
            pid = int(handle.read().strip())
    except (OSError, ValueError):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        os.unlink(path)
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    os.unlink(path)
    return True


def _tail(path: os.PathLike[str], lines: int = 20) -> str:
    with open(path, errors="replace") as handle:
        return "".join(deque(handle, maxlen=lines))
