"""The Batches API's facade: create, list, read and cancel a tenant's batches.

A batch names an input file (its lines were checked on upload) and an
endpoint; its model must be a deployed service's that the tenant may use,
whose engine serves that endpoint. The batch runs on the service's stack
(``metadata.backend`` may choose ``local``, ``slurm`` or ``kubernetes``;
``warm`` sends its lines to the model's own replicas' idle slots: ``warm.py``), as lent work
unless ``metadata.priority`` is ``normal``, in ``metadata.shards`` shards
(default 1). Everything after creation is the ``BatchSupervisor``'s.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from typing import Any

from aifactory.batches.budgets import budget_refusal
from aifactory.batches.files import INPUT_PURPOSE, BatchFiles
from aifactory.batches.requests import ENDPOINTS, check_input
from aifactory.batches.views import batch_view
from aifactory.config import Settings
from aifactory.control import ServiceCatalog
from aifactory.engines import endpoints
from aifactory.errors import BadRequest, ModelNotFound, NotFound, QuotaExceeded
from aifactory.specs import Service, parse_duration_s
from aifactory.store import BatchRow, Store
from aifactory.tenancy import Principal

BACKENDS = ("local", "slurm", "kubernetes", "warm")
_MAX_SHARDS = 64
_MAX_METADATA = 16
_ENDPOINT_KIND = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
}


class BatchService:
    """Create, list, describe and cancel batches, each scoped to the caller's tenant.

    Args:
        settings: Default backend.
        store: Where batches are kept.
        files: The tenant's files (the input's).
        catalog: The deployed services (a batch's model is one of theirs).
        wake: Tells the supervisor to look now (a batch was created or cancelled).
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        files: BatchFiles,
        catalog: ServiceCatalog,
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._files = files
        self._catalog = catalog
        self._wake = wake

    async def create(self, caller: Principal, body: dict[str, Any]) -> dict[str, Any]:
        """POST /v1/batches: check the request against its input file and model.

        Raises:
            BadRequest: a field is wrong, the file's requests go elsewhere, or
                the model's engine does not serve the endpoint.
            NotFound: no such input file (of this tenant).
            ModelNotFound: no service the tenant may use serves the model.
            QuotaExceeded: the tenant's token or node-hour budget is spent.
        """
        endpoint = _text(body, "endpoint")
        if endpoint not in ENDPOINTS:
            raise BadRequest(
                f"endpoint {endpoint!r} is not supported.",
                fix=f"use one of {', '.join(ENDPOINTS)}",
                param="endpoint",
            )
        window = _text(body, "completion_window")
        try:
            window_s = parse_duration_s(window)
        except ValueError as exc:
            raise BadRequest(
                f"completion_window {window!r} is not a duration.",
                fix="use '24h'",
                param="completion_window",
            ) from exc
        metadata = _metadata(body.get("metadata"))
        refusal = await asyncio.to_thread(budget_refusal, self._store, caller.tenant_id)
        if refusal is not None:
            raise QuotaExceeded(
                f"No batch can start: {refusal}.", fix="ask the operator to raise the budget"
            )
        row = await self._files.get(caller, _text(body, "input_file_id"))
        if row.purpose != INPUT_PURPOSE:
            raise BadRequest(
                f"file {row.id} has purpose {row.purpose!r}, not 'batch'.", param="input_file_id"
            )
        data = await self._files.read(row)
        checked = await asyncio.to_thread(check_input, data, self._files.max_lines)
        if checked.summary is None:
            raise BadRequest(f"input file {row.id}: {checked.message()}.", param="input_file_id")
        if checked.summary.url != endpoint:
            raise BadRequest(
                f"the requests of {row.id} go to {checked.summary.url}, not to the batch's "
                f"endpoint {endpoint}.",
                fix="give the endpoint the file's lines name",
                param="endpoint",
            )
        model = checked.summary.model
        service = await self._service_of(caller, model)
        served = endpoints(service)
        if served is not None and _ENDPOINT_KIND[endpoint] not in served:
            raise BadRequest(
                f"model {model!r} does not serve {endpoint} (its engine serves "
                f"{', '.join(sorted(served))}).",
                fix="send these requests to a model that serves that endpoint",
                param="endpoint",
            )
        backend = metadata.get("backend") or service.backend or self._settings.default_backend
        if backend not in BACKENDS:
            raise BadRequest(
                f"a batch cannot run on backend {backend!r} yet.",
                fix=f"set metadata.backend to one of {', '.join(BACKENDS)}",
                param="metadata.backend",
            )
        shards = _shards(metadata.get("shards", "1"), checked.summary.lines)
        now = int(time.time())
        batch = await asyncio.to_thread(
            self._store.add_batch,
            id="batch_" + secrets.token_hex(12),
            tenant_id=caller.tenant_id,
            api_key_id=caller.key_id or None,
            endpoint=endpoint,
            model=model,
            service=service.name,
            backend=backend,
            input_file_id=row.id,
            completion_window=window,
            status="validating",
            metadata_=metadata,
            errors=[],
            request_counts={"total": checked.summary.lines, "completed": 0, "failed": 0},
            shards=[
                {
                    "index": i,
                    "lend": metadata.get("priority", "low") != "normal",
                    "lines_total": len(range(i, checked.summary.lines, shards)),
                }
                for i in range(shards)
            ],
            times={"expires_at": now + int(window_s)},
            usage={},
        )
        self._wake()
        return batch_view(batch)

    async def _service_of(self, caller: Principal, model: str) -> Service:
        """The deployed Service that serves ``model`` to the caller's tenant."""
        snapshot = await asyncio.to_thread(self._catalog.refresh)
        for entry in snapshot.entries:
            spec = entry.spec
            if not isinstance(spec, Service) or model not in spec.served_names():
                continue
            if spec.private and entry.tenant_id != caller.tenant_id and not caller.is_admin:
                continue
            if not caller.reaches_service(spec.name):
                continue
            return spec
        raise ModelNotFound(
            f"The model {model!r} does not exist or you do not have access to it.",
            fix="name a deployed model (GET /v1/models) in every line's body.model",
            param="model",
        )

    async def get(self, caller: Principal, batch_id: str) -> dict[str, Any]:
        """GET /v1/batches/{id}."""
        return batch_view(await self._row(caller, batch_id))

    async def list(self, caller: Principal, after: str, limit: int) -> dict[str, Any]:
        """GET /v1/batches: the tenant's batches, newest first, a page of ``limit``."""
        rows = await asyncio.to_thread(self._store.batches, caller.tenant_id, limit + 1, after)
        views = [batch_view(row) for row in rows[:limit]]
        return {
            "object": "list",
            "data": views,
            "first_id": views[0]["id"] if views else None,
            "last_id": views[-1]["id"] if views else None,
            "has_more": len(rows) > limit,
        }

    async def cancel(self, caller: Principal, batch_id: str) -> dict[str, Any]:
        """POST /v1/batches/{id}/cancel: ``cancelling`` until its jobs stopped, then ``cancelled``.

        A batch already finished is returned as it is.
        """
        row = await self._row(caller, batch_id)
        for status in ("validating", "in_progress"):
            if row.status == status:
                times = {**row.times, "cancelling_at": int(time.time())}
                await asyncio.to_thread(
                    self._store.update_batch, row.id, status, status="cancelling", times=times
                )
                self._wake()
        return batch_view(await self._row(caller, batch_id))

    async def _row(self, caller: Principal, batch_id: str) -> BatchRow:
        row = await asyncio.to_thread(self._store.batch, batch_id, caller.tenant_id)
        if row is None:
            raise NotFound(f"No such batch: {batch_id!r}.", param="batch_id")
        return row


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"`{name}` is required (a string).", param=name)
    return value


def _metadata(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if (
        not isinstance(value, dict)
        or len(value) > _MAX_METADATA
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
    ):
        raise BadRequest(
            f"metadata must be an object of at most {_MAX_METADATA} string values.",
            param="metadata",
        )
    priority = value.get("priority", "low")
    if priority not in ("low", "normal"):
        raise BadRequest(
            "metadata.priority must be 'low' (lent, preemptible: the default) or 'normal'.",
            param="metadata.priority",
        )
    time_limit = value.get("time_limit")
    if time_limit is not None:
        try:
            parse_duration_s(time_limit)
        except ValueError as exc:
            raise BadRequest(
                f"metadata.time_limit {time_limit!r} is not a duration.",
                fix="give each shard's run a walltime such as '30m' or '2h'",
                param="metadata.time_limit",
            ) from exc
    return dict(value)


def _shards(text: str, lines: int) -> int:
    if not text.isdigit() or not 1 <= int(text) <= _MAX_SHARDS:
        raise BadRequest(
            f"metadata.shards must be a whole number from 1 to {_MAX_SHARDS}.",
            param="metadata.shards",
        )
    return min(int(text), lines)
