"""A real daemon outage for a block: stopped by its pid, and always started again.

Other tests (and other people) share the dev clusters, so the daemon is
started again whatever happens in the block: at its end, and by a detached
watchdog after ``MAX_OUTAGE_S`` should the test process itself be killed.
Outages of one daemon by concurrent test runs on this machine take turns
(an exclusive lock).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

MAX_OUTAGE_S = 180


@contextlib.contextmanager
def daemon_down(
    name: str,
    find_pid: Callable[[], int],
    stop_signal: signal.Signals,
    watchdog: Sequence[str],
    start_again: Callable[[], None],
) -> Iterator[None]:
    """Send ``stop_signal`` to ``name``'s pid for the block; ``start_again`` after it, always.

    Args:
        name: The daemon, in messages and in the lock's file name.
        find_pid: Its pid (asked under the lock, once it is this run's turn).
        stop_signal: How it is stopped.
        watchdog: A command that starts it again; run detached, after
            ``MAX_OUTAGE_S``, unless the block ended first.
        start_again: Starts it again (and waits until it answers).
    """
    with Path(f"/tmp/aifactory-{name}-outage.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            pid = find_pid()
            dog = subprocess.Popen(
                ["sh", "-c", 'sleep "$1"; shift; exec "$@"', "watchdog", str(MAX_OUTAGE_S),
                 *watchdog],
                start_new_session=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            os.kill(pid, stop_signal)
            _wait_exit(name, pid, 30)
            try:
                yield
            finally:
                os.killpg(dog.pid, signal.SIGKILL)
                dog.wait()
        finally:
            start_again()


def _wait_exit(name: str, pid: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise AssertionError(f"{name} (pid {pid}) did not exit within {timeout_s:.0f}s")
