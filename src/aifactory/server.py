"""Assembles the process: store, tenancy, control plane, gateway, admin API.

The HTTP surface is a list of mounts::

    /v1/services/, /v1/functions,
    /v1/files, /v1/batches       -> admin    the API's routes clients reach under /v1
    /v1/                         -> gateway  the raw ASGI OpenAI proxy (the hot path)
    everything else              -> admin    admin API, registration, /healthz,
                                             /metrics, the dashboard (page and data)

Every response carries an ``x-request-id``: the admin app gets it from
``RequestIdMiddleware``, the gateway sets its own (one layer less on the hot
path).

The admin app is Starlette behind ``BodyLimit`` (the gateway limits its own
bodies on the hot path); its lifespan starts and stops every background
task in one order: store, keys, ledger, gateway pool, functions broker,
control plane; and the reverse.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import socket
from collections.abc import AsyncIterator
from functools import partial
from urllib.parse import urlsplit

import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aifactory import metrics
from aifactory.api import (
    Access,
    AdminAPI,
    BatchesAPI,
    CatalogAPI,
    FunctionsAPI,
    JobsAPI,
    TenantsAPI,
)
from aifactory.asgi import Mount, Mounts
from aifactory.batches import (
    BatchFiles,
    BatchService,
    BatchSupervisor,
    KubernetesShards,
    LocalShards,
    ShardRunner,
    SlurmShards,
    WarmShards,
)
from aifactory.catalog import Catalog, CatalogUses, Lineage, S3Lineage
from aifactory.compiled import check_builds
from aifactory.config import Settings
from aifactory.control import ControlPlane, FleetFollower, instance_id
from aifactory.data_dir import lock_down
from aifactory.errors import APIError, ConfigError, NotFound
from aifactory.functions import FunctionsHub, Invoker, code_refusal
from aifactory.gateway import ENGINE_PATHS, GatewayApp, error_body
from aifactory.input_limits import BodyLimit, BodyRule, HttpLimits, uvicorn_options
from aifactory.jobs import JobsManager
from aifactory.logs import configure_logging
from aifactory.objects import BucketsAPI, ObjectsService
from aifactory.request_ids import RequestIdMiddleware
from aifactory.specs import SpecPolicy
from aifactory.store import Store
from aifactory.tenancy import Action, KeyAuthenticator, Limiter, Quotas, UsageLedger
from aifactory.web import DashboardData, MetricsSampler, page_routes

logger = logging.getLogger(__name__)

# The API's routes that clients reach under /v1, beside the gateway's.
_API_UNDER_V1 = ("/v1/services/", "/v1/functions", "/v1/files", "/v1/batches")


class App(Mounts):
    """The whole HTTP surface of ``aifactory up``: its mounts (see above)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = Store(settings.effective_database_url)
        self.authenticator = KeyAuthenticator(self.store)
        self.ledger = UsageLedger(self.store)
        self.plane = ControlPlane(settings, self.store, self.ledger)
        self.functions = FunctionsHub(
            settings,
            self.authenticator,
            self.plane.reconciler.wake,
            lambda pool, caller: code_refusal(self.store, pool, caller),
            self.ledger,
        )
        self.plane.serve_function_pools(self.functions)
        self.invoker = Invoker(self.store, self.functions, self.ledger)
        # A gateway-only process routes by the store instead of reconciling.
        self.follower = (
            FleetFollower(self.store, self.plane.fleet) if settings.role == "gateway" else None
        )
        self.gateway = GatewayApp(
            self.plane.fleet,
            self.authenticator,
            self.ledger,
            Limiter(self.store),
            max_request_bytes=settings.max_request_bytes,
            max_in_flight_per_key=settings.max_in_flight_per_key,
            connect_timeout_s=settings.upstream_connect_timeout_s,
            read_timeout_s=settings.upstream_read_timeout_s,
            stored_responses=self.store,
            responses_retention_s=settings.responses_retention_s,
        )
        self.jobs = JobsManager(
            settings, self.store, instance_id(settings.instance_file), ledger=self.ledger
        )
        self.s3_lineage = S3Lineage(self.store)
        self.objects = ObjectsService(settings, self.store, self.ledger, self.s3_lineage.seen)
        self.batch_files = BatchFiles(
            self.store, self.objects, settings.batch_max_file_bytes, settings.batch_max_lines
        )
        self._shard_runners: dict[str, ShardRunner] = {}
        self.batch_supervisor = BatchSupervisor(
            settings,
            self.store,
            self.batch_files,
            self.plane.catalog,
            self.jobs.identities,
            self._shard_runner,
            self.ledger,
        )
        self.batches = BatchService(
            settings, self.store, self.batch_files, self.plane.catalog, self.batch_supervisor.wake
        )
        self.sampler = MetricsSampler()
        access = Access(self.authenticator)
        quotas = Quotas(self.store)
        policy = SpecPolicy.of(settings)
        catalog = Catalog(self.store, self.objects, self.s3_lineage.flush)
        self.objects.publish_with(catalog)  # public entries read unsigned over S3 too
        self.objects.count_with(catalog)  # kept versions count in their tenant's bytes quota
        lineage = Lineage(self.store, catalog)
        uses = CatalogUses(
            catalog,
            self.store,
            lineage,
            self.jobs.identities if settings.privilege.mode == "root" else None,
        )
        routes = [
            Route("/healthz", self._healthz, methods=["GET"]),
            *AdminAPI(self.plane, access, quotas, policy, uses).routes(),
            *JobsAPI(self.jobs, access, quotas, policy, uses).routes(),
            *TenantsAPI(self.store, access, self.jobs.identities).routes(),
            *FunctionsAPI(self.invoker, self.functions, self.plane, access, uses).routes(),
            *BucketsAPI(self.objects, partial(access.allowed, action=Action.SITE)).routes(),
            *BatchesAPI(
                self.batch_files, self.batches, partial(access.allowed, action=Action.INFER), uses
            ).routes(),
            *CatalogAPI(catalog, access, lineage).routes(),
            *DashboardData(self.plane, self.sampler, access, objects=self.objects).routes(),
            *page_routes(_browser_origins(settings)),
        ]
        self.admin = Starlette(
            routes=routes,
            lifespan=self._lifespan,
            exception_handlers={
                APIError: _api_error,
                404: _not_found,
                ClientDisconnect: _client_gone,
            },
        )
        admin = RequestIdMiddleware(BodyLimit(self.admin, _admin_body_rules(settings)))
        mounts = [
            *(Mount(prefix, admin) for prefix in _API_UNDER_V1),
            Mount("/v1/", self.gateway),
        ]
        super().__init__(mounts, default=admin, exact=dict.fromkeys(ENGINE_PATHS, self.gateway))

    @contextlib.asynccontextmanager
    async def _lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        await asyncio.to_thread(self._prepare)
        self.ledger.start()
        await self.gateway.start()
        if self.follower is not None:
            await self.follower.start()
        else:
            await self.functions.start()
            await self.plane.start()
            await self.jobs.start()
            await self.batch_supervisor.start()
            metrics.watch_function_pools(lambda: self.functions.stats().pools)
        self.sampler.start()
        self.s3_lineage.start()
        await self.objects.start()
        logger.info("aifactory (%s) listening on %s", self.settings.role, self.settings.control_url)
        # Everything loaded so far lives for the whole process: keep the
        # collector from rescanning it (a first full collection stalled ~70 ms).
        gc.freeze()
        try:
            yield
        finally:
            await self.objects.stop()
            await self.s3_lineage.stop()
            await self.sampler.stop()
            metrics.watch_function_pools(None)
            if self.follower is not None:
                await self.follower.stop()
            else:
                await self.batch_supervisor.stop()
                await self.jobs.stop()
                await self.plane.stop()
                await self.invoker.aclose()
                await self.functions.stop()
            await self.gateway.aclose()
            await self.ledger.stop()
            self.store.close()

    def _shard_runner(self, backend: str) -> ShardRunner:
        """Where a batch's shards run on ``backend`` (built on first use)."""
        if backend not in self._shard_runners:
            logs = self.settings.logs_dir / "batches"
            self._shard_runners[backend] = (
                LocalShards(self.plane.reconciler.backend("local"), logs)
                if backend == "local"
                else WarmShards(self.plane.fleet)
                if backend == "warm"
                else KubernetesShards(
                    self.jobs.runner(backend),
                    logs,
                    self.settings.kubernetes_lent_priority_class,
                )
                if backend == "kubernetes"
                else SlurmShards(
                    self.jobs.runner(backend),
                    self.settings.privilege,
                    self.settings.slurm_lend_partition,
                    self.settings.slurm_lend_qos,
                )
            )
        return self._shard_runners[backend]

    def _prepare(self) -> None:
        lock_down(self.settings)
        self.store.create_schema()
        self.objects.prepare()
        if self.objects.issue_first_admin() is not None:
            logger.info(
                "created the first admin key in %s (S3 credentials in %s)",
                self.settings.admin_key_file,
                self.settings.objects_credentials_file,
            )

    async def _healthz(self, _request: Request) -> Response:
        # 200 while degraded too: this process serves what it knows; the detail says what not.
        if self.follower is not None:
            return JSONResponse({"status": "ok"})
        return JSONResponse(self.plane.health())


