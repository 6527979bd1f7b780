"""A real slurmctld outage: stop the dev cluster's controller by its pid, start it again after.

Other tests (and other people) share the cluster, so the controller is
started again whatever happens in the block: at its end, and by a detached
watchdog after ``MAX_OUTAGE_S`` should the test process itself be killed.
Outages of concurrent test runs on this machine take turns (an exclusive lock).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

_STATE_DIR = Path(os.environ.get("AIF_SLURM_DEV_DIR", "/var/lib/aifactory-slurm-dev"))
_PID_FILE = _STATE_DIR / "run" / "slurmctld.pid"
_LOCK = Path("/tmp/aifactory-slurmctld-outage.lock")
MAX_OUTAGE_S = 180
# The watchdog: its one argument is the outage's longest duration (no text is pasted in).
_WATCHDOG = 'sleep "$1"; scontrol ping | grep -q "is UP" || slurmctld'


def _controller_pid() -> int:
    pid = int(_PID_FILE.read_text().strip())
    comm = Path(f"/proc/{pid}/comm").read_text().strip()
    assert comm == "slurmctld", f"pid {pid} in {_PID_FILE} is {comm!r}, not slurmctld"
    return pid


def controller_answers() -> bool:
    """Whether ``scontrol ping`` finds slurmctld up."""
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=30)
    return "is UP" in ping.stdout


def _wait_exit(pid: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise AssertionError(f"slurmctld (pid {pid}) did not exit within {timeout_s:.0f}s")


def _start_controller() -> None:
    if controller_answers():
        return
    subprocess.run(["slurmctld"], check=False, timeout=60)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if controller_answers():
            return
        time.sleep(0.5)
    raise AssertionError("slurmctld did not answer again within 60s: run the cluster's `up`")


@contextlib.contextmanager
def slurmctld_down() -> Iterator[None]:
    """Stop slurmctld (SIGTERM to its pid) for the block; it is started again in any case."""
    with _LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            assert controller_answers(), "slurmctld is not up before the outage"
            pid = _controller_pid()
            watchdog = subprocess.Popen(
                ["sh", "-c", _WATCHDOG, "watchdog", str(MAX_OUTAGE_S)],
                start_new_session=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            os.kill(pid, signal.SIGTERM)
            _wait_exit(pid, 30)
            try:
                yield
            finally:
                os.killpg(watchdog.pid, signal.SIGKILL)
                watchdog.wait()
        finally:
            _start_controller()
