"""The OpenAI batch object of a stored batch, with aifactory's progress beside it."""

from __future__ import annotations

import time
from typing import Any

from aifactory.store import BatchRow

ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")
FINAL = ("completed", "failed", "expired", "cancelled")


def batch_view(row: BatchRow) -> dict[str, Any]:
    """The batch as OpenAI's API returns it, plus ``progress`` and ``usage``."""
    times = row.times
    created = int(row.created_at.timestamp())
    return {
        "id": row.id,
        "object": "batch",
        "endpoint": row.endpoint,
        "model": row.model,
        "errors": {"object": "list", "data": row.errors} if row.errors else None,
        "input_file_id": row.input_file_id,
        "completion_window": row.completion_window,
        "status": row.status,
        "output_file_id": row.output_file_id,
        "error_file_id": row.error_file_id,
        "created_at": created,
        "in_progress_at": times.get("in_progress_at"),
        "expires_at": times.get("expires_at"),
        "finalizing_at": times.get("finalizing_at"),
        "completed_at": times.get("completed_at"),
        "failed_at": times.get("failed_at"),
        "expired_at": times.get("expired_at"),
        "cancelling_at": times.get("cancelling_at"),
        "cancelled_at": times.get("cancelled_at"),
        "request_counts": {
            "total": row.request_counts.get("total", 0),
            "completed": row.request_counts.get("completed", 0),
            "failed": row.request_counts.get("failed", 0),
        },
        "metadata": row.metadata_ or None,
        "usage": row.usage or None,
        "progress": progress(row),
    }


def progress(row: BatchRow) -> dict[str, Any]:
    """Lines done, each shard's job and its state, the throughput measured and an ETA.

    The throughput is lines answered per second of a shard's runs (engine
    start included); ``lines_per_s`` is that times the shards. A shard's ETA
    is the scheduler's expected wait while its job is pending (Slurm's
    backfill estimate) plus its lines left at the measured pace; the batch's
    is its slowest shard's, unknown (None) until a line is done or while a
    pending job has no estimate. The time to the first line is split into
    the scheduler's wait and the rest (engine start, first answer).
    """
    total = row.request_counts.get("total", 0)
    done = sum(int(s.get("lines_done", 0)) for s in row.shards)
    now = time.time()
    ran = sum(_ran(s, now) for s in row.shards)
    per_shard = done / ran if ran > 0 and done else None
    created = row.created_at.timestamp()
    firsts = [float(f) for s in row.shards if (f := s.get("first_line_at"))]
    starts = [float(t) for s in row.shards if (t := s.get("first_started_at"))]
    etas = [_eta(s, per_shard, now) for s in row.shards]
    known = [e for e in etas if e is not None]
    eta = max(known) if row.status == "in_progress" and len(known) == len(etas) else None
    return {
        "lines_done": done,
        "lines_total": total,
        "lines_per_s": round(per_shard * len(row.shards), 3) if per_shard else None,
        "eta_s": round(eta, 1) if eta is not None else None,
        "first_line_s": round(min(firsts) - created, 2) if firsts else None,
        "scheduler_wait_s": round(max(0.0, min(starts) - created), 2) if starts else None,
        "jobs": [
            {
                "shard": s["index"],
                "backend": row.backend,
                "job": s.get("handle", ""),
                "state": s.get("state", "pending"),
                "reason": s.get("reason", ""),
                "expected_start_s": _wait(s, now),
                "attempts": s.get("attempts", 0),
                "lines_done": s.get("lines_done", 0),
                "lines_total": s.get("lines_total", 0),
            }
            for s in row.shards
        ],
    }


def _wait(shard: dict[str, Any], now: float) -> float | None:
    """Seconds until the scheduler expects to start the shard's pending job."""
    expected = shard.get("expected_start")
    if shard.get("state") != "pending" or not expected:
        return None
    return round(max(0.0, float(expected) - now), 1)


def _eta(shard: dict[str, Any], per_shard: float | None, now: float) -> float | None:
    """Seconds until the shard is done: 0 when it is, None when not known."""
    left = int(shard.get("lines_total", 0)) - int(shard.get("lines_done", 0))
    if left <= 0:
        return 0.0
    if per_shard is None:
        return None
    if shard.get("state") == "pending":
        wait = _wait(shard, now)
        return None if wait is None else wait + left / per_shard
    return left / per_shard


def _ran(shard: dict[str, Any], now: float) -> float:
    """Seconds the shard's runs have lasted (earlier runs and the current one)."""
    seconds = float(shard.get("seconds", 0.0))
    started = shard.get("started_at")
    if started and shard.get("state") == "running":
        seconds += now - float(started)
    return seconds
