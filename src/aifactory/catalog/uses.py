"""Specs that name catalog entries: resolved for whoever submits them, and their lineage.

A job's ``inputs`` are checked against the submitter's access (an entry it
may not see is refused as if absent) and pinned to the version read; the job
finds them in ``AIF_CATALOG_INPUTS`` (JSON: entry, version, bucket, prefix,
and the prefix's POSIX path). Its ``outputs`` must be the submitter's
tenant's own entries (they need not exist yet). A service's
``engine.model: catalog:TENANT/NAME@VERSION`` becomes the path of that
version's GGUF file, pinned for the service's tenant (``pins.py``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aifactory.catalog.dcat import CatalogView
from aifactory.catalog.lineage import Lineage, Use
from aifactory.catalog.pins import PinMismatch
from aifactory.catalog.references import CATALOG_SCHEME, Reference
from aifactory.catalog.service import Catalog, Gone
from aifactory.errors import BadRequest, Forbidden, NotFound
from aifactory.identity import Identity
from aifactory.specs import Job, Service
from aifactory.store import Store
from aifactory.tenancy import Principal, TenantIdentities

__all__ = ["INPUTS_ENV", "CatalogUses"]

INPUTS_ENV = "AIF_CATALOG_INPUTS"


class CatalogUses:
    """Resolves the catalog references of job and service specs.

    Args:
        catalog: Entries, their versions and files, and who may see them.
        store: Tenants by name (a declared output's owner).
        lineage: Where what a submitted spec uses is recorded.
        identities: Who each tenant's workloads run as, where the control
            plane hands files over (root); None: pins stay its own.
    """

    def __init__(
        self,
        catalog: Catalog,
        store: Store,
        lineage: Lineage,
        identities: TenantIdentities | None = None,
    ) -> None:
        self._catalog = catalog
        self._store = store
        self._lineage = lineage
        self._identities = identities

    async def record(self, uses: list[Use], kind: str, activity_id: str, tenant_id: int) -> None:
        """Record the uses of a submitted job (``kind`` job) or deployed service."""
        await self._lineage.record(uses, kind, activity_id, tenant_id)

    async def job(self, caller: Principal, job: Job) -> tuple[Job, list[Use]]:
        """``job`` with its inputs pinned and listed in its environment, and what it uses.

        Raises:
            BadRequest: an input the caller may not read.
            Forbidden: an output of another tenant.
        """
        if not job.inputs and not job.outputs:
            return job, []
        views = await self._inputs(caller, job.inputs, "inputs")
        uses = [*map(_used, views), *await self._outputs(caller, job.outputs, "outputs")]
        pinned = tuple(
            f"{CATALOG_SCHEME}{v.entry.tenant}/{v.entry.name}@{v.version.version}" for v in views
        )
        described = [self._described(view) for view in views]
        env = {**job.env, INPUTS_ENV: json.dumps(described, separators=(",", ":"))}
        return job.model_copy(update={"inputs": pinned, "env": env}), uses

    async def declared(
        self, caller: Principal, inputs: list[str], outputs: list[str], param: str
    ) -> list[Use]:
        """What an activity declares it reads and writes (a batch's ``metadata``).

        Raises:
            BadRequest: a reference that is not one, or an input the caller may not read.
            Forbidden: an output of another tenant.
        """
        for text in (*inputs, *outputs):
            try:
                Reference.parse(text)
            except ValueError as exc:
                raise BadRequest(f"{param}: {exc}", param=param) from exc
        views = await self._inputs(caller, inputs, param)
        return [*map(_used, views), *await self._outputs(caller, outputs, param)]

    async def _inputs(
        self, caller: Principal, texts: Iterable[str], param: str
    ) -> list[CatalogView]:
        return [await self._readable(caller, Reference.parse(t), param) for t in texts]

    async def _outputs(self, caller: Principal, texts: Iterable[str], param: str) -> list[Use]:
        return [await self._writable(caller, Reference.parse(t), param) for t in texts]

    async def service(
        self, caller: Principal, service: Service, tenant_id: int | None = None
    ) -> tuple[Service, list[Use]]:
        """``service`` with a ``catalog:`` model replaced by its version's pinned file.

        The pin holds exactly that version's bytes, readable by the tenant the
        service runs for (``tenant_id``, else the caller's), whatever becomes
        of the bucket's file later: every replica, however late, serves them.

        Raises:
            BadRequest: a model the caller may not read, or a version without one GGUF file.
            Gone: the version's bytes were not kept and changed since.
        """
        model = service.engine.model
        if not model.startswith(CATALOG_SCHEME):
            return service, []
        view = await self._readable(caller, _model_reference(model), "engine.model")
        ggufs = [f for f in view.version.files if f["path"].endswith(".gguf")]
        if len(ggufs) != 1:
            raise BadRequest(
                f"engine.model: version {view.version.version} of "
                f"{view.entry.tenant}/{view.entry.name} holds {len(ggufs)} .gguf files, not one.",
                fix="register a prefix that holds exactly one GGUF model file",
                param="engine.model",
            )
        (listed,) = ggufs
        kept = await self._catalog.file(view, listed["path"], hashed=False)
        runs_for = caller.tenant_id if tenant_id is None else tenant_id
        identity = await asyncio.to_thread(self._identity, runs_for)
        try:
            path = await asyncio.to_thread(
                self._catalog.pins.pin, kept, listed["sha256"], listed["size"], runs_for, identity
            )
        except PinMismatch as exc:
            raise Gone(
                f"engine.model: {listed['path']!r} of version {view.version.version} of "
                f"{view.entry.tenant}/{view.entry.name} changed after it was registered.",
                fix=f"deploy the latest version ({view.entry.latest})",
            ) from exc
        await asyncio.to_thread(self._prune, runs_for, path)
        engine = service.engine.model_copy(update={"model": str(path)})
        return service.model_copy(update={"engine": engine}), [_used(view)]

    def _prune(self, tenant_id: int, pinned: Path) -> None:
        """Let go of the tenant's pins that no service of it names any more."""
        in_use = {str(pinned)}
        for row in self._store.services():
            engine = row.spec.get("engine")
            if row.tenant_id == tenant_id and isinstance(engine, dict):
                in_use.add(str(engine.get("model", "")))
        self._catalog.pins.prune(tenant_id, in_use)

    def _identity(self, tenant_id: int) -> Identity | None:
        if self._identities is None:
            return None
        return self._identities.of(self._store.tenant_by_id(tenant_id))

    async def _readable(self, caller: Principal, reference: Reference, param: str) -> CatalogView:
        try:
            return await self._catalog.view(
                caller, reference.tenant, reference.name, reference.version
            )
        except NotFound as exc:
            raise BadRequest(
                f"{param}: {exc.message} (or this key may not read it)",
                fix="see `aif catalog search` for the entries this key may read",
                param=param,
            ) from exc

    async def _writable(self, caller: Principal, reference: Reference, param: str) -> Use:
        if reference.version is not None:
            raise BadRequest(
                f"{param}: {reference} names a version; an output's version is made by its writer.",
                fix=f"write catalog:{reference.entry}",
                param=param,
            )
        if not caller.is_admin and reference.tenant != caller.tenant:
            raise Forbidden(
                f"{param}: {reference.entry} is not an entry of tenant {caller.tenant!r}.",
                fix=f"name an output of your own tenant, catalog:{caller.tenant}/NAME",
            )
        tenant = await asyncio.to_thread(self._store.tenant, reference.tenant)
        if tenant is None:
            raise BadRequest(f"{param}: tenant {reference.tenant!r} does not exist.", param=param)
        return Use(tenant.id, reference.name, None, "generated")

    def _described(self, view: CatalogView) -> dict[str, Any]:
        entry = view.entry
        return {
            "entry": f"{entry.tenant}/{entry.name}",
            "version": view.version.version,
            "bucket": entry.bucket,
            "prefix": entry.prefix,
            "path": str(self._catalog.prefix_path(entry)),
        }


def _used(view: CatalogView) -> Use:
    return Use(view.entry.tenant_id, view.entry.name, view.version.version, "used")


def _model_reference(model: str) -> Reference:
    try:
        return Reference.parse(model)
    except ValueError as exc:
        raise BadRequest(f"engine.model: {exc}", param="engine.model") from exc
