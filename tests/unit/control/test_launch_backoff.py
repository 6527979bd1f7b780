from __future__ import annotations

import pytest

from aifactory.control import launch_backoff
from aifactory.control.launch_backoff import LaunchBackoff


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(launch_backoff.time, "monotonic", clock)
    return clock


def test_failures_back_off_doubling_up_to_a_minute_until_a_replica_is_ready(clock: Clock) -> None:
    backoff = LaunchBackoff()
    assert backoff.may_launch("chat")
    waits = []
    for _ in range(8):
        backoff.failed("chat", "engine exited with 1")
        start = clock.now
        while not backoff.may_launch("chat"):
            clock.now += 0.5
        waits.append(clock.now - start)
    assert waits == [1, 2, 4, 8, 16, 32, 60, 60]
    assert backoff.reasons["chat"] == "engine exited with 1 (retrying in 60s)"

    backoff.forgive("chat")
    backoff.failed("chat", "engine exited with 1")
    assert backoff.reasons["chat"].endswith("(retrying in 1s)")
    assert backoff.may_launch("other")


def test_a_wait_shows_its_reason_until_the_backend_accepts_a_replica(clock: Clock) -> None:
    backoff = LaunchBackoff()
    backoff.wait("chat", "node-hour budget spent; resets at 00:00", 30)
    assert not backoff.may_launch("chat")
    clock.now += 30
    assert backoff.may_launch("chat")
    assert backoff.reasons["chat"] == "node-hour budget spent; resets at 00:00"
    backoff.submitted("chat")
    assert "chat" not in backoff.reasons


def test_a_deleted_service_starts_afresh(clock: Clock) -> None:
    backoff = LaunchBackoff()
    backoff.failed("chat", "boom")
    backoff.failed("chat", "boom")
    backoff.forget("chat")
    assert backoff.may_launch("chat") and "chat" not in backoff.reasons
    backoff.failed("chat", "boom")
    assert backoff.reasons["chat"].endswith("(retrying in 1s)")
