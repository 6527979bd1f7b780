"""Steady chat load from a few threads, counting what was served and what failed."""

from __future__ import annotations

import threading
import time
from types import TracebackType

from openai import OpenAI


class SteadyLoad:
    """Sends chat requests (streamed unless told) from ``threads`` threads in its ``with`` block.

    Every failure is recorded (none may happen in the tests that use it);
    ``served`` counts the non-empty answers.
    """

    def __init__(
        self,
        client: OpenAI,
        model: str,
        threads: int = 2,
        max_tokens: int = 16,
        stream: bool = True,
    ) -> None:
        self.served = 0
        self.failures: list[str] = []
        self._client = client
        self._model = model
        self._max_tokens = max_tokens
        self._stream = stream
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def __enter__(self) -> SteadyLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def wait_served(self, count: int, timeout_s: float = 60) -> None:
        """Wait until ``count`` answers came back (the load is steady)."""
        deadline = time.monotonic() + timeout_s
        while self.served < count and time.monotonic() < deadline:
            time.sleep(0.2)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if not self._answer():
                    self.failures.append("empty answer")
                self.served += 1
            except Exception as exc:  # every failure is counted, none may happen
                self.failures.append(repr(exc))

    def _answer(self) -> str:
        messages = [{"role": "user", "content": "Tell me about Slurm."}]
        if not self._stream:
            reply = self._client.chat.completions.create(
                model=self._model, messages=messages, max_tokens=self._max_tokens
            )
            return reply.choices[0].message.content or ""
        stream = self._client.chat.completions.create(
            model=self._model,
            messages=messages,
            max_tokens=self._max_tokens,
            stream=True,
        )
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
