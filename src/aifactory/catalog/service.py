"""The catalog: registers entries from buckets, and finds them for whoever may see them.

Who sees an entry: its own tenant and the site's admins always; the tenants
named in ``shared_with`` when it is ``shared``; everyone, without a key,
when it is ``public``. Anyone else is told it does not exist (404).
Registering reads the bucket as the caller's key would over S3; sharing or
publishing an entry needs the bucket to be the caller's tenant's own.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from aifactory.catalog.dcat import CatalogView
from aifactory.catalog.description import EntryRequest, guess_format, read_description
from aifactory.catalog.files import (
    DESCRIPTION_FILE,
    ContentStore,
    no_links_on_the_way,
    scan_prefix,
    sha256_of,
)
from aifactory.catalog.partitions import Partition, format_of, shares, split
from aifactory.catalog.pins import ModelPins
from aifactory.errors import APIError, BadRequest, Forbidden, NotFound
from aifactory.objects import RESERVED_PREFIX, ObjectsService, caller_of
from aifactory.store import CatalogEntryRecord, Store
from aifactory.tenancy import Principal

__all__ = ["Catalog", "Gone", "SearchQuery"]

_MAX_DESCRIPTION_BYTES = 256 * 1024
_PUBLIC_TTL_S = 5.0
_CACHED_SPLITS = 256


class Gone(APIError):
    """Raised when a version's file changed and its old bytes were not kept (410)."""

    status_code = 410
    error_type = "invalid_request_error"
    code = "gone"


@dataclass(frozen=True)
class SearchQuery:
    """Words and facets to look for; empty ones match everything."""

    text: str = ""
    format: str = ""
    license: str = ""
    tenant: str = ""
    keyword: str = ""
    kind: str = ""

    def matches(self, view: CatalogView) -> bool:
        """Whether ``view`` has every facet asked for."""
        words = view.version.description
        return (
            (not self.format or words.get("format") == self.format)
            and (not self.license or words.get("license") == self.license)
            and (not self.tenant or view.entry.tenant == self.tenant)
            and (not self.keyword or self.keyword in words.get("keywords", []))
            and (not self.kind or view.entry.kind == self.kind)
        )


