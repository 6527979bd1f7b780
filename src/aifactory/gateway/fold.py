"""Folding a streamed answer into the one document a non-streamed request expects.

llama.cpp stops generating for a client that hung up only while it streams
to it: a non-streamed request whose client left went on to its last token.
So the gateway asks such engines for a stream and folds it here: chunks of
``chat.completion.chunk`` become a ``chat.completion`` (deltas joined into
one message, tool calls by their index), chunks of ``text_completion`` one
text per choice; logprobs are joined, and the last chunk's usage and
timings kept.
"""

from __future__ import annotations

import json
from typing import Any

from aifactory.errors import UpstreamError
from aifactory.gateway.usage import Usage

_EVENT_END = b"\n\n"
_OBJECTS = {"chat.completion.chunk": "chat.completion"}


class StreamFold:
    """Takes the bytes of an SSE answer as they come; ``result`` is the whole answer."""

    def __init__(self, usage: Usage) -> None:
        self.usage = usage
        self.tokens = 0  # chunks that carried generated text (a token each)
        self._pending = b""
        self._document: dict[str, Any] = {}
        self._choices: dict[int, dict[str, Any]] = {}
        self._error: dict[str, Any] | None = None

    def feed(self, chunk: bytes) -> None:
        """Take the next bytes of the stream."""
        *events, self._pending = (self._pending + chunk).split(_EVENT_END)
        for event in events:
            for line in event.split(b"\n"):
                data = line[5:].strip() if line.startswith(b"data:") else b""
                if data and data != b"[DONE]":
                    try:
                        document = json.loads(data)
                    except ValueError as exc:
                        raise UpstreamError(
                            f"The replica streamed an event that is not JSON: {exc}."
                        ) from exc
                    self._take(document)

    def result(self) -> tuple[int, bytes]:
        """The status and body of the whole answer (an error the engine streamed, if any)."""
        if self._error is not None:
            code = self._error.get("error", {}).get("code")
            status = code if isinstance(code, int) and 400 <= code < 600 else 500
            return status, json.dumps(self._error).encode()
        document = dict(self._document)
        document["object"] = _OBJECTS.get(document.get("object", ""), document.get("object"))
        document["choices"] = [self._choices[index] for index in sorted(self._choices)]
        return 200, json.dumps(document).encode()

    def _take(self, document: Any) -> None:
        if not isinstance(document, dict):
            return
        if "error" in document:
            self._error = document
            return
        self.usage.absorb(document)
        for key, value in document.items():
            if key != "choices" and (value is not None or key not in self._document):
                self._document[key] = value
        for choice in document.get("choices") or ():
            self._merge(choice)

    def _merge(self, choice: dict[str, Any]) -> None:
        index = choice.get("index", 0)
        into = self._choices.get(index)
        if into is None:
            into = {"index": index, "finish_reason": None}
            if "delta" in choice:
                into["message"] = {"role": "assistant", "content": None}
            self._choices[index] = into
        delta = choice.get("delta")
        text = choice.get("text")
        if isinstance(delta, dict):
            self.tokens += _joined_into(into["message"], delta)
        elif isinstance(text, str):
            into["text"] = into.get("text", "") + text
            self.tokens += bool(text)
        logprobs = choice.get("logprobs")
        if isinstance(logprobs, dict):
            joined = into.setdefault("logprobs", {})
            for key, value in logprobs.items():
                if isinstance(value, list):
                    joined.setdefault(key, []).extend(value)
                else:
                    joined[key] = value
        if choice.get("finish_reason") is not None:
            into["finish_reason"] = choice["finish_reason"]


def _joined_into(message: dict[str, Any], delta: dict[str, Any]) -> bool:
    """Add a delta to the message; True when it carried generated text."""
    generated = False
    for key, value in delta.items():
        if key == "tool_calls" and isinstance(value, list):
            calls = message.setdefault("tool_calls", [])
            for call in value:
                _join_call(calls, call)
            generated = True
        elif isinstance(value, str) and key != "role":
            message[key] = (message.get(key) or "") + value
            generated = generated or bool(value)
        elif value is not None or key not in message:
            message[key] = value
    return generated


def _join_call(calls: list[dict[str, Any]], part: dict[str, Any]) -> None:
    """Add a tool call's streamed part to the call of the same index."""
    index = part.get("index", len(calls))
    call = next((c for c in calls if c.get("index") == index), None)
    if call is None:
        calls.append({**part, "function": dict(part.get("function") or {})})
        return
    for key, value in part.items():
        if key == "function" and isinstance(value, dict):
            function = call.setdefault("function", {})
            for name, piece in value.items():
                if isinstance(piece, str):
                    function[name] = function.get(name, "") + piece
        elif value is not None:
            call[key] = value
