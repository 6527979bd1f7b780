"""A tenant's budgets apply to batches as to interactive calls.

The ledger holds what the tenant spent this period (a batch's tokens and
node-hours land there at the batch discount, as kind ``batch``). A spent
token or node-hour budget refuses a new batch, and keeps a batch's shards
from starting another run until the period resets (or its window ends).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from aifactory.store import Store
from aifactory.tenancy import period_bounds


def budget_refusal(store: Store, tenant_id: int) -> str | None:
    """Why the tenant may start no batch work now, or None (blocking)."""
    limits, _ = store.limits_of(tenant_id, None)
    if limits is None:
        return None
    start, end = period_bounds(limits.period, time.time())
    since = datetime.fromtimestamp(start, UTC)
    reset = datetime.fromtimestamp(end, UTC).strftime("%Y-%m-%d %H:%M UTC")
    if limits.token_budget is not None:
        spent = store.usage_sum(tenant_id, since, "prompt_tokens") + store.usage_sum(
            tenant_id, since, "completion_tokens"
        )
        if spent >= limits.token_budget:
            return (
                f"the token budget for this {limits.period} is spent "
                f"({spent:.0f} of {limits.token_budget}); it resets at {reset}"
            )
    if limits.node_hour_budget is not None:
        spent = store.usage_sum(tenant_id, since, "node_hours")
        if spent >= limits.node_hour_budget:
            return (
                f"the node-hour budget for this {limits.period} is spent "
                f"({spent:.3f} of {limits.node_hour_budget:g}); it resets at {reset}"
            )
    return None
