"""A real Kubernetes API-server outage: kill the dev cluster's kube-apiserver by its pid,
start it again after.

Other tests (and other people) share the cluster, so the API server is
started again whatever happens in the block: at its end, and by a detached
watchdog after ``MAX_OUTAGE_S`` should the test process itself be killed.
Outages of concurrent test runs on this machine take turns (an exclusive lock).
The cluster script's ``up`` starts just the daemons that are not running
(kube-controller-manager and kube-scheduler may have exited too, having lost
their leader lease during the outage).
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

from .kube import CLUSTER, STATE_DIR, script

_PID_FILE = STATE_DIR / "run" / "kube-apiserver.pid"
_LOCK = Path("/tmp/aifactory-kube-apiserver-outage.lock")
MAX_OUTAGE_S = 180
# The watchdog: its arguments are the outage's longest duration and the cluster script.
_WATCHDOG = 'sleep "$1"; bash "$2" up'


def _api_server_pid() -> int:
    pid = int(_PID_FILE.read_text().strip())
    exe = Path(os.readlink(f"/proc/{pid}/exe")).name
    assert exe == "kube-apiserver", f"pid {pid} in {_PID_FILE} is {exe!r}, not kube-apiserver"
    return pid


def _wait_exit(pid: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise AssertionError(f"kube-apiserver (pid {pid}) did not exit within {timeout_s:.0f}s")


def _start_cluster() -> None:
    up = script("up", timeout_s=300)
    assert up.returncode == 0, f"`{CLUSTER} up` failed after the outage:\n{up.stderr[-2000:]}"


@contextlib.contextmanager
def api_server_down() -> Iterator[None]:
    """Kill kube-apiserver (SIGKILL to its pid) for the block; it is started again in any case."""
    with _LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            pid = _api_server_pid()
            watchdog = subprocess.Popen(
                ["sh", "-c", _WATCHDOG, "watchdog", str(MAX_OUTAGE_S), str(CLUSTER)],
                start_new_session=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            os.kill(pid, signal.SIGKILL)
            _wait_exit(pid, 30)
            try:
                yield
            finally:
                os.killpg(watchdog.pid, signal.SIGKILL)
                watchdog.wait()
        finally:
            _start_cluster()
