"""Function pools never mix tenants: code from the pool's tenant only, JSON across tenants."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aifactory.errors import Forbidden, NotFound
from aifactory.functions import protocol as p
from aifactory.functions._child import run_task
from aifactory.functions.access import check_may_call, code_refusal, pool_owner
from aifactory.functions.named import call_named
from aifactory.store import FunctionRow, Store
from aifactory.tenancy import KeyAuthenticator, Principal, issue_key


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.create_schema()
    physics = store.ensure_tenant("physics")
    store.add_service("cpu", {"kind": "FunctionPool", "name": "cpu"}, physics)
    private = {"kind": "FunctionPool", "name": "secret", "private": True}
    store.add_service("secret", private, physics)
    return store


def _principal(store: Store, tenant: str, role: str = "member") -> Principal:
    key = issue_key(store, tenant, role)  # type: ignore[arg-type]
    principal = KeyAuthenticator(store).authenticate_blocking(key.secret)
    assert principal is not None
    return principal


def test_only_keys_of_the_pools_tenant_submit_code(store: Store) -> None:
    assert code_refusal(store, "cpu", _principal(store, "physics")) is None
    chemist = str(code_refusal(store, "cpu", _principal(store, "chemistry")))
    assert "pool 'cpu' belongs to tenant 'physics'" in chemist
    assert "named functions it shares over HTTP" in chemist
    admin = str(code_refusal(store, "cpu", _principal(store, "admin", "admin")))
    assert "submit code with a key of 'physics'" in admin
    assert "aif deploy pool.yaml --tenant admin" in admin


def test_a_private_pool_does_not_exist_for_other_tenants(store: Store) -> None:
    chemist = _principal(store, "chemistry")
    assert code_refusal(store, "secret", chemist) == "there is no function pool 'secret'"
    assert code_refusal(store, "nowhere", chemist) == "there is no function pool 'nowhere'"
    admin = code_refusal(store, "secret", _principal(store, "admin", "admin"))
    assert "belongs to tenant 'physics'" in str(admin), "an administrator sees it, runs no code"
    assert code_refusal(store, "secret", _principal(store, "physics")) is None


def test_named_functions_answer_other_tenants_only_when_shared(store: Store) -> None:
    owner = pool_owner(store, "cpu")
    physics, chemist = _principal(store, "physics"), _principal(store, "chemistry")
    admin = _principal(store, "admin", "admin")
    function = FunctionRow(name="words", target="m:f", pool="cpu", shared=False)
    check_may_call(owner, function, physics)
    with pytest.raises(NotFound):
        check_may_call(owner, function, chemist)
    with pytest.raises(Forbidden, match="belongs to tenant 'physics', which has not shared it"):
        check_may_call(owner, function, admin)
    function.shared = True
    check_may_call(owner, function, chemist)
    check_may_call(owner, function, admin)
    with pytest.raises(NotFound):  # a private pool's functions are never shared
        check_may_call(pool_owner(store, "secret"), function, chemist)


def _text_task(fn: object, *args: object) -> bytes:
    payload = p.dump_call(fn, args, {})  # type: ignore[arg-type]
    return p.TASK_HEADER.pack(7, 0.0, p.TEXT_RESULT | p.INLINE) + payload


def test_a_named_calls_result_leaves_the_worker_as_json_text_never_pickled(
    tmp_path: Path,
) -> None:
    big = json.dumps({"args": ["x" * 5000]})
    message = run_task(
        _text_task(call_named, "builtins:str", big), p.LoadedFunctions(), tmp_path, 100
    )
    task_id, status, flags = p.RESULT_HEADER.unpack_from(message)
    body = message[p.RESULT_HEADER.size :]
    assert (task_id, status, flags & p.SPILLED) == (7, p.STATUS_OK, 0)
    assert json.loads(body) == {"ok": True, "result": "x" * 5000}
    assert list(tmp_path.iterdir()) == [], "a text result is never spilled, whatever its size"


def test_a_text_call_that_returns_no_str_fails_with_text(tmp_path: Path) -> None:
    message = run_task(_text_task(dict), p.LoadedFunctions(), None, 1 << 20)
    _, status, _ = p.RESULT_HEADER.unpack_from(message)
    assert status == p.STATUS_ERROR
    assert "TypeError: a text call must return str, not dict" in message.decode(errors="replace")
