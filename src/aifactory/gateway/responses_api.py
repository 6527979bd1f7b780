"""The Responses API served over chat completions: its events, and the exchange that writes them.

``BridgedExchange`` stands where the gateway's ``Exchange`` stands for a chat
request it proxies, and rewrites what the gateway sends: a whole chat
completion into one response object, a chat stream into the Responses API's
events (``response.created``, ``response.output_text.delta``, …,
``response.completed``), an error event into an ``error`` event. Errors
(status other than 200) pass through: they are OpenAI's shape already. The
finished response is kept (``store``, the default) with its conversation,
for retrieval and ``previous_response_id``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.types import Message, Send

from aifactory.errors import NotFound
from aifactory.gateway.fold import StreamFold
from aifactory.gateway.responses import JSON_HEADERS
from aifactory.gateway.responses_bridge import (
    assistant_message,
    new_id,
    output_items,
    response_object,
    token_logprobs,
)
from aifactory.gateway.responses_inputs import input_items_page
from aifactory.gateway.responses_options import wants_logprobs
from aifactory.gateway.stream import Exchange
from aifactory.gateway.usage import Usage
from aifactory.store import ResponseQueries, StoredResponseRow

SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
_EVENT_END = b"\n\n"

# Called with the finished response object and the chat completion it came from.
Keep = Callable[[dict[str, Any], dict[str, Any]], Awaitable[None]]


class ResponseEvents:
    """A chat stream's bytes in, the Responses API's SSE events out."""

    def __init__(self, response_id: str, payload: dict[str, Any], model: str) -> None:
        self._id = response_id
        self._payload = payload
        self._model = model
        self._message_id = new_id("msg")
        self._sequence = 0
        self._pending = b""
        self._text: list[str] = []
        self._logprobs: list[dict[str, Any]] | None = [] if wants_logprobs(payload) else None
        self._calls: list[dict[str, Any]] = []  # function calls begun, in stream order
        self._fold = StreamFold(Usage())
        self.failed = False

    def opening(self) -> bytes:
        """``response.created`` and ``response.in_progress``."""
        response = response_object(self._id, self._payload, self._model, None)
        return self._event("response.created", response=response) + self._event(
            "response.in_progress", response=response
        )

    def feed(self, chunk: bytes) -> bytes:
        """The events for the next bytes of the chat stream."""
        self._fold.feed(chunk)
        *events, self._pending = (self._pending + chunk).split(_EVENT_END)
        out: list[bytes] = []
        for event in events:
            for line in event.split(b"\n"):
                data = line[5:].strip() if line.startswith(b"data:") else b""
                if not data or data == b"[DONE]":
                    continue
                document = json.loads(data)
                if isinstance(document, dict) and isinstance(document.get("error"), dict):
                    self.failed = True
                    error = document["error"]
                    out.append(self._event("error", **{k: error.get(k) for k in _ERROR_FIELDS}))
                else:
                    out.append(self._delta(document))
        return b"".join(out)

    def finish(self) -> tuple[bytes, dict[str, Any] | None, dict[str, Any] | None]:
        """The closing events, the response object and the folded chat completion.

        None for both when the stream failed (its ``error`` event was sent).
        """
        if self.failed:
            return b"", None, None
        _, data = self._fold.result()
        completion: dict[str, Any] = json.loads(data)
        document = response_object(self._id, self._payload, self._model, completion)
        choices = completion.get("choices") or [{}]
        items = output_items(choices[0].get("message") or {}, self._message_id, self._logprobs)
        document["output"] = items  # the ids the events named
        calls = [item for item in items if item["type"] == "function_call"]
        for item, streamed in zip(calls, self._calls, strict=False):
            item["id"] = streamed["id"]
        out: list[bytes] = []
        for index, item in enumerate(items):
            if item["type"] == "message":
                text = "".join(self._text)
                part = item["content"][0]
                where = {"item_id": item["id"], "output_index": index, "content_index": 0}
                done = {"logprobs": self._logprobs} if self._logprobs is not None else {}
                out.append(self._event("response.output_text.done", **where, text=text, **done))
                out.append(self._event("response.content_part.done", **where, part=part))
            else:
                if calls.index(item) >= len(self._calls):  # not begun while streaming
                    out.append(
                        self._event("response.output_item.added", output_index=index, item=item)
                    )
                out.append(
                    self._event(
                        "response.function_call_arguments.done",
                        item_id=item["id"],
                        output_index=index,
                        arguments=item["arguments"],
                    )
                )
            out.append(self._event("response.output_item.done", output_index=index, item=item))
        final = "response.completed" if document["status"] == "completed" else "response.incomplete"
        out.append(self._event(final, response=document))
        return b"".join(out), document, completion

    def _delta(self, document: Any) -> bytes:
        choices = document.get("choices") if isinstance(document, dict) else None
        delta = (choices[0].get("delta") or {}) if choices else {}
        out = self._call_deltas(delta.get("tool_calls"))
        text = delta.get("content")
        if not isinstance(text, str) or not text:
            return out
        where = {"item_id": self._message_id, "output_index": 0, "content_index": 0}
        if not self._text:
            item = {
                "type": "message",
                "id": self._message_id,
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            }
            part = {"type": "output_text", "text": "", "annotations": []}
            out += self._event("response.output_item.added", output_index=0, item=item)
            out += self._event("response.content_part.added", **where, part=part)
        self._text.append(text)
        logprobs = {}
        if self._logprobs is not None and choices:
            tokens = token_logprobs(choices[0].get("logprobs"))
            self._logprobs.extend(tokens)
            logprobs = {"logprobs": tokens}
        return out + self._event("response.output_text.delta", **where, delta=text, **logprobs)

    def _call_deltas(self, deltas: object) -> bytes:
        """A function call's item when it begins, then its arguments as they come."""
        out = b""
        for delta in deltas if isinstance(deltas, list) else ():
            if not isinstance(delta, dict):
                continue
            function = delta.get("function") or {}
            index = delta.get("index", 0)
            if not isinstance(index, int) or index > len(self._calls):
                continue
            # Text, when there is any, comes first: the calls' items follow its message.
            output_index = (1 if self._text else 0) + index
            if index == len(self._calls):
                call = {
                    "type": "function_call",
                    "id": new_id("fc"),
                    "call_id": delta.get("id") or new_id("call"),
                    "name": function.get("name") or "",
                    "arguments": "",
                    "status": "in_progress",
                }
                self._calls.append(call)
                out += self._event(
                    "response.output_item.added", output_index=output_index, item=call
                )
            fragment = function.get("arguments")
            if isinstance(fragment, str) and fragment:
                item_id = self._calls[index]["id"]
                out += self._event(
                    "response.function_call_arguments.delta",
                    item_id=item_id,
                    output_index=output_index,
                    delta=fragment,
                )
        return out

    def _event(self, kind: str, **fields: Any) -> bytes:
        document = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + json.dumps(document).encode() + b"\n\n"


