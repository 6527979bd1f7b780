"""The OpenAI-compatible gateway: a raw ASGI app proxying to engine replicas.

It is raw ASGI on uvicorn with aiohttp as the upstream client because that
stack measured ~10x less CPU per proxied request than httpx-based ones, and
FastAPI's streaming cut streamed throughput by ~65% (see FACTS in the README).

One request::

    key -> tenant (cached)  ->  body (size-limited)  ->  model -> service
        ->  prompt and logit_bias within the model's bounds
        ->  least-loaded ready replica  ->  POST upstream
            (the replica failed before any byte of its answer reached the
             client: it is suspect, the next one is tried, and with none left
             the request is held until one is ready)
        ->  response streamed through chunk by chunk  ->  usage to the ledger

A client that hangs up cancels its upstream request at once, streamed or not
(the engine stops generating when its connection closes), and is charged what
it was sent (``Meter``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from starlette.types import Receive, Scope, Send

from aifactory import metrics
from aifactory.errors import (
    APIError,
    BadRequest,
    ModelNotFound,
    NotFound,
    PayloadTooLarge,
    UpstreamError,
    UpstreamTimeout,
)
from aifactory.gateway.bounds import check_bounds
from aifactory.gateway.chat_shape import check_chat
from aifactory.gateway.client_watch import ClientWatches
from aifactory.gateway.counts import check_counts
from aifactory.gateway.engine_errors import error_headers, openai_error
from aifactory.gateway.fold import StreamFold
from aifactory.gateway.holding import hold_until_ready
from aifactory.gateway.in_flight import KeyInFlight
from aifactory.gateway.responses import JSON_HEADERS
from aifactory.gateway.responses_api import BridgedExchange, StoredResponses
from aifactory.gateway.responses_bridge import chat_request
from aifactory.gateway.responses_inputs import input_items
from aifactory.gateway.responses_options import fit_to_context
from aifactory.gateway.router import Lease, ModelInfo, Router
from aifactory.gateway.stream import Exchange
from aifactory.gateway.usage import Meter, SSEUsageFilter, usage_of_body
from aifactory.input_limits import parse_json_object
from aifactory.request_ids import REQUEST_ID, sane_request_id
from aifactory.store import ResponseQueries
from aifactory.tenancy import KeyAuthenticator, Limiter, Principal, UsageLedger

logger = logging.getLogger(__name__)

PROXIED = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
}
_PATHS = {endpoint: path for path, endpoint in PROXIED.items()}
STREAMABLE = {"chat", "completions"}
_MAX_ANSWERED_ERRORS = 2  # replicas answering 502/503 before that answer is relayed
_RETRY_AFTER_S = "5"
_CLIENT_GONE = 499  # the status nginx logs for it
_RETRYABLE_STATUS = {502, 503}
_CANNOT_CONNECT = (aiohttp.ClientConnectorError, TimeoutError)
_USAGE_OPTION = b'"stream_options":{"include_usage":true}'
_RESPONSES = "/v1/responses"
# The end of an answer: a client may send its next request as soon as it sees it.
_DONE_EVENT = b"data: [DONE]\n\n"
# The paths the gateway serves requests to engines on (its hot paths).
ENGINE_PATHS = (*PROXIED, _RESPONSES)
_RESPONSE_PREFIX = "/v1/responses/"


class GatewayApp:
    """ASGI app serving ``/v1/models`` and the proxied ``/v1`` endpoints."""

    def __init__(
        self,
        router: Router,
        authenticator: KeyAuthenticator,
        ledger: UsageLedger,
        limiter: Limiter,
        *,
        max_request_bytes: int,
        max_in_flight_per_key: int,
        connect_timeout_s: float,
        read_timeout_s: float,
        stored_responses: ResponseQueries,
        responses_retention_s: float = 30 * 24 * 3600.0,
    ) -> None:
        self._router = router
        self._stored = StoredResponses(stored_responses, responses_retention_s)
        self._auth = authenticator
        self._ledger = ledger
        self._limiter = limiter
        self._max_bytes = max_request_bytes
        self._in_flight = KeyInFlight(max_in_flight_per_key)
        self._watches = ClientWatches()
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout_s, sock_read=read_timeout_s
        )
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the upstream connection pool; start ticking the limiter's slices."""
        await self._limiter.start()
        self._session = aiohttp.ClientSession(
            # Engines close idle keep-alive connections after ~5 s (cpp-httplib):
            # let ours go first, so a request rarely lands on a closing one.
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=3),
            timeout=self._timeout,
            auto_decompress=False,
            # Engines may be tenants' own code: a cookie one sets must never be
            # sent to another (a jar scopes cookies by host, not by port).
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def aclose(self) -> None:
        """Close the upstream connection pool; give the limiter's slices back."""
        await self._limiter.stop()
        if self._session is not None:
            await self._session.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request; errors become OpenAI error JSON.

        The gateway sets the request id itself (``request_ids``) rather than
        sit inside ``RequestIdMiddleware``: a layer wrapping every ``send``
        cost ~4% of its CPU per request.
        """
        head = _Head(scope["headers"])
        request_id = sane_request_id(head.request_id)
        token = REQUEST_ID.set(request_id)
        exchange = Exchange(send, request_id.encode())
        try:
            path: str = scope["path"]
            method: str = scope["method"]
            authorization = head.authorization.decode("latin-1")
            principal = self._auth.passed(authorization) or await self._auth.authenticate_header(
                authorization
            )
            endpoint = PROXIED.get(path)
            if endpoint is None and not (path == _RESPONSES and method == "POST"):
                await self._serve_other(path, method, scope, principal, exchange)
                return
            if method != "POST":
                raise BadRequest(f"{path} takes POST, not {method}.")
            key_id = principal.key_id
            self._in_flight.take(key_id)
            try:
                admission = self._limiter.admit_now(principal)
                if admission is False:
                    admission = await self._limiter.admit(principal)
                meter = Meter()
                try:
                    body = await self._read_body(head, receive)
                    if endpoint is None:
                        await self._create_response(principal, head, body, receive, send, meter)
                    else:
                        await self._proxy(
                            endpoint, path, principal, head, body, receive, exchange, meter
                        )
                finally:
                    if admission is not None:
                        used = meter.charged()
                        self._limiter.settle(admission, used.prompt_tokens + used.completion_tokens)
            finally:
                self._in_flight.give_back(key_id)
        except APIError as exc:
            if not exchange.started:
                await exchange.error(exc)
            elif exchange.sse:
                await exchange.fail_stream(exc)
            else:
                logger.warning("error after the response started: %s", exc)
        finally:
            REQUEST_ID.reset(token)

    async def _serve_other(
        self, path: str, method: str, scope: Scope, principal: Principal, exchange: Exchange
    ) -> None:
        """The models, and stored responses (retrieve, delete, input items)."""
        if path.startswith(_RESPONSE_PREFIX) and method in ("GET", "DELETE"):
            rest, query = path.removeprefix(_RESPONSE_PREFIX), scope.get("query_string", b"")
            await self._stored.serve(rest, method, query, principal.tenant_id, exchange)
            return
        if path == "/v1/models" and method == "GET":
            models = self._model_list(principal)
            await exchange.json(200, {"object": "list", "data": models})
        elif path.startswith("/v1/models/") and method == "GET":
            wanted = path.removeprefix("/v1/models/")
            for model in self._model_list(principal):
                if model["id"] == wanted:
                    await exchange.json(200, model)
                    return
            raise ModelNotFound(_no_model(wanted))
        else:
            raise NotFound(f"{method} {path} is not an endpoint of this API.")

    def _model_list(self, principal: Principal) -> list[dict[str, Any]]:
        return [
            {"id": m.name, "object": "model", "created": m.created, "owned_by": "aifactory"}
            for m in self._router.models()
            if _may_use(principal, m)
        ]

    async def _read_body(self, head: _Head, receive: Receive) -> bytes:
        if head.content_length is not None and int(head.content_length) > self._max_bytes:
            raise PayloadTooLarge(self._too_large())
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_bytes:
                raise PayloadTooLarge(self._too_large())
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunk if len(chunks) == 1 else b"".join(chunks)

    def _too_large(self) -> str:
        return f"Request body exceeds the limit of {self._max_bytes} bytes."

    async def _proxy(
        self,
        endpoint: str,
        path: str,
        principal: Principal,
        head: _Head,
        body: bytes,
        receive: Receive,
        exchange: Exchange,
        meter: Meter,
    ) -> None:
        """Proxy one request unless the client hangs up first, metering it in ``meter``.

        A client gone cancels the forwarding wherever it stands (held, waiting
        for the engine's answer, streaming it), which closes the upstream
        connection: the engine stops generating and the request its slot.
        The forwarding runs in the request's own task, so that its places in
        flight are given back before the client can send another request.
        """
        payload = parse_json_object(body)
        model = payload.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("You must provide a model parameter.", param="model")
        entry = self._router.resolve(model)
        if entry is None or not _may_use(principal, entry):
            raise ModelNotFound(_no_model(model), param="model")
        if entry.endpoints is not None and endpoint not in entry.endpoints:
            raise BadRequest(
                f"The model {model!r} does not serve {path}: it serves "
                f"{', '.join(sorted(_PATHS[e] for e in entry.endpoints))}.",
                param="model",
            )
        if endpoint == "chat":
            check_chat(payload, entry.text_only)
        check_counts(endpoint, payload)
        check_bounds(endpoint, payload, entry.context_tokens)
        model = entry.canonical
        session = _session_key(head, payload)
        stream = endpoint in STREAMABLE and payload.get("stream") is True
        # The engine stops for a client gone only while streaming: stream, then fold.
        fold = endpoint in STREAMABLE and not stream and entry.stops_only_streams
        wants_usage = False
        if stream:
            options = payload.get("stream_options")
            wants_usage = isinstance(options, dict) and options.get("include_usage") is True
        if (stream and not wants_usage) or fold:
            body = _streamed_with_usage(body, payload)

        series = metrics.request_series(model, endpoint)
        call = _Call(entry.service, model, path, body, stream, wants_usage, session, fold, series)
        status = 500
        series.in_flight.inc()
        request = asyncio.current_task()
        assert request is not None
        self._watches.add(exchange, receive, request)
        try:
            status = await self._forward(call, exchange, meter)
        except asyncio.CancelledError:
            if not self._watches.saw_client_leave(exchange):
                raise
            request.uncancel()
            logger.info("client disconnected; the upstream request was cancelled")
            meter.cut_short = "abandoned"
            status = _CLIENT_GONE
        except APIError as exc:
            status = exc.status_code
            raise
        finally:
            self._watches.remove(exchange)
            series.in_flight.dec()
            series.answered(status).inc()
            elapsed_s = time.perf_counter() - call.started
            series.latency.observe(elapsed_s)
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("%s %s -> %d in %.3fs", path, model, status, elapsed_s)
            usage = meter.charged()
            if usage.prompt_tokens or usage.completion_tokens:
                series.prompt_tokens.inc(usage.prompt_tokens)
                series.completion_tokens.inc(usage.completion_tokens)
                self._ledger.record_tokens(
                    principal.tenant_id,
                    principal.key_id,
                    model,
                    endpoint,
                    usage.prompt_tokens,
                    usage.completion_tokens,
                    meter.cut_short,
                )

    async def _create_response(
        self,
        principal: Principal,
        head: _Head,
        body: bytes,
        receive: Receive,
        send: Send,
        meter: Meter,
    ) -> None:
        """Answer ``POST /v1/responses`` with a chat completion (``responses_api``)."""
        payload = parse_json_object(body)
        history: list[dict[str, Any]] = []
        previous = payload.get("previous_response_id")
        if previous is not None:
            row = await self._stored.find(str(previous), principal.tenant_id)
            if row is None:
                raise NotFound(
                    f"Previous response with id '{previous}' not found.",
                    param="previous_response_id",
                )
            history = row.conversation
        chat, conversation = chat_request(payload, history)
        if payload.get("truncation") == "auto":
            entry = self._router.resolve(str(payload.get("model")))
            fit_to_context(chat, entry.context_tokens if entry else None)
        keep_it = payload.get("store", True) is not False

        async def keep(document: dict[str, Any], completion: dict[str, Any]) -> None:
            if keep_it:
                inputs = input_items(payload)
                tenant = principal.tenant_id
                await self._stored.keep(tenant, document, conversation, completion, inputs)

        model = str(payload.get("model") or "")
        exchange = BridgedExchange(send, REQUEST_ID.get().encode(), payload, model, keep)
        chat_path = _PATHS["chat"]
        try:
            await self._proxy(
                "chat",
                chat_path,
                principal,
                head,
                json.dumps(chat).encode(),
                receive,
                exchange,
                meter,
            )
        except APIError as exc:
            if not exchange.sse:
                raise  # nothing went out yet: the gateway answers the error
            await exchange.fail_stream(exc)

    async def _forward(self, call: _Call, exchange: Exchange, meter: Meter) -> int:
        """Send ``call`` to a replica and relay its answer; returns the status."""
        assert self._session is not None, "GatewayApp.start() was not called"
        service, path, body = call.service, call.path, call.body
        tried: set[str] = set()
        answered_error = ""
        answered_errors = 0
        stale_retried = False
        deadline: float | None = None
        while True:
            lease = self._router.acquire(service, tried, call.session)
            if lease is None:
                if answered_error:
                    raise UpstreamError(
                        f"Every replica of the model failed ({answered_error}).",
                        fix="retry shortly; the control plane is replacing failed replicas",
                        headers={"Retry-After": _RETRY_AFTER_S},
                    )
                # Nothing ready, or every ready replica failed before answering:
                # wait in line for one, as at scale-from-zero.
                if deadline is None:
                    deadline = time.monotonic() + self._router.queue_timeout_s(service)
                lease = await hold_until_ready(
                    self._router, service, call.model, call.stream, call.session, exchange, deadline
                )
            meter.request_bytes = len(body)
            try:
                response = await self._session.post(
                    lease.base_url + path,
                    data=body,
                    # The engine's own logs can then be matched to ours.
                    headers={"Content-Type": "application/json", "X-Request-Id": REQUEST_ID.get()},
                )
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                meter.request_bytes = 0
                error = f"replica {lease.replica_id}: {type(exc).__name__} {exc}"
                logger.warning("upstream request failed before any answer: %s", error)
                if not isinstance(exc, _CANNOT_CONNECT) and not stale_retried:
                    # A pooled keep-alive connection the engine had just closed:
                    # the replica is fine, a fresh connection to it will do.
                    stale_retried = True
                    self._router.release(lease.replica_id)
                    continue
                self._router.release(lease.replica_id, failed=True)
                tried.add(lease.replica_id)
                continue
            tried.add(lease.replica_id)
            if response.status in _RETRYABLE_STATUS and answered_errors < _MAX_ANSWERED_ERRORS:
                answered_errors += 1
                answered_error = f"replica {lease.replica_id} answered {response.status}"
                response.release()
                self._router.release(lease.replica_id, failed=True)
                continue
            relayed = failed = False
            call.replica_id = lease.replica_id
            try:
                status = await self._relay(response, call, exchange, meter)
                relayed = True
                return status
            except _NoAnswer as exc:
                failed = True
                meter.request_bytes = meter.events = 0
                logger.warning("replica %s broke off before answering: %s", lease.replica_id, exc)
            except _Interrupted:
                failed = True
                raise
            finally:
                if relayed:
                    response.release()
                else:
                    response.close()  # the engine sees the connection go and stops
                if call.replica_id:  # not given back at the answer's end already
                    self._router.release(lease.replica_id, failed=failed)

    async def _relay(
        self, response: aiohttp.ClientResponse, call: _Call, exchange: Exchange, meter: Meter
    ) -> int:
        """Relay the replica's answer to the client; returns its status.

        A stream's lease is given back once its ``[DONE]`` is relayed: the
        client may send its next request then, while the engine has yet to
        close the stream, and the two would count as two requests in flight
        (the autoscaler would see one more client than there is).

        Raises:
            _NoAnswer: the stream broke before its first byte: another replica may serve it.
            _Interrupted: the stream broke in the middle (the client gets an error event).
        """
        content_type = response.headers.get("Content-Type", "")
        is_sse = content_type.startswith("text/event-stream")
        headers = [(b"content-type", content_type.encode("latin-1"))] if content_type else []
        if (cache_control := response.headers.get("Cache-Control")) is not None:
            headers.append((b"cache-control", cache_control.encode("latin-1")))
        if exchange.started and not (is_sse and response.status == 200):
            # The SSE response began while the request was held: the upstream
            # error can only be told as an error event.
            await exchange.fail_stream_with(openai_error(response.status, await response.read()))
            return response.status
        if call.fold and is_sse and response.status == 200:
            return await self._fold(response, exchange, meter)
        if not (call.stream and is_sse):
            try:
                data = await response.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise UpstreamTimeout(f"The replica stopped answering: {exc}.") from exc
            if response.status >= 400:
                data = openai_error(response.status, data)
                headers = error_headers(data)
            else:
                headers.append((b"content-length", str(len(data)).encode()))
            await exchange.start(response.status, headers)
            await exchange.send({"type": "http.response.body", "body": data})
            if response.status == 200:
                meter.usage = usage_of_body(data)
            return response.status
        sse = SSEUsageFilter(forward_usage_chunk=call.wants_usage, usage=meter.usage)
        chunks = response.content.iter_any()
        try:
            # The client sees nothing before the first chunk: until then, a
            # replica that dies (queued in the engine, or reading the prompt)
            # is replaced as if it had refused the connection.
            chunk = await anext(chunks, b"")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _NoAnswer(f"{type(exc).__name__} {exc}") from exc
        if not exchange.started:
            await exchange.start(response.status, headers, sse=True)
        first_token = True
        send_more = exchange.send_more
        next_chunk = chunks.__anext__  # no default-value wrapper per chunk, as anext's
        try:
            while chunk:
                data = sse.feed(chunk)
                meter.events = sse.events
                if data:
                    if first_token:
                        first_token = False
                        ttft = time.perf_counter() - call.started
                        call.series.time_to_first_token.observe(ttft)
                    await send_more({"type": "http.response.body", "body": data, "more_body": True})
                    if call.replica_id and data.endswith(_DONE_EVENT):
                        self._router.release(call.replica_id)
                        call.replica_id = ""
                try:
                    chunk = await next_chunk()
                except StopAsyncIteration:
                    break
        except (aiohttp.ClientError, TimeoutError) as exc:
            if call.replica_id:  # else the whole answer went out: only the close is missing
                logger.warning("upstream stream broke off: %s", exc)
                meter.cut_short = "interrupted"
                raise _Interrupted(
                    f"The replica stopped in the middle of the answer ({type(exc).__name__}).",
                    fix="retry; the control plane is replacing the failed replica",
                ) from exc
        await exchange.send({"type": "http.response.body", "body": sse.flush()})
        return response.status

    async def _fold(
        self, response: aiohttp.ClientResponse, exchange: Exchange, meter: Meter
    ) -> int:
        """Relay a streamed answer whole, once it is complete; returns its status.

        Raises:
            _NoAnswer: the stream broke: the client got nothing yet, another replica may serve it.
        """
        fold = StreamFold(meter.usage)
        try:
            async for chunk in response.content.iter_any():
                fold.feed(chunk)
                meter.events = fold.tokens
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _NoAnswer(f"{type(exc).__name__} {exc}") from exc
        status, data = fold.result()
        if status >= 400:
            data = openai_error(status, data)
        headers = [*JSON_HEADERS, (b"content-length", str(len(data)).encode())]
        await exchange.start(status, headers)
        await exchange.send({"type": "http.response.body", "body": data})
        return status


class _NoAnswer(Exception):
    """The replica failed before any byte of its answer reached the client."""


class _Interrupted(UpstreamError):
    """The replica failed in the middle of a streamed answer."""


@dataclass(slots=True)
class _Call:
    """What the gateway forwards for one request."""

    service: str
    model: str
    path: str
    body: bytes
    stream: bool
    wants_usage: bool
    session: str
    fold: bool  # streamed from the engine, answered whole (``StreamFold``)
    series: metrics.RequestSeries
    started: float = field(default_factory=time.perf_counter)
    replica_id: str = ""  # the replica whose lease the answer holds, until given back


class _Head:
    """The request headers the gateway reads (the first of each)."""

    __slots__ = ("authorization", "content_length", "request_id", "session_id")

    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        by_name = dict(reversed(headers))  # in C; the first of a name wins
        self.authorization: bytes = by_name.get(b"authorization", b"")
        self.content_length = by_name.get(b"content-length")
        self.request_id = by_name.get(b"x-request-id")
        self.session_id = by_name.get(b"x-session-id")


def _session_key(head: _Head, payload: dict[str, Any]) -> str:
    """The prompt-cache affinity key: ``X-Session-Id``, else the ``user`` field."""
    if head.session_id is not None:
        return head.session_id.decode("latin-1")[:256]
    user = payload.get("user")
    return str(user)[:256] if isinstance(user, str) else ""


def _streamed_with_usage(body: bytes, payload: dict[str, Any]) -> bytes:
    """``body`` asking for a stream that ends with its usage (``payload`` is ``body`` parsed).

    The keys are spliced into the bytes when the body has neither: serialising
    the whole request again cost ~3% of the gateway's CPU per streamed request.
    """
    if "stream_options" not in payload and payload.get("stream", True) is True:
        stream = b"" if "stream" in payload else b'"stream":true,'
        end = body.rindex(b"}")  # a JSON object with members (a model, at least)
        return body[:end] + b"," + stream + _USAGE_OPTION + body[end:]
    payload["stream"] = True
    payload["stream_options"] = {"include_usage": True}
    return json.dumps(payload).encode()


def _may_use(principal: Principal, model: ModelInfo) -> bool:
    """Another tenant's private model, or one outside the key's scope, does not exist for it."""
    if principal.services is not None and model.service not in principal.services:
        return False
    return model.private_to is None or principal.is_admin or model.private_to == principal.tenant_id


def _no_model(model: str) -> str:
    return f"The model `{model}` does not exist or you do not have access to it."


__all__ = ["ENGINE_PATHS", "GatewayApp", "Lease"]
