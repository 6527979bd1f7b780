"""A real slurmctld outage: stop the dev cluster's controller by its pid, start it again after.

The outage itself (the lock, the watchdog, the restart in any case) is
``outage.daemon_down``'s.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .outage import daemon_down

_STATE_DIR = Path(os.environ.get("AIF_SLURM_DEV_DIR", "/var/lib/aifactory-slurm-dev"))
_PID_FILE = _STATE_DIR / "run" / "slurmctld.pid"
# Started by the watchdog only if it does not answer (no text is pasted in).
_WATCHDOG = ["sh", "-c", 'scontrol ping | grep -q "is UP" || slurmctld']


def _controller_pid() -> int:
    assert controller_answers(), "slurmctld is not up before the outage"
    pid = int(_PID_FILE.read_text().strip())
    comm = Path(f"/proc/{pid}/comm").read_text().strip()
    assert comm == "slurmctld", f"pid {pid} in {_PID_FILE} is {comm!r}, not slurmctld"
    return pid


def controller_answers() -> bool:
    """Whether ``scontrol ping`` finds slurmctld up."""
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=30)
    return "is UP" in ping.stdout


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


@contextmanager
def slurmctld_down() -> Iterator[None]:
    """Stop slurmctld (SIGTERM to its pid) for the block; it is started again in any case."""
    with daemon_down("slurmctld", _controller_pid, signal.SIGTERM, _WATCHDOG, _start_controller):
        yield