_ERROR_FIELDS = ("message", "code", "param")


class BridgedExchange(Exchange):
    """An ``Exchange`` that answers a chat request as the Responses API (module docstring)."""

    __slots__ = ("_body", "_events", "_keep", "_model", "_passthrough", "_payload", "_response_id")

    def __init__(
        self, send: Send, request_id: bytes, payload: dict[str, Any], model: str, keep: Keep
    ) -> None:
        super().__init__(send, request_id)
        self._payload = payload
        self._model = model
        self._keep = keep
        self._response_id = new_id("resp")
        self._events = ResponseEvents(self._response_id, payload, model)
        self._passthrough = False
        self._body: list[bytes] = []

    async def start(
        self, status: int, headers: list[tuple[bytes, bytes]], *, sse: bool = False
    ) -> None:
        """Start the response: an error as it is, a stream with its opening events."""
        if status != 200:
            self._passthrough = True
            await super().start(status, headers, sse=sse)
        elif sse:
            await super().start(200, SSE_HEADERS, sse=True)
            await super().send(
                {"type": "http.response.body", "body": self._events.opening(), "more_body": True}
            )
        else:
            self.started = True  # the response object goes out whole, at the end

    async def send(self, message: Message) -> None:
        """Send the Responses API's translation of ``message``."""
        if self._passthrough:
            await super().send(message)
            return
        body: bytes = message.get("body", b"")
        more: bool = message.get("more_body", False)
        if not self.sse:
            self._body.append(body)
            if not more:
                await self._answer_whole(json.loads(b"".join(self._body)))
            return
        out = self._events.feed(body)
        if not more:
            closing, document, completion = self._events.finish()
            if document is not None and completion is not None:
                await self._keep(document, completion)
            out += closing
        await super().send({"type": "http.response.body", "body": out, "more_body": more})

    @property
    def send_more(self) -> Send:
        """Every chunk is translated: ``send``."""
        return self.send

    async def _answer_whole(self, completion: dict[str, Any]) -> None:
        document = response_object(self._response_id, self._payload, self._model, completion)
        await self._keep(document, completion)
        data = json.dumps(document).encode()
        headers = [*JSON_HEADERS, (b"content-length", str(len(data)).encode())]
        await super().start(200, headers)
        await super().send({"type": "http.response.body", "body": data})


