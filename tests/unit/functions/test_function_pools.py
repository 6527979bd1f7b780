"""FunctionPool specs, the scheduler's pool signals, the hub's admission, named calls."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from aifactory.config import Settings
from aifactory.errors import BadRequest, SpecError
from aifactory.functions import FunctionsHub
from aifactory.functions import protocol as p
from aifactory.functions._scheduler import PoolEvent, Scheduler
from aifactory.functions.invoke import _arguments
from aifactory.functions.named import TARGET_PATTERN, call_named
from aifactory.specs import FunctionPool, Service, load_deployable
from aifactory.store import Store
from aifactory.tenancy import KeyAuthenticator, hash_key, issue_key

POOL = """
kind: FunctionPool
name: cpu
workers: 4
allocations: {min: 0, max: 3}
idle_to_zero: 2m
time_limit: 1h
env: {OMP_NUM_THREADS: "1"}
"""


def test_pool_spec_maps_to_the_scaling_policy() -> None:
    pool = load_deployable(POOL)
    assert isinstance(pool, FunctionPool)
    assert (pool.replicas.min, pool.replicas.max) == (0, 3)
    assert pool.autoscaling.target_concurrency == 4
    assert pool.autoscaling.idle_to_zero_s == 120
    assert pool.time_limit_s == 3600
    assert load_deployable(pool.to_document()) == pool


def test_kind_picks_the_spec_and_errors_name_the_field() -> None:
    examples = Path(__file__).parents[3] / "examples"
    assert isinstance(load_deployable((examples / "chat.yaml").read_text()), Service)
    with pytest.raises(SpecError, match=r"workers: .*greater than or equal to 1"):
        load_deployable(POOL.replace("workers: 4", "workers: 0"))
    with pytest.raises(SpecError, match="environment variable name"):
        load_deployable(POOL.replace("OMP_NUM_THREADS", "BAD NAME"))
    with pytest.raises(SpecError, match="rotation_lead"):
        load_deployable(POOL.replace("time_limit: 1h", "time_limit: 60s"))
    with pytest.raises(SpecError, match="python"):
        load_deployable(POOL + "python: relative/python\n")


def _register(scheduler: Scheduler, identity: bytes, replica: str, capacity: int = 2) -> None:
    scheduler.register(identity, {"pool": "cpu", "capacity": capacity, "replica": replica})


def _submit(scheduler: Scheduler, count: int) -> None:
    frames: list[bytes] = []
    for task_id in range(count):
        p.add_task(frames, task_id, 0.0, p.INLINE, b"x")
    scheduler.submit(b"client", "cpu", frames)


def test_scheduler_reports_demand_joins_and_losses() -> None:
    scheduler = Scheduler(max_retries=1, spill_root=None)
    _submit(scheduler, 3)
    assert scheduler.events == [PoolEvent("demand", "cpu")]
    assert "cpu" in scheduler.last_submit
    _register(scheduler, b"w1", "cpu-1")
    scheduler.dispatch()
    stats = scheduler.stats()
    assert stats.replicas == {"cpu-1": {"capacity": 2, "running": 2}}
    assert stats.pools["cpu"]["queued"] == 1
    scheduler.lose_worker(scheduler.workers[b"w1"], "missed heartbeats")
    assert [e.kind for e in scheduler.events] == ["demand", "joined", "left"]
    assert scheduler.stats().pools["cpu"]["queued"] == 3


def test_a_draining_worker_gets_no_new_tasks() -> None:
    scheduler = Scheduler(max_retries=1, spill_root=None)
    _register(scheduler, b"w1", "cpu-1")
    _register(scheduler, b"w2", "cpu-2")
    scheduler.drain("cpu-1")
    _submit(scheduler, 4)
    messages = scheduler.dispatch()
    assert [m[0] for m in messages] == [b"w2"]
    assert scheduler.stats().replicas["cpu-1"]["running"] == 0


def test_hub_admits_valid_keys_and_launched_workers_only(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.create_schema()
    key = issue_key(store, "lab").secret
    woken: list[int] = []
    hub = FunctionsHub(
        Settings(data_dir=tmp_path, functions_worker_port=0, functions_client_port=0),
        KeyAuthenticator(store),
        lambda: woken.append(1),
        lambda pool, caller: None if pool == "cpu" else f"there is no function pool {pool!r}",
    )
    assert hub.admit_client({"api_key": key, "pool": "cpu"}) is None
    assert "no function pool 'gpu'" in str(hub.admit_client({"api_key": key, "pool": "gpu"}))
    assert hub.admit_client({"api_key": hub.internal_key}) is None
    assert "not valid" in str(hub.admit_client({"api_key": "aif-forged"}))
    assert "no API key" in str(hub.admit_client({}))

    hub.expect("cpu-1", hash_key("secret-token"))
    assert hub.admit_worker({"replica": "cpu-1", "token": "secret-token"}) is None
    assert "wrong token" in str(hub.admit_worker({"replica": "cpu-1", "token": "guess"}))
    assert "not one this control plane started" in str(
        hub.admit_worker({"replica": "cpu-9", "token": "secret-token"})
    )
    hub.forget("cpu-1")
    assert hub.admit_worker({"replica": "cpu-1", "token": "secret-token"}) is not None

    async def joined_then_left() -> tuple[bool, bool]:
        hub._loop = asyncio.get_running_loop()
        hub.notify([PoolEvent("joined", "cpu", "cpu-1")])
        first = hub.joined("cpu-1")
        hub.notify([PoolEvent("left", "cpu", "cpu-1")])
        await asyncio.sleep(0)
        return first, hub.joined("cpu-1")

    assert asyncio.run(joined_then_left()) == (True, False)
    assert woken == [1, 1]


def test_named_call_returns_json_or_the_error_as_data(tmp_path: Path) -> None:
    assert json.loads(call_named("math:hypot", json.dumps({"args": [3, 4]}))) == {
        "ok": True,
        "result": 5.0,
    }
    failed = json.loads(call_named("math:sqrt", json.dumps({"args": [-1]})))
    assert failed["ok"] is False and failed["type"] == "builtins.ValueError"
    assert "math domain error" in failed["traceback"]
    missing = json.loads(call_named("no_such_module:f", json.dumps({})))
    assert missing["type"] == "builtins.ModuleNotFoundError"
    unencodable = json.loads(call_named("builtins:object", json.dumps({})))
    assert "not JSON serializable" in unencodable["message"]


@pytest.mark.parametrize("target", ["os:system", "pkg.mod:func", "pkg.mod:Class.method", "a:b"])
def test_targets_are_module_colon_attribute(target: str) -> None:
    assert TARGET_PATTERN.match(target)


@pytest.mark.parametrize(
    "target", ["os.system", "mod:", ":f", "mod:f;rm -rf /", "../mod:f", "mod:f()", "mod :f"]
)
def test_malformed_targets_are_rejected(target: str) -> None:
    assert not TARGET_PATTERN.match(target)


def test_invoke_bodies_are_args_and_kwargs_only() -> None:
    assert json.loads(_arguments({"args": [1], "kwargs": {"x": 2}})) == {
        "args": [1],
        "kwargs": {"x": 2},
    }
    with pytest.raises(BadRequest, match="unknown fields: extra"):
        _arguments({"args": [], "extra": 1})
    with pytest.raises(BadRequest):
        _arguments({"args": {"not": "a list"}})


def test_a_worker_without_the_spill_directory_gets_spilled_arguments_inline(
    tmp_path: Path,
) -> None:
    spill = tmp_path / "spill"
    spill.mkdir()
    (spill / "big.arg").write_bytes(b"A" * 100_000)
    (tmp_path / "secret").write_bytes(b"not yours")
    scheduler = Scheduler(max_retries=1, spill_root=str(spill))
    scheduler.register(b"pod", {"pool": "cpu", "capacity": 3, "spills": False})
    frames: list[bytes] = []
    for task_id, path in enumerate((spill / "big.arg", tmp_path / "secret")):
        p.add_task(frames, task_id, 0.0, p.SPILLED, os.fsencode(path))
    scheduler.submit(b"client", "cpu", frames)
    (message,) = scheduler.dispatch()
    tasks = list(p.read_tasks(message, 2))
    assert (
        [(flags, bytes(payload)[:3]) for _id, _t, flags, payload in tasks]
        == [
            (0, b"AAA"),  # read back from our spill directory, sent inline
            (p.SPILLED, os.fsencode(tmp_path / "secret")[:3]),  # a path elsewhere is never read
        ]
    )
    assert len(bytes(tasks[0][3])) == 100_000
    assert (spill / "big.arg").exists(), "kept for a retry"
