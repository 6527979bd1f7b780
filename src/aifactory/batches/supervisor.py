"""Runs batches: starts their shards, follows them, resumes them, and finishes each batch.

One background task looks at every unfinished batch each ``_TICK_S`` (and
whenever a batch is created or cancelled)::

    validating  -> shards started (runner.start)                  -> in_progress
    in_progress -> each shard's run followed, its lines counted from its output;
                   a run that ended with lines left is started again (it
                   resumes: the worker skips what its output holds), until
                   _MAX_ATTEMPTS runs in a row answered no line
                -> every line answered, or no shard may run again  -> finalizing
                -> the completion window passed: runs stopped      -> finalizing (expired)
    cancelling  -> runs stopped; once none runs                    -> finalizing (cancelled)
    finalizing  -> output and error files in the tenant's bucket, usage in the ledger
                   (kind ``batch``, at the site's discount) -> completed | expired | cancelled
    any         -> a shard's output is a link or another user's file -> failed

Everything the supervisor knows lives in the batch row (each shard's
handle, attempts, times and lines done), so a restarted control plane picks
every batch up where it was: a local shard's process died with it and is
started again, a Slurm job is found by its id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from aifactory.batches.budgets import budget_refusal
from aifactory.batches.files import OUTPUT_PURPOSE, BatchFiles
from aifactory.batches.output import Tally, assemble, input_ids, read_answers
from aifactory.batches.own_files import NotOwnFile, OwnFolder
from aifactory.batches.shards import ShardLaunch, ShardRunner, ShardState
from aifactory.batches.views import ACTIVE
from aifactory.config import Settings
from aifactory.control import ServiceCatalog
from aifactory.engines import render_engine
from aifactory.errors import AIFactoryError, CapacityExceeded
from aifactory.specs import Service, parse_duration_s
from aifactory.store import BatchFileRow, BatchRow, Store, TenantRow
from aifactory.tenancy import Principal, TenantIdentities, UsageLedger

logger = logging.getLogger(__name__)

_TICK_S = 1.0
_MAX_ATTEMPTS = 5
_UNANSWERED = {
    "expired": ("batch_expired", "The batch's completion window ended before this request ran."),
    "cancelled": ("batch_cancelled", "The batch was cancelled before this request ran."),
    "completed": (
        "batch_failed",
        "The request was tried by every run of its shard and never answered.",
    ),
}


@dataclass(frozen=True)
class _Plan:
    """What the shards of one batch are launched from, this tick."""

    tenant: TenantRow | None
    principal: Principal
    launches: list[ShardLaunch]
    folder: OwnFolder
    outputs: list[Path]
    input_row: BatchFileRow
    refusal: str | None


class BatchSupervisor:
    """The background task that runs every unfinished batch.

    Args:
        settings: The discount and default time limits.
        store: Where batches are kept.
        files: The tenants' files (inputs read, outputs written).
        catalog: The deployed services (the engine each batch starts).
        identities: Who a tenant's shards run as.
        runner_for: The shard runner of a backend (``local``, ``slurm``).
        ledger: Where a finished batch is charged.
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        files: BatchFiles,
        catalog: ServiceCatalog,
        identities: TenantIdentities,
        runner_for: Callable[[str], ShardRunner],
        ledger: UsageLedger | None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._files = files
        self._catalog = catalog
        self._identities = identities
        self._runner_for = runner_for
        self._ledger = ledger
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._tallies: dict[tuple[str, int], Tally] = {}

    def wake(self) -> None:
        """Look at the batches now (one was created or cancelled)."""
        self._wake.set()

    async def start(self) -> None:
        """Start the background task."""
        self._task = asyncio.create_task(self._run(), name="batches")

    async def stop(self) -> None:
        """Stop the background task (local shards stop with this process)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), _TICK_S)
            self._wake.clear()
            try:
                await self.tick()
            except Exception:
                logger.exception("following batches failed; retrying")

    async def tick(self) -> None:
        """Advance every unfinished batch by one step."""
        rows = await asyncio.to_thread(self._store.batches, None, 1000, "", ACTIVE)
        for row in rows:
            try:
                await self._advance(row)
            except Exception:
                logger.exception("batch %s: a step failed; retrying", row.id)

    async def _advance(self, row: BatchRow) -> None:
        plan = await asyncio.to_thread(self._plan, row)
        shards = [dict(s) for s in row.shards]
        try:
            await self._step(row, plan, shards)
        except NotOwnFile as exc:
            await self._fail(row, plan, shards, f"a shard's output is not the tenant's file: {exc}")

    async def _fail(
        self, row: BatchRow, plan: _Plan, shards: list[dict[str, Any]], message: str
    ) -> None:
        """End the batch as ``failed`` (its runs stopped), with ``message`` in its errors."""
        logger.warning("batch %s: failed: %s", row.id, message)
        await self._stop(row, plan, shards)
        error = {"code": "batch_failed", "message": message, "param": None, "line": None}
        await asyncio.to_thread(
            self._store.update_batch,
            row.id,
            row.status,
            status="failed",
            errors=[error],
            times={**row.times, "failed_at": int(time.time())},
        )

    async def _step(self, row: BatchRow, plan: _Plan, shards: list[dict[str, Any]]) -> None:
        if row.status == "finalizing":
            await self._finalize(row, plan, shards, row.times.get("finalize_as", "completed"))
            return
        stopping = row.status == "cancelling" or time.time() > row.times.get("expires_at", 1e18)
        await self._follow(row, plan, shards, start=not stopping)
        counts = self._counts(row, plan)
        if stopping:
            await self._stop(row, plan, shards)
            if all(_ended(s) for s in shards):
                final = "cancelled" if row.status == "cancelling" else "expired"
                await self._finalize(row, plan, shards, final)
            return
        times = dict(row.times)
        status = "in_progress"
        times.setdefault("in_progress_at", int(time.time()))
        if all(_settled(s) for s in shards):
            await self._finalize(row, plan, shards, "completed")
            return
        await asyncio.to_thread(
            self._store.update_batch,
            row.id,
            row.status,
            status=status,
            shards=shards,
            times=times,
            request_counts=counts,
        )

    def _plan(self, row: BatchRow) -> _Plan:
        """Who runs the batch's shards, as which identity, with which engine (blocking)."""
        tenant = next((t for t in self._store.tenants() if t.id == row.tenant_id), None)
        identity = self._identities.of(tenant)
        privilege = self._identities.privilege
        own = privilege.workload_dir(identity)
        if row.backend == "warm":
            # This process answers a warm batch itself: into its own folder.
            top, uid = self._settings.logs_dir / "batches" / "warm", None
            folder = top / row.id
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        else:
            top, uid = own, None if privilege.single_user else identity.uid
            folder = own / "batches" / row.id
            privilege.make_dir(identity, folder)
        input_row = self._store.batch_file(row.input_file_id, row.tenant_id)
        if input_row is None:
            raise AIFactoryError(f"batch {row.id}: its input file {row.input_file_id} is gone")
        input_file = self._files.path(input_row)
        entry = self._catalog.refresh().get(row.service)
        spec = entry.spec if entry is not None else None
        outputs = [folder.relative_to(top) / f"shard-{s['index']}.jsonl" for s in row.shards]
        launches = []
        if isinstance(spec, Service):
            # A pod has its own filesystem: the image's interpreter, its $HOME cache.
            in_pod = row.backend == "kubernetes"
            python = self._settings.kubernetes_pod_python if in_pod else sys.executable
            engine = render_engine(spec, None if in_pod else own / "cache", python)
            concurrency = _slots(spec)
            time_limit = row.metadata_.get("time_limit")
            for shard, output in zip(row.shards, outputs, strict=True):
                argv = (
                    python, "-m", "aifactory.batches.worker",
                    "--input", str(input_file), "--output", str(top / output),
                    "--shard", str(shard["index"]), "--shards", str(len(row.shards)),
                    "--concurrency", str(concurrency), "--", *engine.argv,
                )  # fmt: skip
                launches.append(
                    ShardLaunch(
                        name=f"batch-{row.id.removeprefix('batch_')[:12]}-{shard['index']}",
                        service=row.service,
                        argv=argv,
                        identity=identity,
                        folder=folder,
                        input=input_file,
                        resources=spec.resources,
                        time_limit_s=parse_duration_s(time_limit) if time_limit else None,
                        lend=bool(shard.get("lend")),
                        tenant=tenant,
                    )
                )
        principal = Principal(
            key_id=row.api_key_id or 0,
            tenant_id=row.tenant_id,
            tenant=tenant.name if tenant else "",
            role="member",
        )
        refusal = budget_refusal(self._store, row.tenant_id)
        # An unprivileged control plane cannot open the tenant's folder: the tenant reads for it.
        through = top == own and privilege.through_prefix(identity)
        folder_view = OwnFolder(
            top, uid, partial(privilege.read_file, identity) if through else None
        )
        return _Plan(tenant, principal, launches, folder_view, outputs, input_row, refusal)

    async def _follow(
        self, row: BatchRow, plan: _Plan, shards: list[dict[str, Any]], start: bool
    ) -> None:
        """Refresh each shard's run; start a shard that has lines left and no run."""
        runner = self._runner_for(row.backend)
        now = time.time()
        for shard, output in zip(shards, plan.outputs, strict=True):
            tally = self._tallies.setdefault((row.id, shard["index"]), Tally())
            await asyncio.to_thread(tally.update, plan.folder, output)
            done = shard["lines_done"] = tally.done
            if done and not shard.get("first_line_at"):
                shard["first_line_at"] = now
            handle = shard.get("handle")
            launch = plan.launches[shard["index"]] if plan.launches else None
            if handle and launch is not None and not _ended(shard):
                _note(shard, await runner.state(launch, handle), now)
            if not start or done >= shard["lines_total"] or not _ended(shard):
                continue
            if "done_at_start" in shard:
                # A run that answered lines was no failure (a walltime, a preemption).
                progressed = done > shard.pop("done_at_start")
                shard["stalled"] = 0 if progressed else shard.get("stalled", 0) + 1
            if shard.get("stalled", 0) >= _MAX_ATTEMPTS:
                continue
            if plan.refusal is not None:
                shard["reason"] = f"not started: {plan.refusal}"
                continue
            if launch is None:
                shard.update(
                    state="failed",
                    reason=f"service {row.service!r} is gone",
                    stalled=_MAX_ATTEMPTS,
                )
                continue
            try:
                shard["handle"] = await runner.start(launch)
            except CapacityExceeded as exc:
                # Not a failed run: the machine is full now; the next look tries again.
                shard.update(state="pending", reason=f"waiting for capacity: {exc}", handle="")
                continue
            except AIFactoryError as exc:
                shard.update(state="failed", reason=f"could not start: {exc}", handle="")
                shard["attempts"] = shard.get("attempts", 0) + 1
                shard["stalled"] = shard.get("stalled", 0) + 1
                continue
            shard.update(state="pending", reason="", started_at=None, ended_at=None)
            shard["attempts"] = shard.get("attempts", 0) + 1
            shard["done_at_start"] = done
            logger.info(
                "batch %s: shard %s run %s started as %s",
                row.id,
                shard["index"],
                shard["attempts"],
                shard["handle"],
            )

    async def _stop(self, row: BatchRow, plan: _Plan, shards: list[dict[str, Any]]) -> None:
        """Cancel every shard's run that has not ended (once: cancelled runs are marked)."""
        runner = self._runner_for(row.backend)
        for shard in shards:
            if (
                shard.get("handle")
                and not _ended(shard)
                and not shard.get("stopping")
                and plan.launches
            ):
                shard["stopping"] = True
                await runner.cancel(plan.launches[shard["index"]], shard["handle"])
        await asyncio.to_thread(self._store.update_batch, row.id, row.status, shards=shards)

    def _counts(self, row: BatchRow, plan: _Plan) -> dict[str, int]:
        tallies = [self._tallies.get((row.id, s["index"]), Tally()) for s in row.shards]
        return {
            "total": row.request_counts.get("total", 0),
            "completed": sum(t.done - t.failed for t in tallies),
            "failed": sum(t.failed for t in tallies),
        }

    async def _finalize(
        self, row: BatchRow, plan: _Plan, shards: list[dict[str, Any]], final: str
    ) -> None:
        """Write the output and error files, charge the batch, and end it as ``final``."""
        times = {**row.times, "finalize_as": final}
        times.setdefault("finalizing_at", int(time.time()))
        if row.status != "finalizing":
            moved = await asyncio.to_thread(
                self._store.update_batch,
                row.id,
                row.status,
                status="finalizing",
                shards=shards,
                times=times,
            )
            if not moved:
                return
        answers = await asyncio.to_thread(read_answers, plan.folder, plan.outputs)
        ids = input_ids(await self._files.read(plan.input_row))
        files = await asyncio.to_thread(assemble, ids, answers, _UNANSWERED[final])
        output_id = error_id = None
        if files.output_lines:
            kept = await self._files.keep(
                plan.principal,
                f"{row.id}_output.jsonl",
                OUTPUT_PURPOSE,
                files.output,
                files.output_lines,
            )
            output_id = kept.id
        if files.error_lines:
            kept = await self._files.keep(
                plan.principal,
                f"{row.id}_error.jsonl",
                OUTPUT_PURPOSE,
                files.errors,
                files.error_lines,
            )
            error_id = kept.id
        usage = self._charge(row, answers.tokens(), shards, answers.done)
        times.pop("finalize_as", None)
        times[f"{final}_at"] = int(time.time())
        await asyncio.to_thread(
            self._store.update_batch,
            row.id,
            "finalizing",
            status=final,
            output_file_id=output_id,
            error_file_id=error_id,
            times=times,
            usage=usage,
            request_counts={
                "total": len(ids),
                "completed": files.output_lines,
                "failed": files.error_lines,
            },
        )
        for shard in shards:
            self._tallies.pop((row.id, shard["index"]), None)
        logger.info(
            "batch %s: %s (%d answered, %d errors)",
            row.id,
            final,
            files.output_lines,
            files.error_lines,
        )

    def _charge(
        self, row: BatchRow, tokens: tuple[int, int], shards: list[dict[str, Any]], calls: int
    ) -> dict[str, Any]:
        """Charge the tokens and node-hours at the site's discount; return the usage shown."""
        discount = self._settings.batch_discount
        # A warm batch ran on replicas already paid for: its tokens are its cost.
        ran = row.backend != "warm"
        seconds = sum(float(s.get("seconds", 0.0)) for s in shards) if ran else 0.0
        prompt, completion = tokens
        node_hours = seconds / 3600
        pay = 1 - discount
        charged = {
            "prompt_tokens": round(prompt * pay),
            "completion_tokens": round(completion * pay),
            "node_hours": node_hours * pay,
        }
        if self._ledger is not None:
            self._ledger.record(
                tenant_id=row.tenant_id,
                key_id=row.api_key_id,
                kind="batch",
                model=row.model,
                endpoint=f"batch.{row.endpoint.removeprefix('/v1/')}"[:32],
                calls=calls,
                seconds=seconds,
                source=row.backend,
                **charged,
            )
        return {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + completion,
            "node_hours": round(node_hours, 6),
            "discount": discount,
            "charged": {k: round(v, 6) for k, v in charged.items()},
        }


