"""The stack watch: asked in the background, an outage from the first unanswered question."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

import pytest

from aifactory.control import stack_watch
from aifactory.control.outages import Outages
from aifactory.control.stack_watch import StackWatch
from scripted_stack import ScriptedStack, eventually


@pytest.fixture(autouse=True)
def _quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stack_watch, "_FIRST_RETRY_S", 0.01)
    monkeypatch.setattr(stack_watch, "_MIN_GAP_S", 0.01)


def test_restored_replicas_wait_for_the_first_answer_and_an_outage_blocks() -> None:
    stack = ScriptedStack({"chat-a": "7"}, reachable=False)
    outages = Outages()
    answers: list[dict[str, str]] = []

    async def settled(name: str, ours: Mapping[str, str]) -> None:
        answers.append(dict(ours))

    async def scenario() -> None:
        watch = StackWatch(lambda _: stack, outages, settled, timeout_s=5)
        watch.add(["slurm", "local"], adopting=True)
        asked = time.time()
        await watch.start()
        assert not watch.answers("slurm") and watch.answers("local")
        assert "waiting for Slurm to list" in watch.blocker(["slurm"])
        await eventually(lambda: outages.of("slurm") is not None)
        outage = outages.of("slurm")
        assert outage is not None and outage.since >= asked
        assert watch.blocker(["local", "slurm"]) == outage.message
        assert answers == [], "could not ask settles nothing"
        stack.reachable = True
        await eventually(lambda: watch.answers("slurm"))
        assert answers == [{"chat-a": "7"}] and outages.of("slurm") is None
        assert watch.blocker(["slurm"]) == ""
        # A doubtful call is answered by one more question.
        watch.doubt("slurm")
        await eventually(lambda: len(answers) == 2)
        # A failed call is an outage at once, until the watch's next answer.
        watch.failed("slurm", "Slurm did not answer `squeue`", time.time())
        assert not watch.answers("slurm")
        await eventually(lambda: watch.answers("slurm"))
        await watch.stop()

    asyncio.run(scenario())
    assert "local" not in {o.dependency for o in outages.current()}


def test_a_question_that_hangs_is_cut_by_its_own_timeout() -> None:
    class Hanging(ScriptedStack):
        async def tagged(self) -> dict[str, str]:
            await asyncio.sleep(3600)
            return {}

    outages = Outages()

    async def scenario() -> None:
        async def settled(_name: str, _ours: Mapping[str, str]) -> None:
            raise AssertionError("nothing to settle")

        watch = StackWatch(lambda _: Hanging(), outages, settled, timeout_s=0.1)
        watch.add(["slurm"], adopting=True)
        await watch.start()
        await eventually(lambda: outages.of("slurm") is not None)
        await watch.stop()

    asyncio.run(scenario())
    outage = outages.of("slurm")
    assert outage is not None
    assert outage.error == "no list of our allocations within 0.1 s"
