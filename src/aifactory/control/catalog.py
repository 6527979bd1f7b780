"""The stored services, parsed once per change: what reconcile ticks and summaries read.

A tick used to load every stored spec and validate it again, and digest it
again for its fingerprint: at 1,000 services that was most of an idle
control plane's CPU, and each deploy (which wakes a tick) waited behind it.
The catalog asks the store only for each service's status and time of last
change, and reads just the rows whose pair moved (a new spec and a status
change both stamp ``updated_at``); every other entry is the one parsed
before. Equal versions mean an equal stored document, and a row read again
whose document has the same fingerprint keeps the spec parsed before: a spec
is parsed once per change of its document.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aifactory.control.rotation import spec_fingerprint
from aifactory.errors import SpecError
from aifactory.specs import Deployable, load_deployable
from aifactory.store import ServiceRow, Store

__all__ = ["CatalogEntry", "CatalogSnapshot", "ServiceCatalog"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CatalogEntry:
    """One stored service as parsed at its current version.

    Attributes:
        spec: The parsed spec; None when the stored document no longer parses,
            and for a service being deleted.
        fingerprint: ``spec_fingerprint`` of the stored document.
        created: Unix seconds the service was first deployed.
        version: ``(status, updated_at)``: any change to the row moves it.
    """

    name: str
    status: str
    tenant_id: int | None
    created: int
    version: tuple[str, datetime]
    document: Mapping[str, Any]
    spec: Deployable | None
    fingerprint: str


@dataclass(frozen=True)
class CatalogSnapshot:
    """Every service by name, and the generation they are of.

    The generation grows by one whenever a refresh found a change, so a
    caller rebuilds what it derives from the entries only when it moved.
    """

    generation: int
    entries: tuple[CatalogEntry, ...]

    def get(self, name: str) -> CatalogEntry | None:
        """The entry of service ``name`` (None: no such service)."""
        return next((entry for entry in self.entries if entry.name == name), None)


class ServiceCatalog:
    """Every stored service, re-read and re-parsed only where its row changed."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._entries: dict[str, CatalogEntry] = {}
        # The reconciler and API handlers refresh from worker threads.
        self._lock = threading.Lock()
        self._snapshot = CatalogSnapshot(0, ())

    def refresh(self) -> CatalogSnapshot:
        """Every service by name, as stored now (blocking: call from a thread)."""
        with self._lock:
            versions = self._store.service_versions()
            changed = [
                name
                for name, version in versions.items()
                if (entry := self._entries.get(name)) is None or entry.version != version
            ]
            gone = self._entries.keys() - versions.keys()
            if changed or gone:
                for name in gone:
                    del self._entries[name]
                for row in self._store.services_named(changed):
                    self._entries[row.name] = _entry(row, self._entries.get(row.name))
                self._snapshot = CatalogSnapshot(
                    self._snapshot.generation + 1,
                    tuple(self._entries[name] for name in sorted(self._entries)),
                )
            return self._snapshot


def _entry(row: ServiceRow, previous: CatalogEntry | None) -> CatalogEntry:
    """``row`` as an entry; its spec is ``previous``'s when the document is the same."""
    fingerprint = spec_fingerprint(row.spec)
    spec: Deployable | None = None
    if row.status == "deleting":
        pass  # a service on its way out is not parsed
    elif previous is not None and previous.fingerprint == fingerprint and previous.spec is not None:
        spec = previous.spec
    else:
        try:
            spec = load_deployable(dict(row.spec), row.name)
        except SpecError as exc:
            logger.error("service %s has an invalid stored spec: %s", row.name, exc)
    return CatalogEntry(
        name=row.name,
        status=row.status,
        tenant_id=row.tenant_id,
        created=int(row.created_at.timestamp()),
        version=(row.status, row.updated_at),
        document=row.spec,
        spec=spec,
        fingerprint=fingerprint,
    )
