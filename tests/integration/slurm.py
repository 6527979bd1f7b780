"""The dev Slurm cluster as tests see it: whether it answers, our jobs, a job's state."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest


def missing() -> str:
    """Why Slurm cannot be used now, with the fix; "" when it answers."""
    if shutil.which("sinfo") is None:
        return "Slurm's commands (sinfo) are missing: run `bash deploy/slurm-dev-cluster.sh up`"
    try:
        subprocess.run(["sinfo", "-h"], check=True, capture_output=True, timeout=10)
    except (subprocess.SubprocessError, OSError) as exc:
        return f"Slurm does not answer ({exc}): run `bash deploy/slurm-dev-cluster.sh up`"
    return ""


MISSING = missing()
needs_slurm = pytest.mark.skipif(bool(MISSING), reason=MISSING)


def needs_slurm_as_root(why: str) -> pytest.MarkDecorator:
    """Skip without Slurm, or when not root (as CI runs), saying ``why`` root is needed."""
    reason = MISSING or ("" if os.getuid() == 0 else f"needs root (as CI runs): {why}")
    return pytest.mark.skipif(bool(reason), reason=reason)


def our_jobs(data_dir: Path) -> dict[str, dict[str, object]]:
    """Live Slurm jobs started by the control plane using ``data_dir``."""
    instance = (data_dir / "instance").read_text().strip()
    out = subprocess.run(["squeue", "--json"], capture_output=True, text=True, check=True).stdout
    return {
        str(job["job_id"]): job
        for job in json.loads(out)["jobs"]
        if str(job.get("comment", "")).startswith(f"aifactory:{instance}:")
        and job["job_state"] in ("PENDING", "RUNNING", "CONFIGURING")
    }


def job_state(job: str) -> str:
    """The Slurm job's state as squeue says it ("" once Slurm forgot it)."""
    done = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True)
    return done.stdout.strip()
