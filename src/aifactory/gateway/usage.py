"""Reading token usage out of engine responses, streamed or whole; what a request is charged."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

_USAGE = b'"usage"'
_USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')
_DECODER = json.JSONDecoder()
_CHOICES = b'"choices"'
_NO_CHOICES = re.compile(rb'"choices"\s*:\s*\[\s*\]')
_EVENT_END = b"\n\n"
_MAX_PENDING = 1 << 20
# OpenAI's rule of thumb, for prompts whose count the engine never reported.
_BYTES_PER_TOKEN = 4


@dataclass(slots=True)
class Usage:
    """Prompt and completion tokens of one request."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    def absorb(self, document: object) -> bool:
        """Take the ``usage`` object of a response document; True when one was there."""
        if not isinstance(document, dict):
            return False
        return self.take(document.get("usage"))

    def take(self, usage: object) -> bool:
        """Take a ``usage`` object itself; True when it is one."""
        if not isinstance(usage, dict):
            return False
        self.prompt_tokens = int(usage.get("prompt_tokens") or 0)
        self.completion_tokens = int(usage.get("completion_tokens") or 0)
        return True


@dataclass(slots=True)
class Meter:
    """What one request used, as far as the gateway saw: what the ledger charges.

    A request cut short (the client left, or the engine broke off) never gets
    the engine's count, so it is charged the events it was streamed (llama.cpp
    and vLLM stream a token an event) and its prompt estimated from its size;
    a non-streamed one gets only the prompt, as its answer was never sent.
    """

    usage: Usage = field(default_factory=Usage)  # the engine's own count, once it came
    request_bytes: int = 0  # the body sent to an engine (0 while none took it)
    events: int = 0  # streamed events relayed to the client
    cut_short: str = ""  # "abandoned" (the client left) or "interrupted" (the engine did)

    def charged(self) -> Usage:
        """The tokens to charge."""
        if not self.cut_short or self.usage.prompt_tokens or self.usage.completion_tokens:
            return self.usage
        if not self.request_bytes:
            return Usage()
        return Usage(math.ceil(self.request_bytes / _BYTES_PER_TOKEN), self.events)


def usage_of_body(body: bytes) -> Usage:
    """The usage of a whole (non-streamed) JSON response."""
    usage = Usage()
    usage.take(_usage_object(body))
    return usage


def _usage_object(document: bytes) -> object:
    """The value of the last ``"usage"`` key of a JSON ``document`` when it is an object.

    Only that object is parsed, not the answer around it (half the CPU on a
    short answer, less the longer it is). It is the last ``"usage"`` key:
    engines put it after the choices, and inside the answer's strings a quote
    is escaped, so no text a model writes can look like it.
    """
    at = document.rfind(_USAGE)
    if at < 0:
        return None
    found = _USAGE_OBJECT.match(document, at)
    if found is None:  # "usage": null
        return None
    tail = document[found.end() - 1 :].decode("utf-8", "replace")
    try:
        return _DECODER.raw_decode(tail)[0]
    except ValueError:
        return None


class SSEUsageFilter:
    """Passes an SSE stream through event by event, picking out ``usage``.

    The gateway always asks the engine for usage in streams; when the client
    did not ask for it, the usage-only chunk (empty ``choices``) is dropped so
    the client sees exactly the stream it asked for.
    """

    def __init__(self, forward_usage_chunk: bool, usage: Usage | None = None) -> None:
        self.usage = Usage() if usage is None else usage
        self.events = 0  # complete events passed on
        self._forward_usage_chunk = forward_usage_chunk
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        """Return the bytes of the complete events in ``chunk`` (plus earlier leftovers)."""
        data = self._pending + chunk if self._pending else chunk
        end = data.rfind(_EVENT_END)
        if end < 0:
            if len(data) > _MAX_PENDING:
                self._pending = b""
                return data
            self._pending = data
            return b""
        if end + 2 == len(data):  # the usual chunk: whole events, nothing left over
            complete, self._pending = data, b""
        else:
            complete, self._pending = data[: end + 2], data[end + 2 :]
        events = complete.count(_EVENT_END)
        self.events += events
        if _USAGE not in complete:
            return complete
        if events == 1:  # the usual read: one event
            return self._filter(complete)
        return self._filter_usage_events(complete)

    def _filter_usage_events(self, complete: bytes) -> bytes:
        """``complete`` with each event that names ``usage`` filtered, the others untouched."""
        kept: list[bytes] = []
        start = 0
        while (at := complete.find(_USAGE, start)) >= 0:
            begin = complete.rfind(_EVENT_END, start, at)
            begin = start if begin < 0 else begin + 2
            end = complete.find(_EVENT_END, at)  # complete events end with one
            kept.append(complete[start:begin])
            kept.append(self._filter(complete[begin : end + 2]))
            start = end + 2
        kept.append(complete[start:])
        return b"".join(kept)

    def flush(self) -> bytes:
        """Whatever is left when the stream ends."""
        rest, self._pending = self._pending, b""
        return rest

    def _filter(self, event: bytes) -> bytes:
        """``event`` (with its end), or nothing: a usage-only chunk the client did not ask for."""
        if not self.usage.take(_usage_object(event)):
            return event
        if not self._forward_usage_chunk and (_CHOICES not in event or _NO_CHOICES.search(event)):
            return b""
        return event
