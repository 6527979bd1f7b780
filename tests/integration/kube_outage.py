"""A real Kubernetes API-server outage: kill the dev cluster's kube-apiserver by its pid,
start it again after.

The outage itself (the lock, the watchdog, the restart in any case) is
``outage.daemon_down``'s. The cluster script's ``up`` starts just the daemons
that are not running (kube-controller-manager and kube-scheduler may have
exited too, having lost their leader lease during the outage).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .kube import CLUSTER, STATE_DIR, script
from .outage import daemon_down

_PID_FILE = STATE_DIR / "run" / "kube-apiserver.pid"


def _api_server_pid() -> int:
    pid = int(_PID_FILE.read_text().strip())
    exe = Path(os.readlink(f"/proc/{pid}/exe")).name
    assert exe == "kube-apiserver", f"pid {pid} in {_PID_FILE} is {exe!r}, not kube-apiserver"
    return pid


def _start_cluster() -> None:
    up = script("up", timeout_s=300)
    assert up.returncode == 0, f"`{CLUSTER} up` failed after the outage:\n{up.stderr[-2000:]}"


@contextmanager
def api_server_down() -> Iterator[None]:
    """Kill kube-apiserver (SIGKILL to its pid) for the block; it is started again in any case."""
    with daemon_down(
        "kube-apiserver", _api_server_pid, signal.SIGKILL, ["bash", str(CLUSTER), "up"],
        _start_cluster,
    ):  # fmt: skip
        yield
