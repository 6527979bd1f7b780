"""In-flight slots held by a process that died are given back; a slow holder gives none twice."""

from __future__ import annotations

from pathlib import Path

from aifactory.store import Store


def check_slots_of_a_silent_holder_are_reclaimed(crashed: Store, survivor: Store) -> None:
    slots = survivor.counters
    assert crashed.counters.acquire("inflight:lab", 2, "gw-a", now=1000.0)
    assert crashed.counters.acquire("inflight:lab", 2, "gw-a", now=1001.0)
    assert not slots.acquire("inflight:lab", 2, "gw-b", now=1002.0), "the limit is used up"

    slots.renew("gw-b", now=1030.0)
    assert slots.reclaim(stale_before=1000.0) == 0, "gw-a renewed after that"
    crashed.counters.renew("gw-a", now=1040.0)
    assert slots.reclaim(stale_before=1040.0) == 0, "not silent yet"

    # gw-a stops renewing; a minute later its slots come back.
    assert slots.reclaim(stale_before=1100.0) == 2
    assert slots.value("inflight:lab") == 0
    assert slots.acquire("inflight:lab", 2, "gw-b", now=1101.0)
    # gw-a was only slow: its late releases give nothing back twice.
    crashed.counters.release("inflight:lab", "gw-a")
    crashed.counters.release("inflight:lab", "gw-a")
    assert slots.value("inflight:lab") == 1
    slots.release("inflight:lab", "gw-b")
    assert slots.value("inflight:lab") == 0


def test_on_one_sqlite_file_shared_by_two_stores(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    first, second = Store(url), Store(url)
    first.create_schema()
    check_slots_of_a_silent_holder_are_reclaimed(first, second)
    first.close()
    second.close()
