"""The local backend with real processes (no engine needed)."""

import asyncio
import sys
import time
from pathlib import Path

import pytest

from aifactory.backends import AllocationRequest, AllocationState, load_backend
from aifactory.backends.local import LocalBackend
from aifactory.config import load_settings
from aifactory.errors import BackendError, CapacityExceeded
from aifactory.specs import Resources

SLEEPER = (sys.executable, "-c", "import time, sys; print('up', flush=True); time.sleep(60)")


def _request(
    tmp_path: Path, argv: tuple[str, ...] = SLEEPER, **kwargs: object
) -> AllocationRequest:
    fields: dict[str, object] = {
        "replica_id": "r1",
        "service": "svc",
        "argv": argv,
        "resources": Resources(cpus=1),
        "time_limit_s": None,
        "log_path": tmp_path / "logs" / "r1.log",
    }
    fields.update(kwargs)
    return AllocationRequest(**fields)  # type: ignore[arg-type]


async def _wait_for(backend: object, handle: str, state: AllocationState) -> float:
    started = time.monotonic()
    for _ in range(200):
        status = (await backend.status([handle]))[handle]  # type: ignore[attr-defined]
        if status.state is state:
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"never reached {state}: {status}")


def test_run_log_and_cancel(tmp_path: Path) -> None:
    async def scenario() -> None:
        backend = LocalBackend(cpus=2)
        handle = await backend.submit(_request(tmp_path))
        await _wait_for(backend, handle, AllocationState.RUNNING)
        await asyncio.sleep(0.5)
        await backend.cancel(handle)
        await _wait_for(backend, handle, AllocationState.CANCELLED)
        assert "up" in (tmp_path / "logs" / "r1.log").read_text()
        await backend.aclose()

    asyncio.run(scenario())


def test_crash_is_a_failure_with_the_exit_code(tmp_path: Path) -> None:
    async def scenario() -> None:
        backend = LocalBackend(cpus=2)
        handle = await backend.submit(
            _request(tmp_path, argv=(sys.executable, "-c", "raise SystemExit(4)"))
        )
        await _wait_for(backend, handle, AllocationState.FAILED)
        status = (await backend.status([handle]))[handle]
        assert status.exit_code == 4 and status.reason == "exited with code 4"
        await backend.aclose()

    asyncio.run(scenario())


def test_time_limit_ends_the_allocation(tmp_path: Path) -> None:
    async def scenario() -> None:
        backend = LocalBackend(cpus=2)
        handle = await backend.submit(_request(tmp_path, time_limit_s=0.5))
        waited = await _wait_for(backend, handle, AllocationState.TIMEOUT)
        assert waited < 5
        await backend.aclose()

    asyncio.run(scenario())


def test_cpu_budget_is_enforced(tmp_path: Path) -> None:
    async def scenario() -> None:
        backend = LocalBackend(cpus=2)
        first = await backend.submit(_request(tmp_path, resources=Resources(cpus=2)))
        with pytest.raises(CapacityExceeded, match="needs 1 CPUs, 0 of 2 free"):
            await backend.submit(_request(tmp_path))
        with pytest.raises(BackendError, match="no GPUs"):
            await backend.submit(_request(tmp_path, resources=Resources(gpus=1)))
        await backend.cancel(first)
        second = await backend.submit(_request(tmp_path))
        await backend.cancel(second)
        await backend.aclose()

    asyncio.run(scenario())


def test_render_quotes_hostile_values(tmp_path: Path) -> None:
    backend = LocalBackend()
    hostile = "x; rm -rf ~"
    text = backend.render(_request(tmp_path, argv=("echo", hostile), env={"V": hostile}))
    assert "'x; rm -rf ~'" in text and "V='x; rm -rf ~'" in text


def test_unknown_backend_names_the_choices() -> None:
    with pytest.raises(Exception, match=r"backend 'nomad' is not available.*local"):
        load_backend("nomad", load_settings(), "ab12cd34")