class Catalog:
    """Entries over the object store, in the state store.

    Args:
        store: Where entries and versions live.
        objects: The object storage service (bucket access and roots).
        on_change: Awaited once an entry was registered or deleted (S3 lineage
            reloads the entries' prefixes).
    """

    def __init__(
        self,
        store: Store,
        objects: ObjectsService,
        on_change: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._store = store
        self._objects = objects
        self._on_change = on_change
        self._public: tuple[float, dict[str, list[tuple[int, str]]]] = (0.0, {})
        self._parts: OrderedDict[tuple[Any, ...], list[Partition]] = OrderedDict()

    async def is_public(self, bucket: str, owner_tenant_id: int, key: str) -> bool:
        """Whether ``key`` lies under a public entry's prefix of ``bucket`` (the S3 API asks).

        The entry must be the bucket owner's: a bucket deleted and made again
        by another tenant opens nothing its former owner published. Entries
        are read again every few seconds.
        """
        now = time.monotonic()
        if self._public[0] <= now:
            entries = await asyncio.to_thread(self._store.catalog_entries, "")
            published: dict[str, list[tuple[int, str]]] = {}
            for entry in entries:
                if entry.visibility == "public":
                    published.setdefault(entry.bucket, []).append((entry.tenant_id, entry.prefix))
            self._public = (now + _PUBLIC_TTL_S, published)
        return any(
            tenant_id == owner_tenant_id and (not prefix or key.startswith(prefix + "/"))
            for tenant_id, prefix in self._public[1].get(bucket, ())
        )

    @property
    def _root(self) -> Path:
        assert self._objects.files is not None, "the objects service is not prepared"
        return Path(self._objects.files.root)

    @property
    def content(self) -> ContentStore:
        """Where versions' files are kept by hash (beside the buckets, same filesystem)."""
        return ContentStore(self._root / f"{RESERVED_PREFIX}catalog")

    @property
    def pins(self) -> ModelPins:
        """Where deployed models are pinned for the tenants whose replicas read them."""
        return ModelPins(self._root / f"{RESERVED_PREFIX}pins")

    def prefix_path(self, entry: CatalogEntryRecord) -> Path:
        """The POSIX directory of an entry's prefix (its latest files)."""
        assert self._objects.files is not None, "the objects service is not prepared"
        return Path(self._objects.files.bucket_dir(entry.bucket)) / entry.prefix

    async def register(self, caller: Principal, document: dict[str, Any]) -> CatalogView:
        """Register (or re-version) the entry ``document`` describes, for the caller's tenant.

        Raises:
            BadRequest: a field is wrong, or the prefix holds no files.
            S3Error: the caller's key may not read the bucket (403), or it does not exist.
        """
        bucket, prefix = _where(document)
        assert self._objects.registry is not None and self._objects.files is not None
        await self._objects.registry.authorize(caller_of(caller), bucket, write=False)
        directory = Path(self._objects.files.bucket_dir(bucket)) / prefix
        described = await asyncio.to_thread(_described, directory)
        request = EntryRequest.of(document, described)
        if request.visibility != "private":
            await self._may_publish(caller, bucket)
        content = self.content
        async with content.keeping():
            try:
                files = await asyncio.to_thread(scan_prefix, directory, content)
            except FileNotFoundError:
                files = []
            if not files:
                raise BadRequest(
                    f"s3://{bucket}/{prefix} holds no files.",
                    fix="upload the files first, then register the prefix that holds them",
                    param="prefix",
                )
            words = request.description_only()
            if not words.format:
                words.format = guess_format([f.path for f in files])
            description = words.model_dump()
            version = await asyncio.to_thread(
                self._store.save_catalog_entry,
                caller.tenant_id,
                request.name,
                {"kind": request.kind, "bucket": bucket, "prefix": request.prefix},
                request.visibility,
                sorted(set(request.shared_with)),
                description,
                [f.as_dict() for f in files],
                _search_text(caller.tenant, request.name, description),
            )
        # Outputs jobs declared before this version existed: this is the version they made.
        await asyncio.to_thread(
            self._store.settle_generated, caller.tenant_id, request.name, version
        )
        if self._on_change is not None:
            await self._on_change()
        return await self.view(caller, caller.tenant, request.name)

    async def delete(self, caller: Principal, tenant: str, name: str) -> dict[str, Any]:
        """Delete an entry (every version, its lineage), freeing the bytes only it kept.

        The bucket's files stay: only the catalog's record and kept copies go.

        Raises:
            NotFound: no such entry, or one the caller may not see.
            Forbidden: the caller's tenant does not own it.
        """
        view = await self.view(caller, tenant, name)
        entry = view.entry
        if not caller.is_admin and caller.tenant_id != entry.tenant_id:
            raise Forbidden(
                f"only tenant {entry.tenant!r} may delete {entry.tenant}/{entry.name}.",
                fix="ask its owner to delete it",
            )
        async with self.content.freeing():
            kept = await asyncio.to_thread(self._store.delete_catalog_entry, entry.id)
            freed = await asyncio.to_thread(self._free, kept)
        await asyncio.to_thread(self._store.delete_lineage, entry.tenant_id, entry.name)
        if self._on_change is not None:
            await self._on_change()
        return {
            "deleted": f"{entry.tenant}/{entry.name}",
            "versions": entry.latest,
            "freed_bytes": freed,
        }

    def _free(self, kept: dict[str, int]) -> int:
        """Unlink kept files; the bytes freed (a file still in a bucket frees none)."""
        freed = 0
        for sha256 in kept:
            path = self.content.path_of(sha256)
            try:
                links = path.stat().st_nlink
                path.unlink()
            except FileNotFoundError:
                continue
            freed += kept[sha256] if links == 1 else 0
        return freed

    def bytes_held(self, tenant_id: int) -> int:
        """The bytes only the catalog holds for ``tenant_id`` (its bytes quota counts them).

        Those are the kept files of its entries that no bucket links any more
        (their only links are the content store's and pins), and the copies
        pinned for its services. Blocking.
        """
        kept = self._store.catalog_kept_files(tenant_id)
        pins = self.pins
        pinned = pins.links() if kept else {}
        held = 0
        for sha256, size in kept.items():
            try:
                links = self.content.path_of(sha256).stat().st_nlink
            except FileNotFoundError:
                continue
            held += size if links <= 1 + pinned.get(sha256, 0) else 0
        return held + pins.copied_bytes(tenant_id)

    async def _may_publish(self, caller: Principal, bucket: str) -> None:
        """Refuse sharing or publishing another tenant's files (a read grant is not enough)."""
        assert self._objects.registry is not None
        record = await self._objects.registry.record(bucket)
        if caller.is_admin or (record is not None and record.tenant_id == caller.tenant_id):
            return
        raise Forbidden(
            f"Only the owner of bucket {bucket!r} may share or publish its files.",
            fix="register it as private, or ask the bucket's owner to register it",
        )

    async def view(
        self, caller: Principal | None, tenant: str, name: str, version: int | None = None
    ) -> CatalogView:
        """The entry (at ``version``, else its latest) if ``caller`` may see it.

        Raises:
            NotFound: no such entry or version, or one the caller may not see.
        """
        entry = await asyncio.to_thread(self._store.catalog_entry, tenant, name)
        if entry is None or not may_see(caller, entry):
            raise NotFound(
                f"catalog entry {tenant}/{name} does not exist.", fix="see `aif catalog search`"
            )
        wanted = entry.latest if version is None else version
        found = await asyncio.to_thread(self._store.catalog_version, entry.id, wanted)
        if found is None:
            raise NotFound(
                f"catalog entry {tenant}/{name} has no version {wanted} (latest: {entry.latest}).",
                fix="see `aif catalog show`",
            )
        return CatalogView(entry, found)

    async def versions(self, view: CatalogView) -> list[dict[str, Any]]:
        """Every version of an entry the reader already sees: number, time, file count."""
        found = await asyncio.to_thread(self._store.catalog_versions, view.entry.id)
        return [
            {"version": v.version, "created_at": v.created_at.isoformat(), "files": len(v.files)}
            for v in found
        ]

    async def search(self, caller: Principal | None, query: SearchQuery) -> list[CatalogView]:
        """The latest versions the caller may see that hold the words and facets asked."""
        entries = await asyncio.to_thread(self._store.catalog_entries, query.text)
        views = []
        for entry in entries:
            if not may_see(caller, entry):
                continue
            latest = await asyncio.to_thread(self._store.catalog_version, entry.id, entry.latest)
            if latest is not None and query.matches(view := CatalogView(entry, latest)):
                views.append(view)
        return views

    async def file(self, view: CatalogView, path: str, hashed: bool = True) -> Path:
        """A readable file of a version, with exactly the bytes it was registered with.

        ``hashed`` checks its SHA-256 (reading it whole); without, only its size.

        Raises:
            NotFound: the version has no such file.
            Gone: the file changed since, and its old bytes were not kept.
        """
        listed = next((f for f in view.version.files if f["path"] == path), None)
        if listed is None:
            raise NotFound(
                f"version {view.version.version} of {view.entry.tenant}/{view.entry.name} "
                f"has no file {path!r}.",
                fix="see the entry's file list",
            )
        found = await asyncio.to_thread(self._checked_file, view, listed, hashed)
        if found is None:
            raise Gone(
                f"{path!r} of version {view.version.version} changed after it was registered, "
                "and its old bytes were not kept.",
                fix=f"read the latest version ({view.entry.latest})",
            )
        return found

    async def partitions(self, view: CatalogView, n: int) -> list[Partition]:
        """About ``n`` record-aligned parts over a version's JSONL, CSV and Parquet files.

        Each part's ``path`` is the file's path within the entry. Files are
        checked by size here, not read whole: reading a part back checks it.

        Raises:
            BadRequest: the version has no file that splits by records.
            Gone: as ``file``.
        """
        splittable = [f["path"] for f in view.version.files if _splits(f["path"])]
        if not splittable:
            raise BadRequest(
                f"version {view.version.version} has no JSONL, CSV or Parquet file to split.",
                fix="read its files whole",
            )
        sizes = [int(f["size"]) for f in view.version.files if f["path"] in splittable]
        locals_ = [str(await self.file(view, path, hashed=False)) for path in splittable]
        entry, version = view.entry, view.version
        # A version never changes: split it once per n (a CSV's split reads it whole).
        key = (entry.tenant_id, entry.name, version.version, version.created_at, n)
        if (cached := self._parts.get(key)) is not None:
            self._parts.move_to_end(key)
            return cached
        parts: list[Partition] = []
        for path, local, share in zip(splittable, locals_, shares(sizes, n), strict=True):
            found = await asyncio.to_thread(split, local, share, format_of(path))
            parts.extend(replace(part, path=path) for part in found)
        self._parts[key] = parts
        while len(self._parts) > _CACHED_SPLITS:
            self._parts.popitem(last=False)
        return parts

    def _checked_file(self, view: CatalogView, listed: dict[str, Any], hashed: bool) -> Path | None:
        if listed.get("kept"):
            path = self.content.path_of(listed["sha256"])
        else:
            assert self._objects.files is not None
            path = Path(self._objects.files.bucket_dir(view.entry.bucket)) / view.entry.prefix
            path = path / listed["path"]
            if not no_links_on_the_way(path):
                return None
        if not path.is_file() or path.stat().st_size != listed["size"]:
            return None
        return path if not hashed or sha256_of(path) == listed["sha256"] else None


def may_see(caller: Principal | None, entry: CatalogEntryRecord) -> bool:
    """Whether ``caller`` (None: anonymous) may see ``entry``."""
    if entry.visibility == "public":
        return True
    if caller is None:
        return False
    if caller.is_admin or caller.tenant_id == entry.tenant_id:
        return True
    return entry.visibility == "shared" and caller.tenant in entry.shared_with


def _splits(path: str) -> bool:
    try:
        format_of(path)
    except ValueError:
        return False
    return True


def _where(document: dict[str, Any]) -> tuple[str, str]:
    bucket, prefix = document.get("bucket"), document.get("prefix", "")
    if not isinstance(bucket, str) or not bucket:
        raise BadRequest("bucket is required.", fix="name the bucket that holds the files")
    if not isinstance(prefix, str):
        raise BadRequest("prefix must be a string.", param="prefix")
    prefix = prefix.strip("/")
    for segment in prefix.split("/") if prefix else ():
        if segment in ("", ".", "..") or segment.startswith(RESERVED_PREFIX) or "\0" in segment:
            raise BadRequest(
                f"prefix {prefix!r} is not a folder of the bucket.",
                fix="use a key prefix such as 'train/2024'",
                param="prefix",
            )
    return bucket, prefix


def _described(directory: Path) -> dict[str, Any]:
    path = directory / DESCRIPTION_FILE
    if not no_links_on_the_way(path) or not path.is_file():
        return {}
    if path.stat().st_size > _MAX_DESCRIPTION_BYTES:
        raise BadRequest(f"{DESCRIPTION_FILE} is larger than {_MAX_DESCRIPTION_BYTES} bytes.")
    return read_description(path.read_text(errors="replace"))


def _search_text(tenant: str, name: str, description: dict[str, Any]) -> str:
    parts = [
        tenant,
        name,
        description["title"],
        description["description"],
        description["license"],
        description["creator"],
        description["format"],
        *description["keywords"],
    ]
    return " ".join(parts).lower()
