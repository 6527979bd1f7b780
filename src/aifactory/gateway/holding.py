"""Holding a request while its model has no ready replica.

A request waits here when nothing is ready (scaled to zero, or starting), and
when every ready replica failed it before answering (a node went down, engines
were killed): it is then taken by the first replica that is ready and not
suspect, a replacement or one whose health check passed again.

Streamed requests get their SSE response at once and a comment line every
couple of seconds (``: queued position=1 state=PENDING reason="waiting for
resources" eta=45s``); OpenAI clients ignore comments, so the connection stays
alive and a person watching with curl sees where the request stands.
Non-streamed requests just wait. A full queue or an expired wait is a 503
with ``Retry-After``.
"""

from __future__ import annotations

import time

from aifactory import metrics
from aifactory.errors import NoReplicaAvailable
from aifactory.gateway.router import Lease, Router
from aifactory.gateway.stream import Exchange

SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
_COMMENT_EVERY_S = 2.0
_RETRY_AFTER_S = "10"


async def hold_until_ready(
    router: Router,
    service: str,
    model: str,
    stream: bool,
    session: str,
    exchange: Exchange,
    deadline: float,
) -> Lease:
    """Wait in the service's queue for a ready replica and take it, until ``deadline``.

    Raises:
        NoReplicaAvailable: the queue is full, or the wait timed out.
    """
    held = router.hold(service)
    if held is None:
        raise NoReplicaAvailable(
            "The queue for this model is full while its replicas start.",
            fix="retry after the Retry-After delay",
            headers={"Retry-After": _RETRY_AFTER_S},
        )
    queued_at = time.monotonic()
    gauge = metrics.QUEUE_LENGTH.labels(model)
    gauge.inc()
    try:
        while True:
            # Only a replica not suspect: the ones that just failed this request are.
            ready = router.ready_count(service) > 0
            lease = router.acquire(service, set(), session) if ready else None
            if lease is not None:
                metrics.QUEUE_WAIT.labels(model).observe(time.monotonic() - queued_at)
                return lease
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NoReplicaAvailable(
                    f"No replica became ready within {router.queue_timeout_s(service):.0f}s "
                    f"({router.waiting_status(held)}).",
                    fix="retry later; `aifactory status SERVICE` shows why it is not ready",
                    headers={"Retry-After": _RETRY_AFTER_S},
                )
            if stream:
                if not exchange.started:
                    await exchange.start(200, SSE_HEADERS, sse=True)
                line = f": {router.waiting_status(held)}\n\n".encode()
                await exchange.send({"type": "http.response.body", "body": line, "more_body": True})
            await router.wait(held, min(remaining, _COMMENT_EVERY_S))
    finally:
        gauge.dec()
        router.unhold(held)
