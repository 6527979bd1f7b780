"""Slurm's words in ours: job states, pending reasons, and numbers in its JSON."""

from __future__ import annotations

import logging
from typing import Any

from aifactory.backends.base import AllocationState

logger = logging.getLogger(__name__)

# Slurm job states -> ours. Anything else is logged and becomes UNKNOWN.
STATES = {
    "PENDING": AllocationState.PENDING,
    "CONFIGURING": AllocationState.PENDING,
    "REQUEUED": AllocationState.PENDING,
    "REQUEUE_HOLD": AllocationState.PENDING,
    "REQUEUE_FED": AllocationState.PENDING,
    "RESV_DEL_HOLD": AllocationState.PENDING,
    "RUNNING": AllocationState.RUNNING,
    "COMPLETING": AllocationState.RUNNING,
    "SUSPENDED": AllocationState.RUNNING,
    "STOPPED": AllocationState.RUNNING,
    "RESIZING": AllocationState.RUNNING,
    "SIGNALING": AllocationState.RUNNING,
    "STAGE_OUT": AllocationState.RUNNING,
    "COMPLETED": AllocationState.COMPLETED,
    "CANCELLED": AllocationState.CANCELLED,
    "FAILED": AllocationState.FAILED,
    "BOOT_FAIL": AllocationState.FAILED,
    "NODE_FAIL": AllocationState.FAILED,
    "OUT_OF_MEMORY": AllocationState.FAILED,
    "DEADLINE": AllocationState.TIMEOUT,
    "TIMEOUT": AllocationState.TIMEOUT,
    "PREEMPTED": AllocationState.PREEMPTED,
    "REVOKED": AllocationState.CANCELLED,
    "SPECIAL_EXIT": AllocationState.FAILED,
}

# Pending reasons in plain words; others are shown as Slurm wrote them.
REASONS = {
    "None": "queued, not yet considered",
    "Resources": "waiting for resources",
    "Priority": "waiting behind higher-priority jobs",
    "Dependency": "waiting for a dependency",
    "BeginTime": "waiting for its begin time",
    "JobHeldUser": "held by the user",
    "JobHeldAdmin": "held by an administrator",
    "PartitionNodeLimit": "asks for more nodes than the partition allows",
    "PartitionTimeLimit": "asks for more time than the partition allows",
    "PartitionDown": "partition is down",
    "PartitionInactive": "partition is inactive",
    "PartitionConfig": "partition configuration does not allow it",
    "ReqNodeNotAvail": "requested nodes are not available",
    "Reservation": "waiting for its reservation",
    "AssocGrpCpuLimit": "account CPU limit reached",
    "AssocGrpGRES": "account GPU limit reached",
    "AssocMaxJobsLimit": "account job limit reached",
    "QOSMaxCpuPerUserLimit": "QOS limit on CPUs per user reached",
    "QOSMaxGRESPerUser": "QOS limit on GPUs per user reached",
    "QOSMaxJobsPerUserLimit": "QOS limit on jobs per user reached",
    "QOSGrpCpuLimit": "QOS CPU limit reached",
    "QOSGrpGRES": "QOS GPU limit reached",
    "NodeDown": "a node went down",
    "TimeLimit": "time limit reached",
    "NonZeroExitCode": "exited with a non-zero code",
    "JobLaunchFailure": "failed to launch",
    "BadConstraints": "constraints cannot be met",
}


def plain_reason(reason: str) -> str:
    """A Slurm reason code in plain words."""
    if reason.startswith("QOS") and reason not in REASONS:
        return f"QOS limit ({reason})"
    return REASONS.get(reason, reason)


def job_state(name: str) -> AllocationState:
    """Our state for a Slurm job state; unknown ones are logged and become UNKNOWN."""
    state = STATES.get(name)
    if state is None:
        logger.warning("unknown Slurm job state %r", name)
        return AllocationState.UNKNOWN
    return state


def slurm_number(value: Any) -> float:
    """A number in Slurm's JSON: plain, or newer Slurm's ``{"set": …, "number": N}``."""
    if isinstance(value, dict):  # newer Slurm: {"set": true, "number": N}
        value = value.get("number", 0) if value.get("set", True) else 0
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return 0.0