def _browser_origins(settings: Settings) -> tuple[str, ...]:
    """Origins besides its own the dashboard's script reaches: S3, where uploads go."""
    if settings.objects_port == 0:
        return ()
    parts = urlsplit(settings.objects_url)
    return (f"{parts.scheme}://{parts.netloc}",)


def _admin_body_rules(settings: Settings) -> list[BodyRule]:
    return [
        BodyRule(
            "/internal/",
            settings.max_internal_request_bytes,
            "internal routes",
            "AIFACTORY_MAX_INTERNAL_REQUEST_BYTES",
        ),
        # Batch input files: the Files API's own size limit (and room for the multipart frame).
        BodyRule(
            "/v1/files",
            settings.batch_max_file_bytes + 1024 * 1024,
            "file uploads",
            "AIFACTORY_BATCH_MAX_FILE_BYTES",
            methods=frozenset({"POST"}),
        ),
        # Object uploads from the dashboard: the objects package's own size limit.
        BodyRule("/api/dashboard/buckets/", None, methods=frozenset({"PUT"})),
        BodyRule("/v1/", settings.max_request_bytes, "/v1 routes", "AIFACTORY_MAX_REQUEST_BYTES"),
        BodyRule(
            "/",
            settings.max_admin_request_bytes,
            "admin routes",
            "AIFACTORY_MAX_ADMIN_REQUEST_BYTES",
        ),
    ]