def _slots(spec: Service) -> int:
    """How many requests the engine serves at once (llama.cpp's ``parallel`` slots)."""
    value = spec.engine.args.get("parallel")
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1


def _ended(shard: dict[str, Any]) -> bool:
    """Whether the shard has no run in progress (never started counts)."""
    return not shard.get("handle") or shard.get("state") not in ("pending", "running")


def _settled(shard: dict[str, Any]) -> bool:
    """Whether the shard will not run again: every line answered, or runs in a row answered none."""
    spent = shard.get("stalled", 0) >= _MAX_ATTEMPTS
    return _ended(shard) and (shard.get("lines_done", 0) >= shard["lines_total"] or spent)


def _note(shard: dict[str, Any], state: ShardState, now: float) -> None:
    """Record a run's state; when it ends, add its running time to the shard's."""
    shard["state"], shard["reason"] = state.state, state.reason
    shard["expected_start"] = state.expected_start
    if state.started_at and not shard.get("started_at"):
        shard["started_at"] = state.started_at
        shard.setdefault("first_started_at", state.started_at)
    if state.ended:
        ended = state.ended_at or now
        started = shard.get("started_at") or ended
        shard["seconds"] = float(shard.get("seconds", 0.0)) + max(0.0, ended - float(started))
        shard["started_at"] = None
        shard.pop("stopping", None)
