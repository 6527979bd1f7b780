"""Named functions over HTTP: deploy ``module:function`` on a pool, invoke it with JSON.

An invocation is a call record (``call-…``) in the store and one task on the
pool, submitted through an executor the control plane holds per pool and
timeout. The task is :func:`~aifactory.functions.named.call_named`, so
arguments and results travel as JSON text and user code runs only on
workers. That executor takes results as text (``text_results``): what a
tenant's worker sends is parsed as JSON and never unpickled here, since
unpickling it would run the tenant's code in the control plane. A
synchronous invoke waits for the outcome; an asynchronous one returns the
call id at once, to be read back from ``/v1/functions/calls/{id}``.

A function belongs to its pool's tenant, which may always call it; other
tenants may call it only when it is ``shared`` (see :mod:`.access`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
from datetime import datetime
from typing import Any

from aifactory.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    RemoteError,
    TaskLost,
    TaskTimeout,
)
from aifactory.functions.access import PoolOwner, check_may_call, may_call, pool_owner
from aifactory.functions.executor import Executor
from aifactory.functions.hub import FunctionsHub
from aifactory.functions.named import TARGET_PATTERN, call_named
from aifactory.specs import NAME_PATTERN
from aifactory.store import FunctionCallRow, FunctionRow, Store, utcnow
from aifactory.tenancy import Principal, UsageLedger

__all__ = ["Invoker"]

logger = logging.getLogger(__name__)

MAX_RESULT_BYTES = 1024 * 1024
_NAME = re.compile(NAME_PATTERN)


class Invoker:
    """Deploys named functions and runs their calls on pools.

    Args:
        store: Where named functions and call records live.
        hub: The broker the calls go through.
        ledger: Where each finished call is charged to its tenant.
    """

    def __init__(self, store: Store, hub: FunctionsHub, ledger: UsageLedger | None = None) -> None:
        self._store = store
        self._hub = hub
        self._ledger = ledger
        self._executors: dict[tuple[str, float], Executor] = {}
        self._lock = asyncio.Lock()
        self._pending: set[asyncio.Task[dict[str, Any]]] = set()

    async def aclose(self) -> None:
        """Stop the executors; calls still running are recorded as lost."""
        for executor in self._executors.values():
            await asyncio.to_thread(executor.shutdown, False, cancel_futures=True)
        await asyncio.gather(*self._pending, return_exceptions=True)
        self._executors.clear()

    # -- the registry --------------------------------------------------------

    async def deploy(
        self,
        name: str,
        target: str,
        pool: str,
        timeout_s: float,
        shared: bool,
        caller: Principal,
    ) -> dict[str, Any]:
        """Register ``name`` as ``target`` run on ``pool``, for the pool's tenant.

        Only the pool's tenant (or an administrator on its behalf) deploys on
        it; deploying again with another ``shared`` changes only that.

        Raises:
            BadRequest: a malformed name, target or timeout; no such pool; a
                shared function on a private pool.
            Forbidden: the pool belongs to another tenant.
            Conflict: the name is taken by a different function.
        """
        if not _NAME.match(name):
            raise BadRequest(
                f"function name {name!r} is not valid.",
                fix="use lower case letters, digits and '-', starting with a letter",
                param="name",
            )
        if not TARGET_PATTERN.match(target):
            raise BadRequest(
                f"target {target!r} is not `module:function`.",
                fix="e.g. `mypackage.tasks:resize`",
                param="target",
            )
        if not 0 < timeout_s <= 86_400:
            raise BadRequest("`timeout_s` must be between 0 and 86400.", param="timeout_s")
        owner = await self._deployable_pool(pool, shared, caller)
        existing = await asyncio.to_thread(self._store.function, name)
        if existing is not None:
            same = (existing.target, existing.pool, existing.timeout_s) == (target, pool, timeout_s)
            if not same:
                raise Conflict(
                    f"function {name!r} already exists with a different target or pool.",
                    fix=f"run `aifactory functions rm {name}` first, or pick another name",
                )
            if existing.shared == shared:
                return _function_view(existing) | {"result": "unchanged"}
            await asyncio.to_thread(self._store.update_function, name, shared=shared)
            result = "shared" if shared else "unshared"
        else:
            await asyncio.to_thread(
                self._store.add_function,
                name=name,
                target=target,
                pool=pool,
                timeout_s=timeout_s,
                tenant_id=owner.tenant_id,
                shared=shared,
            )
            result = "created"
        row = await asyncio.to_thread(self._store.function, name)
        assert row is not None
        return _function_view(row) | {"result": result}

    async def _deployable_pool(self, pool: str, shared: bool, caller: Principal) -> PoolOwner:
        owner = await asyncio.to_thread(pool_owner, self._store, pool)
        if owner is None or not owner.visible_to(caller):
            raise BadRequest(
                f"there is no function pool {pool!r}.",
                fix="deploy one with `aif deploy POOL.yaml --tenant TENANT` (kind: FunctionPool)",
                param="pool",
            )
        if not (owner.owned_by(caller) or caller.is_admin):
            raise Forbidden(
                f"pool {pool!r} belongs to tenant {owner.tenant!r}; only its keys (or an "
                "administrator) deploy functions on it.",
                fix=f"deploy it on a pool of tenant {caller.tenant!r}",
            )
        if shared and owner.private:
            raise BadRequest(
                f"pool {pool!r} is private: other tenants cannot call its functions.",
                fix="deploy the function without `shared`, or the pool without `private: true`",
                param="shared",
            )
        return owner

    async def remove(self, name: str, caller: Principal) -> None:
        """Forget a named function (its past calls stay on record).

        Raises:
            NotFound: no such function the caller may see.
            Forbidden: the function belongs to another tenant.
        """
        function = await asyncio.to_thread(self._store.function, name)
        if function is None:
            raise NotFound(f"function {name!r} does not exist.", fix="see `aifactory functions ls`")
        owner = await asyncio.to_thread(pool_owner, self._store, function.pool)
        if not caller.is_admin and (owner is None or not owner.owned_by(caller)):
            if not may_call(owner, function, caller):
                raise NotFound(
                    f"function {name!r} does not exist.", fix="see `aifactory functions ls`"
                )
            assert owner is not None  # may_call needs the pool
            raise Forbidden(
                f"function {name!r} belongs to tenant {owner.tenant!r}; only its keys (or an "
                "administrator) remove it.",
                fix=f"ask tenant {owner.tenant!r} to remove it",
            )
        await asyncio.to_thread(self._store.remove_function, name)

    async def functions(self, caller: Principal) -> list[dict[str, Any]]:
        """Every named function the caller may call (an administrator: every one)."""
        rows = await asyncio.to_thread(self._store.functions)
        owners = {
            pool: await asyncio.to_thread(pool_owner, self._store, pool)
            for pool in {row.pool for row in rows}
        }
        return [
            _function_view(row)
            for row in rows
            if caller.is_admin or may_call(owners[row.pool], row, caller)
        ]

    # -- calls ---------------------------------------------------------------

    async def invoke(
        self, name: str, body: dict[str, Any], caller: Principal, wait: bool
    ) -> dict[str, Any]:
        """Start a call of ``name``; with ``wait``, return its outcome, else its id.

        Raises:
            NotFound: no such function.
            BadRequest: the body is not ``{"args": [...], "kwargs": {...}}``.
        """
        function = await asyncio.to_thread(self._store.function, name)
        if function is None:
            raise NotFound(f"function {name!r} does not exist.", fix="see `aifactory functions ls`")
        check_may_call(
            await asyncio.to_thread(pool_owner, self._store, function.pool), function, caller
        )
        arguments = _arguments(body)
        call_id = f"call-{secrets.token_hex(8)}"
        await asyncio.to_thread(
            self._store.add_call,
            id=call_id,
            function=name,
            tenant_id=caller.tenant_id,
            api_key_id=caller.key_id,
            status="queued",
        )
        executor = await self._executor(function.pool, function.timeout_s)
        future = executor.submit(call_named, function.target, arguments)
        task = asyncio.create_task(self._finish(call_id, asyncio.wrap_future(future), caller))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        if wait:
            return await asyncio.shield(task)
        return {"id": call_id, "function": name, "status": "queued"}

    async def _executor(self, pool: str, timeout_s: float) -> Executor:
        async with self._lock:
            executor = self._executors.get((pool, timeout_s))
            if executor is None:
                executor = await asyncio.to_thread(
                    Executor,
                    self._hub.client_address,
                    pool,
                    api_key=self._hub.internal_key,
                    server_key=self._hub.public_key,
                    timeout_s=timeout_s,
                    text_results=True,
                )
                self._executors[(pool, timeout_s)] = executor
            return executor

    async def _finish(
        self, call_id: str, outcome: asyncio.Future[str], caller: Principal
    ) -> dict[str, Any]:
        fields: dict[str, Any]
        try:
            envelope = await outcome
            if len(envelope) > MAX_RESULT_BYTES:
                fields = _failure(
                    "result_too_large",
                    f"the result is {len(envelope)} bytes; HTTP calls return at most "
                    f"{MAX_RESULT_BYTES}. Return a path or an object key instead.",
                )
            else:
                fields = _outcome(envelope)
        except RemoteError as exc:
            fields = _failure("worker_error", exc.message)
        except TaskTimeout as exc:
            fields = _failure("timed_out", str(exc), status="timed_out")
        except (TaskLost, asyncio.CancelledError) as exc:
            fields = _failure("lost", str(exc) or "the control plane stopped", status="lost")
        except Exception as exc:
            logger.exception("function call %s could not complete", call_id)
            fields = _failure("lost", f"{type(exc).__name__}: {exc}", status="lost")
        fields["finished_at"] = utcnow()
        await asyncio.to_thread(self._store.update_call, call_id, **fields)
        row = await asyncio.to_thread(self._store.call, call_id)
        assert row is not None
        view = call_view(row)
        if self._ledger is not None:
            self._ledger.record(
                tenant_id=caller.tenant_id,
                key_id=caller.key_id,
                kind="function",
                model=row.function,
                endpoint="functions.invoke",
                calls=1,
                seconds=view.get("duration_s", 0.0),
            )
        return view

    async def call(self, call_id: str, caller: Principal) -> dict[str, Any]:
        """One call, if the caller's tenant made it (an admin sees all).

        Raises:
            NotFound: no such call visible to the caller.
        """
        row = await asyncio.to_thread(self._store.call, call_id)
        if row is None or not (caller.is_admin or row.tenant_id == caller.tenant_id):
            raise NotFound(
                f"call {call_id!r} does not exist.", fix="see `aifactory functions calls`"
            )
        return call_view(row)

    async def calls(self, function: str, caller: Principal, limit: int) -> list[dict[str, Any]]:
        """The newest calls the caller may see, newest first."""
        tenant = None if caller.is_admin else caller.tenant_id
        rows = await asyncio.to_thread(self._store.calls, function, limit, tenant)
        return [call_view(row) for row in rows]


def _outcome(envelope: str) -> dict[str, Any]:
    """A call's fields from :func:`call_named`'s JSON envelope, which a worker may have forged."""
    try:
        document = json.loads(envelope)
    except ValueError:
        document = None
    if not isinstance(document, dict) or not isinstance(document.get("ok"), bool):
        return _failure("bad_result", "the worker did not answer with a JSON call envelope")
    if document["ok"]:
        return {"status": "succeeded", "result": json.dumps(document.get("result"))}
    return {"status": "failed", "error": json.dumps(document)}


def _arguments(body: dict[str, Any]) -> str:
    unknown = set(body) - {"args", "kwargs"}
    args = body.get("args", [])
    kwargs = body.get("kwargs", {})
    if unknown or not isinstance(args, list) or not isinstance(kwargs, dict):
        raise BadRequest(
            "the body must be a JSON object with `args` (a list) and/or `kwargs` (an object)"
            + (f"; unknown fields: {', '.join(sorted(unknown))}" if unknown else "")
            + ".",
            fix='send e.g. {"args": [2, 3]} or {"kwargs": {"x": 2}}',
        )
    return json.dumps({"args": args, "kwargs": kwargs})


def _failure(code: str, message: str, status: str = "failed") -> dict[str, Any]:
    return {"status": status, "error": json.dumps({"ok": False, "type": code, "message": message})}


def _function_view(row: FunctionRow) -> dict[str, Any]:
    return {
        "name": row.name,
        "target": row.target,
        "pool": row.pool,
        "timeout_s": row.timeout_s,
        "shared": row.shared,
        "created_at": _iso(row.created_at),
    }


def call_view(row: FunctionCallRow) -> dict[str, Any]:
    """A call as the API shows it: status, result or error, and times."""
    view: dict[str, Any] = {
        "id": row.id,
        "function": row.function,
        "status": row.status,
        "submitted_at": _iso(row.submitted_at),
        "finished_at": _iso(row.finished_at),
    }
    if row.status == "succeeded":
        view["result"] = json.loads(row.result)
    elif row.error:
        error = json.loads(row.error)
        view["error"] = {k: error[k] for k in ("type", "message", "traceback") if k in error}
    if row.finished_at is not None:
        view["duration_s"] = round((row.finished_at - row.submitted_at).total_seconds(), 4)
    return view


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None
