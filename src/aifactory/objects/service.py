"""The object storage service: built from the settings, served on its own port.

``aifactory up`` builds one ``ObjectsService`` beside the gateway, prepares it
with the rest of the state, and starts its listener in the same event loop;
``aifactory objects serve`` runs it alone (``serve``). Either way the S3 API
listens on ``objects_port`` (default 9000), separate from the control plane's
port, because S3 clients address buckets from the root path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import uvicorn
from starlette.types import Receive

from aifactory.config import Settings
from aifactory.errors import ConfigError, Conflict
from aifactory.input_limits import HttpLimits, uvicorn_options
from aifactory.objects.admin.browser import BucketBrowser, ObjectDownload
from aifactory.objects.admin.upload_forms import UploadForms
from aifactory.objects.holdings import OtherHoldings
from aifactory.objects.posix.multipart import Multipart
from aifactory.objects.posix.ownership import Ownership, bucket_owners, tenant_lookup
from aifactory.objects.posix.sharing import BucketSharing
from aifactory.objects.posix.storage import FileStore
from aifactory.objects.posix.tally import count_files
from aifactory.objects.s3.access import BucketRegistry
from aifactory.objects.s3.app import ObjectHook, ObjectsApp
from aifactory.objects.s3.auth import Caller, StoreCredentials
from aifactory.objects.s3.public import PublicPrefixes
from aifactory.store import Store
from aifactory.tenancy import (
    IssuedKey,
    Principal,
    TenantIdentities,
    UsageLedger,
    issue_key,
    load_s3_master,
)

logger = logging.getLogger(__name__)


class ObjectsService:
    """The S3 app, its stores and its listener.

    Args:
        settings: Port, root directory, virtual-host domain and TLS files.
        store: The state store (keys and bucket owners).
        ledger: Where bytes in and out of buckets are charged to tenants.
        on_object: Told of each object read or write over S3 (the catalog's lineage).
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        ledger: UsageLedger | None = None,
        on_object: ObjectHook | None = None,
    ) -> None:
        self._on_object = on_object
        self.settings = settings
        self.store = store
        self._ledger = ledger
        self.master = b""
        self.app: ObjectsApp | None = None
        self.registry: BucketRegistry | None = None
        self.files: FileStore | None = None
        self.sharing: BucketSharing | None = None
        self.browser: BucketBrowser | None = None
        self.forms: UploadForms | None = None
        self._server: uvicorn.Server | None = None
        self._public: PublicPrefixes | None = None
        self._task: asyncio.Task[None] | None = None
        self._other: OtherHoldings | None = None

    def prepare(self) -> None:
        """Load (or create) the master secret and open the root (blocking)."""
        self.master = load_s3_master(self.settings.objects_master_key_file)
        identities = self._identities()
        tenants = tenant_lookup(self.store, identities) if identities else None
        ownership = Ownership(bucket_owners(self.store, tenants) if tenants else None)
        self.files = FileStore(str(self.settings.objects_dir), ownership)
        self.sharing = BucketSharing(self.store, self.files, tenants)
        multipart = Multipart(self.files)
        self.registry = BucketRegistry(self.store, self.files, multipart, self.sharing)
        self.registry.public = self._public
        self.registry.room.other = self._other
        credentials = StoreCredentials(self.store, self.master)
        self.app = ObjectsApp(
            self.files,
            credentials,
            self.registry,
            multipart,
            self.settings.objects_domain,
            self._charge if self._ledger is not None else None,
            self._on_object,
            self.settings.objects_anonymous_rps,
            form_origin=_origin(self.settings.control_url),
        )
        self.browser = BucketBrowser(
            self.app.services, self._charge if self._ledger is not None else None
        )
        self.forms = UploadForms(self.store, self.master, self.registry, self.settings.objects_url)

    def publish_with(self, public: PublicPrefixes) -> None:
        """Let ``public`` (the catalog) open prefixes of buckets to unsigned reads."""
        self._public = public
        if self.registry is not None:
            self.registry.public = public

    def count_with(self, other: OtherHoldings) -> None:
        """Count what ``other`` (the catalog) holds for a tenant in its bytes quota."""
        self._other = other
        if self.registry is not None:
            self.registry.room.other = other

    def _identities(self) -> TenantIdentities | None:
        """Tenants' identities when this control plane can hand files over (root), else None."""
        privilege = self.settings.privilege
        if privilege.mode != "root":
            return None
        return TenantIdentities(
            privilege,
            self.settings.workload_user,
            self.settings.tenant_user_template,
            self.settings.min_tenant_uid,
        )

    def _charge(self, caller: Caller, bucket: str, operation: str, sent: int, got: int) -> None:
        assert self._ledger is not None
        self._ledger.record(
            tenant_id=caller.tenant_id,
            key_id=caller.key_id,
            kind="objects",
            model=bucket,
            endpoint=f"s3.{operation}"[:32],
            calls=1,
            bytes_in=sent,
            bytes_out=got,
        )

    def issue_first_admin(self) -> IssuedKey | None:
        """With no admin key yet, mint one with S3 credentials and write both files (0600)."""
        if self.store.count_admin_keys() != 0:
            return None
        issued = issue_key(self.store, "admin", "admin", "first admin key", s3_master=self.master)
        write_private(self.settings.admin_key_file, issued.secret + "\n")
        self.write_credentials(issued)
        return issued

    def write_credentials(self, issued: IssuedKey) -> None:
        """Write an AWS shared-credentials file with the key's S3 pair (mode 0600)."""
        write_private(
            self.settings.objects_credentials_file,
            "[default]\n"
            f"aws_access_key_id = {issued.s3_access_key_id}\n"
            f"aws_secret_access_key = {issued.s3_secret_access_key}\n",
        )

    def uvicorn_config(self, **overrides: Any) -> uvicorn.Config:
        """The listener's uvicorn configuration (uvloop + httptools, like the gateway)."""
        assert self.app is not None, "call prepare() first"
        tls = self.settings.objects_tls_cert, self.settings.objects_tls_key
        return uvicorn.Config(
            self.app,
            host=self.settings.host,
            port=self.settings.objects_port,
            loop="uvloop",
            log_level=self.settings.log_level,
            access_log=False,
            proxy_headers=False,
            server_header=False,
            ssl_certfile=str(tls[0]) if tls[0] else None,
            ssl_keyfile=str(tls[1]) if tls[1] else None,
            timeout_graceful_shutdown=int(self.settings.drain_timeout_s) or None,
            **uvicorn_options(HttpLimits.of(self.settings)),
            **overrides,
        )

    async def start(self) -> None:
        """Start listening in the running event loop (beside ``aifactory up``'s server).

        Raises:
            ConfigError: the port is taken (like the API's and the broker's ports).
        """
        if self.settings.objects_port == 0:
            logger.info("S3 API off (objects_port = 0)")
            return
        try:
            sock = bind_socket(self.settings.host, self.settings.objects_port)
        except OSError as exc:
            raise ConfigError(
                f"the S3 API cannot listen on {self.settings.host}:{self.settings.objects_port}: "
                f"{exc}.",
                fix="set AIFACTORY_OBJECTS_PORT to a free port, or 0 to run without S3",
            ) from exc
        self._server = uvicorn.Server(self.uvicorn_config(lifespan="off"))
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        logger.info(
            "S3 API on %s serving %s",
            self.settings.objects_url,
            self.files.root if self.files else "",
        )

    async def stop(self) -> None:
        """Stop listening, let transfers finish, and stop the I/O threads."""
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.app is not None:
            await asyncio.to_thread(self.app.close)

    @property
    def listening(self) -> bool:
        """Whether the S3 listener is up."""
        return self._server is not None and self._server.started

    async def buckets(self, tenant: str | None) -> list[dict[str, Any]]:
        """The dashboard's buckets of ``tenant`` (None: all), with object counts and bytes."""
        assert self.files is not None
        return await asyncio.to_thread(self._bucket_summaries, tenant)

    def _bucket_summaries(self, tenant: str | None) -> list[dict[str, Any]]:
        assert self.files is not None
        owners = {record.name: record for record in self.store.buckets()}
        rows = []
        for name, _created in self.files.bucket_names():
            record = owners.get(name)
            if tenant is not None and (
                record is None or (record.tenant != tenant and tenant not in record.grants)
            ):
                continue
            objects, size = count_files(self.files.bucket_dir(name))
            rows.append(
                {
                    "name": name,
                    "tenant": record.tenant if record else None,
                    "objects": objects,
                    "bytes": size,
                }
            )
        return rows

    # The dashboard's object browser (``aifactory.web.ObjectBrowser``), by API key.

    async def create_bucket(self, caller: Principal, bucket: str) -> None:
        """Create ``bucket`` for the caller's tenant (``BucketBrowser.create_bucket``)."""
        await self._browsing().create_bucket(caller, bucket)

    async def list_objects(
        self, caller: Principal, bucket: str, prefix: str, delimiter: str, token: str, limit: int
    ) -> dict[str, Any]:
        """One page of a bucket's keys (``BucketBrowser.list_objects``)."""
        return await self._browsing().list_objects(caller, bucket, prefix, delimiter, token, limit)

    async def put_object(
        self, caller: Principal, bucket: str, key: str, content_type: str, receive: Receive
    ) -> dict[str, Any]:
        """Stream a body into an object (``BucketBrowser.put_object``)."""
        return await self._browsing().put_object(caller, bucket, key, content_type, receive)

    async def upload_form(
        self, caller: Principal, bucket: str, key: str, content_type: str
    ) -> dict[str, Any]:
        """A signed form to upload one file straight to S3 (``UploadForms.sign``).

        Raises:
            Conflict: the S3 API is off, so there is nowhere to post the form.
        """
        assert self.forms is not None, "call prepare() first"
        if self.settings.objects_port == 0:
            raise Conflict(
                "the S3 API is off (objects_port = 0), so browsers cannot upload to it.",
                fix="set AIFACTORY_OBJECTS_PORT, or upload with the dashboard's PUT route",
            )
        return await self.forms.sign(caller, bucket, key, content_type)

    async def get_object(self, caller: Principal, bucket: str, key: str) -> ObjectDownload:
        """An object opened for download (``BucketBrowser.get_object``)."""
        return await self._browsing().get_object(caller, bucket, key)

    async def delete_object(self, caller: Principal, bucket: str, key: str) -> None:
        """Delete an object (``BucketBrowser.delete_object``)."""
        await self._browsing().delete_object(caller, bucket, key)

    def _browsing(self) -> BucketBrowser:
        assert self.browser is not None, "call prepare() first"
        return self.browser

    def status(self) -> dict[str, Any]:
        """Counters and disk space for the dashboard (blocking: reads the disk)."""
        assert self.app is not None and self.files is not None
        usage = shutil.disk_usage(self.files.root)
        stats = self.app.stats
        return {
            "endpoint": self.settings.objects_url,
            "listening": self.listening,
            "root": self.files.root,
            "metadata": "xattr" if self.files.meta.use_xattr else "sidecar",
            "buckets": len(self.files.bucket_names()),
            "disk_total_bytes": usage.total,
            "disk_free_bytes": usage.free,
            "requests": dict(stats.requests),
            "errors": dict(stats.errors),
            "bytes_in": stats.bytes_in,
            "bytes_out": stats.bytes_out,
            "in_flight": stats.in_flight,
        }


def _origin(url: str) -> str:
    """The web origin (scheme://host:port) of a URL, as browsers send it."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket, so a taken port is an OSError here, not an exit in uvicorn."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
        sock.set_inheritable(True)
    except OSError:
        sock.close()
        raise
    return sock


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file only its owner can read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def serve(settings: Settings) -> None:
    """Run the S3 API alone until SIGINT or SIGTERM (``aifactory objects serve``)."""
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    store = Store(settings.effective_database_url)
    store.create_schema()
    service = ObjectsService(settings, store)
    service.prepare()
    if service.issue_first_admin() is not None:
        logger.info(
            "created the first admin key; its S3 credentials are in %s",
            settings.objects_credentials_file,
        )
    server = uvicorn.Server(service.uvicorn_config(lifespan="off"))
    logger.info("S3 API on %s serving %s", settings.objects_url, settings.objects_dir)
    try:
        server.run()
    finally:
        if service.app is not None:
            service.app.close()
        store.close()
    if not server.started:
        raise SystemExit(1)
