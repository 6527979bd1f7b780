"""Shared counters for limits: token buckets, budgets and in-flight slots.

Each operation is one conditional UPDATE (plus an INSERT the first time a
counter is used), so processes sharing PostgreSQL (or one SQLite file) can
race on the same counter without spending anything twice: the database
serializes the UPDATEs on the row and each sees the other's result.

A bucket's level refills at ``rate`` per second up to ``capacity``; the
refill is computed inside the UPDATE from the stored ``stamp``::

    level' = min(capacity, level + (now - stamp) * rate)
    take(cost):  if level' >= cost: level = level' - cost, stamp = now

An in-flight slot is also recorded as held by the process that took it (a
``held|HOLDER|SLOT`` row, stamped by the holder's ``renew``). A process
that dies holding slots (``kill -9``, a lost node) stops renewing, and
``reclaim`` gives its slots back once its rows are stale, so a crashed
gateway cannot keep a tenant's concurrency limit used up. A holder that was
only slow finds its rows gone and gives nothing back twice.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, case, delete, insert, literal, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from aifactory.store.tables import CounterRow

__all__ = ["Counters"]


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

    def take(self, name: str, cost: float, capacity: float, rate: float, now: float) -> bool:
        """Take ``cost`` from the bucket if it holds that much after refilling."""
        self._ensure(name, capacity, now)
        refilled = _refilled(capacity, rate, now)
        with self._sessions.begin() as s:
            result = s.execute(
                update(CounterRow)
                .where(CounterRow.name == name, refilled >= cost)
                .values(value=refilled - cost, stamp=now)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def spend(self, name: str, amount: float, capacity: float, rate: float, now: float) -> None:
        """Take ``amount`` from the bucket even if that leaves it below zero."""
        self._ensure(name, capacity, now)
        refilled = _refilled(capacity, rate, now)
        with self._sessions.begin() as s:
            s.execute(
                update(CounterRow)
                .where(CounterRow.name == name)
                .values(value=refilled - amount, stamp=now)
            )

    def level(self, name: str, capacity: float, rate: float, now: float) -> float:
        """The bucket's level now, refilled (``capacity`` for a bucket never used)."""
        with self._sessions.begin() as s:
            row = s.get(CounterRow, name)
            if row is None:
                return capacity
            return min(capacity, row.value + max(0.0, now - row.stamp) * rate)

    def add(self, name: str, amount: float) -> None:
        """Add ``amount`` to a plain counter (a budget's spend)."""
        self._ensure(name, 0.0, 0.0)
        with self._sessions.begin() as s:
            s.execute(
                update(CounterRow)
                .where(CounterRow.name == name)
                .values(value=CounterRow.value + amount)
            )

    def value(self, name: str) -> float:
        """A plain counter's value (0 if never used)."""
        with self._sessions.begin() as s:
            found = s.scalar(select(CounterRow.value).where(CounterRow.name == name))
            return float(found or 0.0)

    def acquire(self, name: str, limit: int, holder: str, now: float) -> bool:
        """Take one slot if fewer than ``limit`` are taken, recorded as ``holder``'s."""
        held = _held(holder, name)
        self._ensure(name, 0.0, 0.0)
        self._ensure(held, 0.0, now)
        with self._sessions.begin() as s:
            result = s.execute(
                update(CounterRow)
                .where(CounterRow.name == name, CounterRow.value < limit)
                .values(value=CounterRow.value + 1)
            )
            if not result.rowcount:  # type: ignore[attr-defined]
                return False
            s.execute(
                update(CounterRow)
                .where(CounterRow.name == held)
                .values(value=CounterRow.value + 1, stamp=now)
            )
            return True

    def release(self, name: str, holder: str) -> None:
        """Give back one of ``holder``'s slots (none if they were reclaimed meanwhile)."""
        with self._sessions.begin() as s:
            mine = s.execute(
                update(CounterRow)
                .where(CounterRow.name == _held(holder, name), CounterRow.value > 0)
                .values(value=CounterRow.value - 1)
            )
            if mine.rowcount:  # type: ignore[attr-defined]
                s.execute(
                    update(CounterRow)
                    .where(CounterRow.name == name, CounterRow.value > 0)
                    .values(value=CounterRow.value - 1)
                )

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


def _refilled(capacity: float, rate: float, now: float) -> ColumnElement[float]:
    grown = CounterRow.value + case(
        (CounterRow.stamp < now, (literal(now) - CounterRow.stamp) * rate), else_=0.0
    )
    return case((grown > capacity, literal(capacity)), else_=grown)
