"""Reading token usage out of engine responses, streamed or whole."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass

_USAGE = b'"usage"'
_USAGE_NULL = b'"usage":null'
_EVENT_END = b"\n\n"
_MAX_PENDING = 1 << 20


@dataclass
class Usage:
    """Prompt and completion tokens of one request."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    def absorb(self, document: object) -> bool:
        """Take the ``usage`` object of a response document; True when one was there."""
        if not isinstance(document, dict):
            return False
        usage = document.get("usage")
        if not isinstance(usage, dict):
            return False
        self.prompt_tokens = int(usage.get("prompt_tokens") or 0)
        self.completion_tokens = int(usage.get("completion_tokens") or 0)
        return True


def usage_of_body(body: bytes) -> Usage:
    """The usage of a whole (non-streamed) JSON response."""
    usage = Usage()
    if _USAGE in body:
        with contextlib.suppress(ValueError):
            usage.absorb(json.loads(body))
    return usage


class SSEUsageFilter:
    """Passes an SSE stream through event by event, picking out ``usage``.

    The gateway always asks the engine for usage in streams; when the client
    did not ask for it, the usage-only chunk (empty ``choices``) is dropped so
    the client sees exactly the stream it asked for.
    """

    def __init__(self, forward_usage_chunk: bool) -> None:
        self.usage = Usage()
        self._forward_usage_chunk = forward_usage_chunk
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        """Return the bytes of the complete events in ``chunk`` (plus earlier leftovers)."""
        data = self._pending + chunk
        end = data.rfind(_EVENT_END)
        if end < 0:
            if len(data) > _MAX_PENDING:
                self._pending = b""
                return data
            self._pending = data
            return b""
        complete, self._pending = data[: end + 2], data[end + 2 :]
        if _USAGE not in complete:
            return complete
        return b"".join(self._filter(event) for event in complete.split(_EVENT_END) if event)

    def flush(self) -> bytes:
        """Whatever is left when the stream ends."""
        rest, self._pending = self._pending, b""
        return rest

    def _filter(self, event: bytes) -> bytes:
        kept = event + _EVENT_END
        if _USAGE not in event or _USAGE_NULL in event.replace(b" ", b""):
            return kept
        for line in event.split(b"\n"):
            if not line.startswith(b"data:"):
                continue
            try:
                document = json.loads(line[5:])
            except ValueError:
                return kept
            absorbed = self.usage.absorb(document)
            if absorbed and not self._forward_usage_chunk and not document.get("choices"):
                return b""
        return kept
