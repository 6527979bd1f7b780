"""Slurm client commands for unit tests that replay what Slurm 22.05.8 printed.

Recorded on the dev cluster with slurmctld stopped (the table is in
``aifactory.backends.slurm.commands``); the real outage is in
tests/integration/test_slurm_backend_outage.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

# `squeue --json` with slurmctld stopped: exit 0 after 9 s.
OUTAGE_JSON = json.dumps(
    {
        "meta": {"plugin": {"type": "openapi/v0.0.38"}, "Slurm": {"release": "22.05.8"}},
        "errors": [
            {
                "description": "Failed while looking for jobs",
                "error_number": -1,
                "error": "Unspecified error",
                "source": "slurm_load_jobs",
            }
        ],
        "jobs": [],
    }
)
UNREACHABLE = "Unable to contact slurm controller (connect failure)"


def recorded_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder that is all of PATH: a real Slurm client is never reached."""
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", str(folder))
    return folder


def replay(bin_dir: Path, name: str, script: str) -> None:
    """Put a ``name`` command in ``bin_dir`` that runs ``script`` (sh, absolute paths only)."""
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)


def outage(bin_dir: Path) -> None:
    """squeue, scancel, sbatch and sacct as they answered with slurmctld stopped."""
    (bin_dir / "outage.json").write_text(OUTAGE_JSON)
    replay(
        bin_dir,
        "squeue",
        f"""case "$*" in
  *--json*) /bin/cat {bin_dir / "outage.json"}; exit 0 ;;
esac
echo 'slurm_load_jobs error: {UNREACHABLE}' >&2
exit 1
""",
    )
    replay(
        bin_dir, "scancel", f"echo 'scancel: error: Kill job error: {UNREACHABLE}' >&2\nexit 8\n"
    )
    replay(
        bin_dir, "sbatch", f"echo 'sbatch: error: submission failed: {UNREACHABLE}' >&2\nexit 1\n"
    )
    replay(bin_dir, "sacct", "exit 0\n")  # sacct -c reads its log, and knows no running job
