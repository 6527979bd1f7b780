"""The control plane under test of control_scale.py: ``aifactory up`` with the instant backend.

Runs aifactory's own ``App`` under uvicorn, as ``serve`` does, except that its
planner holds the measurement backend (``_instant_backend.py``) as ``local``,
and that three routes under ``/bench/`` let the driver measure from inside
the process (they are the benchmark's, not the product's)::

    GET /bench/state            live and ready replicas, services the reconciler holds
    GET /bench/tick?n=N         N reconcile passes run now, each in ms
    GET /bench/route?model=M&n=N   resolve + acquire + release of M, µs per request

::

    python bench/_control_scale_server.py --data-dir D --database-url URL \\
        --port P --objects-port P --worker-port P --client-port P --health-port P
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _instant_backend import InstantBackend
from aifactory.config import Settings
from aifactory.control.fleet import ReplicaState
from aifactory.server import App


class BenchApp:
    """aifactory's App, plus the benchmark's own routes under ``/bench/``."""

    def __init__(self, app: App) -> None:
        self._app = app
        self._plane = app.plane

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/bench/"):
            request = Request(scope, receive)
            handler = {
                "/bench/state": self._state,
                "/bench/tick": self._tick,
                "/bench/route": self._route,
            }[scope["path"]]
            await JSONResponse(await handler(request))(scope, receive, send)
        else:
            await self._app(scope, receive, send)

    async def _state(self, _request: Request) -> dict[str, Any]:
        replicas = list(self._plane.fleet.replicas.values())
        return {
            "live": len(replicas),
            "ready": sum(1 for r in replicas if r.state is ReplicaState.READY),
            "services": len(self._plane.reconciler.specs),
        }

    async def _tick(self, request: Request) -> dict[str, Any]:
        passes = []
        for _ in range(int(request.query_params.get("n", "5"))):
            started = time.perf_counter()
            await self._plane.reconciler.tick()
            passes.append((time.perf_counter() - started) * 1000)
        return {"ms": passes, "median_ms": statistics.median(passes)}

    async def _route(self, request: Request) -> dict[str, Any]:
        fleet, model = self._plane.fleet, request.query_params["model"]
        count = int(request.query_params.get("n", "20000"))
        started = time.perf_counter()
        for _ in range(count):
            entry = fleet.resolve(model)
            assert entry is not None
            lease = fleet.acquire(entry.service, set())
            assert lease is not None
            fleet.release(lease.replica_id)
        return {"us_per_request": (time.perf_counter() - started) / count * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--objects-port", type=int, required=True)
    parser.add_argument("--worker-port", type=int, required=True)
    parser.add_argument("--client-port", type=int, required=True)
    parser.add_argument("--health-port", type=int, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    settings = Settings(
        data_dir=args.data_dir,
        database_url=args.database_url,
        port=args.port,
        objects_port=args.objects_port,
        functions_worker_port=args.worker_port,
        functions_client_port=args.client_port,
        insecure_single_user=True,  # the measurement backend runs nothing as anyone
        log_level="warning",
        drain_timeout_s=0,
    )
    app = App(settings)
    backend = InstantBackend("local", app.plane.lifecycle.register, "127.0.0.1", args.health_port)
    app.plane.reconciler.planner.provide(backend)
    config = uvicorn.Config(
        BenchApp(app),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_level="warning",
        log_config=None,
        access_log=False,
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
