"""Shared counters for limits: token buckets, budgets and in-flight slots.

Gateways do not touch these per request: they lease slices (``lease``,
``acquire`` with a count) and spend them in memory (``aifactory.tenancy.slices``).
Every operation reads the row, computes in Python and writes back only if the
row is unchanged (compare and swap, retried), so processes sharing PostgreSQL
(or one SQLite file) race on a counter without spending anything twice, on
any isolation level.

A bucket's level refills at ``rate`` per second up to ``capacity``, computed
from the stored ``stamp``::

    level' = min(capacity, level + (now - stamp) * rate)

A budget's counter is what was spent (leased) this period; its level is
``capacity - spent``, so a raised budget applies at once.

An in-flight slot is also recorded as held by the process that took it (a
``held|HOLDER|SLOT`` row, stamped by the holder's ``renew``). A process
that dies holding slots (``kill -9``, a lost node) stops renewing, and
``reclaim`` gives its slots back once its rows are stale, so a crashed
gateway cannot keep a tenant's concurrency limit used up. A holder that was
only slow finds its rows gone and gives nothing back twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sqlalchemy import case, delete, insert, literal, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from aifactory.store.tables import CounterRow

__all__ = ["Counters", "Grant"]

# A lease never takes more than this share of what is left, so the other
# gateways still find some when they ask (small limits: one at a time).
LEASE_SHARE = 0.25
_CAS_TRIES = 50


@dataclass(frozen=True)
class Grant:
    """What ``lease`` handed out and what the shared counter had left."""

    granted: float
    level: float  # after the give-back, before the grant: the shared allowance left

    def admits(self, need: float) -> bool:
        """Whether the shared allowance admits a request needing ``need`` (tokens: > 0)."""
        return self.level >= need and self.level > 0


class Counters:
    """Atomic operations on named counters (see the module docstring)."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def _ensure(self, name: str, value: float, stamp: float) -> None:
        with self._sessions.begin() as s:
            if s.get(CounterRow, name) is not None:
                return
        try:
            with self._sessions.begin() as s:
                s.execute(insert(CounterRow).values(name=name, value=value, stamp=stamp))
        except IntegrityError:
            pass  # another process created it first

    def value(self, name: str) -> float:
        """A plain counter's value (0 if never used)."""
        with self._sessions.begin() as s:
            found = s.scalar(select(CounterRow.value).where(CounterRow.name == name))
            return float(found or 0.0)

    def lease(
        self,
        name: str,
        *,
        give: float,
        want: float,
        need: float,
        capacity: float,
        rate: float,
        now: float,
        spent: bool = False,
    ) -> Grant:
        """Give ``give`` back (negative: pay a debt), then take a slice of up to ``want``.

        The counter is a bucket's level refilling at ``rate`` up to ``capacity``,
        or (``spent``) a budget's spend against ``capacity``. A slice is granted
        only when what is left admits a request (``Grant.admits(need)``); it is
        at least ``need``, at most ``want`` and at most ``LEASE_SHARE`` of what
        is left (whole units when ``need`` is 1).
        """
        for _ in range(_CAS_TRIES):
            with self._sessions.begin() as s:
                found = s.execute(
                    select(CounterRow.value, CounterRow.stamp).where(CounterRow.name == name)
                ).first()
                if found is not None:
                    old_value, old_stamp = found
                    if spent:
                        level = capacity - old_value + give
                    else:
                        refilled = old_value + max(0.0, now - old_stamp) * rate
                        level = min(capacity, min(capacity, refilled) + give)
                    grant = Grant(0.0, level)
                    if want > 0 and grant.admits(need):
                        share = max(need, min(want, level * LEASE_SHARE))
                        granted = min(level, share)
                        grant = Grant(math.floor(granted) if need >= 1 else granted, level)
                    left = level - grant.granted
                    changed = s.execute(
                        update(CounterRow)
                        .where(
                            CounterRow.name == name,
                            CounterRow.value == old_value,
                            CounterRow.stamp == old_stamp,
                        )
                        .values(
                            value=capacity - left if spent else left,
                            stamp=old_stamp if spent else max(now, old_stamp),
                        )
                    )
                    if changed.rowcount:  # type: ignore[attr-defined]
                        return grant
            if found is None:  # the first lease of this counter, by any gateway
                self._ensure(name, 0.0 if spent else capacity, now)
        raise RuntimeError(f"counter {name!r} kept changing under {_CAS_TRIES} tries")

    def acquire(self, name: str, limit: int, holder: str, now: float, count: int = 1) -> int:
        """Take up to ``count`` slots of the ``limit``, recorded as ``holder``'s.

        At most ``LEASE_SHARE`` of the free slots are taken (at least one).

        Returns:
            How many were taken (0 when all are taken).
        """
        held = _held(holder, name)
        self._ensure(name, 0.0, 0.0)
        self._ensure(held, 0.0, now)
        for _ in range(_CAS_TRIES):
            with self._sessions.begin() as s:
                taken = s.scalar(select(CounterRow.value).where(CounterRow.name == name))
                assert taken is not None
                free = int(limit - taken)
                if free <= 0:
                    return 0
                granted = min(count, max(1, math.floor(free * LEASE_SHARE)))
                result = s.execute(
                    update(CounterRow)
                    .where(CounterRow.name == name, CounterRow.value == taken)
                    .values(value=taken + granted)
                )
                if not result.rowcount:  # type: ignore[attr-defined]
                    continue
                s.execute(
                    update(CounterRow)
                    .where(CounterRow.name == held)
                    .values(value=CounterRow.value + granted, stamp=now)
                )
                return granted
        raise RuntimeError(f"counter {name!r} kept changing under {_CAS_TRIES} tries")

    def release(self, name: str, holder: str, count: int = 1) -> None:
        """Give back ``count`` of ``holder``'s slots (fewer if some were reclaimed meanwhile)."""
        held = _held(holder, name)
        for _ in range(_CAS_TRIES):
            with self._sessions.begin() as s:
                mine = s.scalar(select(CounterRow.value).where(CounterRow.name == held))
                back = min(count, int(mine or 0))
                if mine is None or back <= 0:
                    return
                result = s.execute(
                    update(CounterRow)
                    .where(CounterRow.name == held, CounterRow.value == mine)
                    .values(value=mine - back)
                )
                if not result.rowcount:  # type: ignore[attr-defined]
                    continue
                left = CounterRow.value - back
                s.execute(
                    update(CounterRow)
                    .where(CounterRow.name == name)
                    .values(value=case((left < 0, literal(0.0)), else_=left))
                )
                return
        raise RuntimeError(f"counter {name!r} kept changing under {_CAS_TRIES} tries")

    def renew(self, holder: str, now: float) -> None:
        """``holder`` is alive: stamp its held-slot rows."""
        with self._sessions.begin() as s:
            s.execute(
                update(CounterRow)
                .where(CounterRow.name.startswith(_held(holder, ""), autoescape=True))
                .values(stamp=now)
            )

    def reclaim(self, stale_before: float) -> int:
        """Give back the slots of holders that have not renewed since ``stale_before``.

        Returns:
            How many slots were given back.
        """
        with self._sessions.begin() as s:
            stale = s.scalars(
                select(CounterRow.name).where(
                    CounterRow.name.startswith(_HELD), CounterRow.stamp < stale_before
                )
            ).all()
        freed = 0
        for held in stale:
            with self._sessions.begin() as s:
                # Deleted only if still stale: a holder that renewed meanwhile keeps it.
                count = s.scalar(
                    delete(CounterRow)
                    .where(CounterRow.name == held, CounterRow.stamp < stale_before)
                    .returning(CounterRow.value)
                )
                if count:
                    slot = held.split("|", 2)[2]
                    left = CounterRow.value - count
                    s.execute(
                        update(CounterRow)
                        .where(CounterRow.name == slot)
                        .values(value=case((left < 0, literal(0.0)), else_=left))
                    )
                    freed += int(count)
        return freed


_HELD = "held|"


def _held(holder: str, slot: str) -> str:
    return f"{_HELD}{holder}|{slot}"