class StoredResponses:
    """The store's side of the Responses API, off the event loop (``asyncio.to_thread``).

    A response is kept ``retention_s`` seconds: older ones are not found, even before the
    control plane's sweep (``control/response_retention.py``) deletes them.
    """

    def __init__(self, store: ResponseQueries, retention_s: float) -> None:
        self._store = store
        self._retention = timedelta(seconds=retention_s)

    async def keep(
        self,
        tenant_id: int,
        document: dict[str, Any],
        conversation: list[dict[str, Any]],
        completion: dict[str, Any],
        input_items: list[dict[str, Any]],
    ) -> None:
        """Keep a finished response, its conversation ending with its answer, and its input."""
        turns = [*conversation, assistant_message(completion)]
        await asyncio.to_thread(
            self._store.add_response, document["id"], tenant_id, document, turns, input_items
        )

    async def find(self, response_id: str, tenant_id: int) -> StoredResponseRow | None:
        """The stored row of ``tenant_id``'s response ``response_id``, or None."""
        kept_since = datetime.now(UTC) - self._retention
        return await asyncio.to_thread(
            self._store.stored_response, response_id, tenant_id, kept_since
        )

    async def forget(self, response_id: str, tenant_id: int) -> bool:
        """Delete ``tenant_id``'s response ``response_id``; False when there is none."""
        return await asyncio.to_thread(self._store.delete_response, response_id, tenant_id)

    async def serve(
        self, rest: str, method: str, query: bytes, tenant_id: int, exchange: Exchange
    ) -> None:
        """Answer ``GET``/``DELETE /v1/responses/{id}`` and ``GET …/{id}/input_items``.

        Raises:
            NotFound: no such response of ``tenant_id``'s (or another route under it).
            BadRequest: a malformed page of input items.
        """
        response_id, _, sub = rest.partition("/")
        if method == "GET" and sub in ("", "input_items"):
            row = await self.find(response_id, tenant_id)
            if row is not None:
                page = row.document if not sub else input_items_page(row.input_items, query)
                await exchange.json(200, page)
                return
        elif method == "DELETE" and not sub and await self.forget(response_id, tenant_id):
            await exchange.json(200, {"id": response_id, "object": "response", "deleted": True})
            return
        raise NotFound(f"Response with id '{response_id}' not found.", param="response_id")
