"""A job that must go is cancelled again until its stack confirms; once, however often asked."""

from __future__ import annotations

import asyncio

import pytest

from aifactory.control import cancellations
from aifactory.control.cancellations import Cancellations
from scripted_stack import ScriptedStack, eventually


@pytest.fixture(autouse=True)
def _quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cancellations, "_FIRST_RETRY_S", 0.01)


def test_a_cancel_is_retried_until_the_stack_answers() -> None:
    stack = ScriptedStack({"chat-a": "7"}, reachable=False)
    failures: list[tuple[str, str]] = []

    async def scenario() -> None:
        def failed(name: str, error: Exception, _asked_at: float) -> None:
            failures.append((name, str(error)))

        jobs = Cancellations(lambda _: stack, failed)
        done = jobs.cancel("slurm", "7")
        again = jobs.cancel("slurm", "7")  # the same cancel, not a second one
        await eventually(lambda: len(failures) >= 3)
        assert not done.done() and jobs.pending == {("slurm", "7")}
        stack.reachable = True
        assert await done and await again
        assert jobs.pending == set()
        await jobs.close()

    asyncio.run(scenario())
    assert stack.cancelled == ["7"] and stack.ours == {}
    assert stack.calls.count("cancel") == len(failures) + 1
    assert failures[0][0] == "slurm" and "did not answer" in failures[0][1]


def test_closing_gives_up_and_leaves_the_job_to_the_next_run() -> None:
    stack = ScriptedStack({"chat-a": "7"}, reachable=False)

    async def scenario() -> bool:
        jobs = Cancellations(lambda _: stack, lambda *_: None)
        done = jobs.cancel("slurm", "7")
        await asyncio.sleep(0.05)
        await jobs.close()
        return await done

    assert asyncio.run(scenario()) is False
    assert stack.ours == {"chat-a": "7"}