async def _api_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return JSONResponse(error_body(exc), status_code=exc.status_code, headers=exc.headers)


async def _client_gone(_request: Request, _exc: Exception) -> Response:
    # Nobody reads this answer: the handler only keeps a client that left
    # mid-body (or was cut off by the body timeout) out of the error log.
    return Response(status_code=400)


async def _not_found(request: Request, _exc: Exception) -> Response:
    exc = NotFound(f"{request.method} {request.url.path} is not an endpoint of this API.")
    return JSONResponse(error_body(exc), status_code=404)


def serve(settings: Settings) -> None:
    """Run the control plane in this process until SIGINT or SIGTERM.

    Raises:
        ConfigError: a port it must listen on is taken (said before anything starts),
            or a compiled module is older than its source.
    """
    configure_logging(settings.log_level, settings.log_format)
    check_builds()
    _check_ports_free(settings)
    if settings.plaintext_warning:
        logger.warning("%s", settings.plaintext_warning)
    config = uvicorn.Config(
        App(settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        lifespan="on",
        log_level=settings.log_level,
        log_config=None,  # uvicorn's records go through our handler, with request ids
        access_log=False,
        proxy_headers=False,
        timeout_graceful_shutdown=int(settings.drain_timeout_s) or None,
        ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
        ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
        **uvicorn_options(HttpLimits.of(settings)),
    )
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        raise SystemExit(1)


def _check_ports_free(settings: Settings) -> None:
    ports = [("AIFACTORY_PORT", settings.port)]
    if settings.role == "all":
        ports += [
            ("AIFACTORY_OBJECTS_PORT", settings.objects_port),
            ("AIFACTORY_FUNCTIONS_WORKER_PORT", settings.functions_worker_port),
            ("AIFACTORY_FUNCTIONS_CLIENT_PORT", settings.functions_client_port),
        ]
    for name, port in ports:
        if port == 0:
            continue
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((settings.host, port))
            except OSError as exc:
                raise ConfigError(
                    f"port {port} on {settings.host} is taken ({exc.strerror}).",
                    fix=f"stop what uses it, or set {name} to a free port"
                    + (" (0 turns S3 off)" if name == "AIFACTORY_OBJECTS_PORT" else ""),
                ) from exc
