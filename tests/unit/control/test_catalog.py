"""The service catalog: a stored spec is read and parsed once per change, not once per tick."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from aifactory.control.accounts import TenantAccounts
from aifactory.control.catalog import ServiceCatalog
from aifactory.control.rotation import spec_fingerprint
from aifactory.identity import Privilege
from aifactory.specs import load_service
from aifactory.store import Store
from aifactory.tenancy import TenantIdentities

SPEC = "name: {name}\nmodels: [{name}-model]\nengine: {{type: llama.cpp, model: x}}\n"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.create_schema()
    yield store
    store.close()


def _document(name: str, **changes: object) -> dict[str, object]:
    return {**load_service(SPEC.format(name=name)).to_document(), **changes}


def test_unchanged_services_keep_their_parsed_entries(store: Store) -> None:
    store.add_service("a", _document("a"), None)
    store.add_service("b", _document("b"), None)
    catalog = ServiceCatalog(store)
    first = catalog.refresh()
    assert [e.name for e in first.entries] == ["a", "b"]
    assert first.entries[0].fingerprint == spec_fingerprint(_document("a"))
    again = catalog.refresh()
    assert again is first, "nothing changed: no new generation, no parsing"


def test_a_row_written_again_with_the_same_document_keeps_its_parsed_spec(store: Store) -> None:
    store.add_service("a", _document("a"), None)
    catalog = ServiceCatalog(store)
    first = catalog.refresh().entries[0]
    store.set_service_spec("a", _document("a"))  # same document, new updated_at
    again = catalog.refresh().entries[0]
    assert again is not first, "the row moved, so it was read again"
    assert again.spec is first.spec, "same fingerprint: not parsed again"
    store.set_service_spec("a", _document("a", private=True))
    changed = catalog.refresh().entries[0]
    assert changed.spec is not first.spec and changed.spec is not None and changed.spec.private


def test_a_changed_spec_a_status_and_a_removal_are_seen(store: Store) -> None:
    store.add_service("a", _document("a"), None)
    store.add_service("b", _document("b"), None)
    catalog = ServiceCatalog(store)
    first = catalog.refresh()
    store.set_service_spec("a", _document("a", private=True))
    changed = catalog.refresh()
    assert changed.generation == first.generation + 1
    a, b = changed.entries
    assert a.spec is not None and a.spec.private and a is not first.entries[0]
    assert b is first.entries[1], "the unchanged service is not parsed again"
    store.set_service_status("b", "deleting")
    deleting = catalog.refresh().entries[1]
    assert deleting.status == "deleting" and deleting.spec is None
    store.remove_service("b")
    assert [e.name for e in catalog.refresh().entries] == ["a"]


def test_an_invalid_stored_spec_has_no_spec_but_stays_listed(store: Store) -> None:
    store.add_service("bad", {"kind": "Service", "name": "bad"}, None)
    (entry,) = ServiceCatalog(store).refresh().entries
    assert entry.spec is None and entry.status == "active"


class _CountingStore:
    def __init__(self, store: Store) -> None:
        self._store = store
        self.reads = 0

    def tenants(self) -> object:
        self.reads += 1
        return self._store.tenants()


def _identities() -> TenantIdentities:
    return TenantIdentities(Privilege("single-user", Path("/nonexistent")), "aif-workload")


def test_tenants_are_read_again_only_when_owners_change(store: Store) -> None:
    alice = store.ensure_tenant("alice")
    counting = _CountingStore(store)
    accounts = TenantAccounts(counting, None, _identities())  # type: ignore[arg-type]
    accounts.refresh({"a": alice})
    accounts.refresh({"a": alice})
    assert counting.reads == 1
    accounts.refresh({"a": alice, "b": alice})
    assert counting.reads == 2
    owner = accounts.owner("b")
    assert owner is not None and owner.name == "alice"
    accounts.refresh({"a": alice, "b": alice}, force=True)
    assert counting.reads == 3
