"""A batch's progress: lines done, throughput over the shards' running time, ETA."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from aifactory.batches.views import batch_view
from aifactory.store import BatchRow


def _row(status: str, shards: list[dict[str, object]]) -> BatchRow:
    created = time.time() - 30
    return BatchRow(
        id="batch_1",
        endpoint="/v1/chat/completions",
        model="chat",
        input_file_id="file-1",
        completion_window="24h",
        status=status,
        metadata_={},
        errors=[],
        request_counts={"total": 100, "completed": 40, "failed": 0},
        shards=shards,
        times={"expires_at": int(created) + 86400},
        usage={},
        created_at=datetime.fromtimestamp(created, UTC),
    )


def test_progress_counts_lines_and_estimates_the_rest() -> None:
    now = time.time()
    shard = {
        "index": 0, "state": "running", "attempts": 2, "lines_done": 40, "lines_total": 100,
        "seconds": 10.0, "started_at": now - 10, "first_started_at": now - 25,
        "first_line_at": now - 20, "handle": "1042", "reason": "",
    }  # fmt: skip
    view = batch_view(_row("in_progress", [shard]))
    progress = view["progress"]
    assert (progress["lines_done"], progress["lines_total"]) == (40, 100)
    assert abs(progress["lines_per_s"] - 2.0) < 0.05  # 40 lines over 20 s of runs
    assert abs(progress["eta_s"] - 30) < 1
    assert abs(progress["scheduler_wait_s"] - 5) < 1 and abs(progress["first_line_s"] - 10) < 1
    assert progress["jobs"][0] == {
        "shard": 0, "backend": None, "job": "1042", "state": "running", "reason": "",
        "expected_start_s": None, "attempts": 2, "lines_done": 40, "lines_total": 100,
    }  # fmt: skip
    assert view["object"] == "batch" and view["request_counts"]["completed"] == 40


def test_no_eta_before_the_first_line_or_once_finished() -> None:
    waiting = {
        "index": 0,
        "state": "pending",
        "lines_done": 0,
        "lines_total": 100,
        "reason": "Priority",
    }
    assert batch_view(_row("in_progress", [waiting]))["progress"]["eta_s"] is None
    done = {
        "index": 0,
        "state": "completed",
        "lines_done": 100,
        "lines_total": 100,
        "seconds": 50.0,
    }
    progress = batch_view(_row("completed", [done]))["progress"]
    assert progress["eta_s"] is None and progress["lines_per_s"] == 2.0


def test_a_pending_job_adds_the_schedulers_expected_wait() -> None:
    now = time.time()
    requeued = {
        "index": 0, "state": "pending", "lines_done": 40, "lines_total": 100, "seconds": 20.0,
        "expected_start": now + 60, "handle": "1043", "reason": "waiting for resources",
    }  # fmt: skip
    progress = batch_view(_row("in_progress", [requeued]))["progress"]
    assert abs(progress["jobs"][0]["expected_start_s"] - 60) < 1
    assert abs(progress["eta_s"] - 90) < 1  # 60 s of wait, then 60 lines at 2 per second
    del requeued["expected_start"]
    assert batch_view(_row("in_progress", [requeued]))["progress"]["eta_s"] is None
