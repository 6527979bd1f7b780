"""Shared test setup.

Under the README's test command (AIFACTORY_REQUIRE_INTEGRATION=1, set by
scripts/test.sh and CI) a skipped test is a failure: integration tests must
run against the real engine there, never be silently skipped.
"""

from __future__ import annotations

import os

import pytest

from unix_users import ensure_users, make_traversable

REQUIRE_INTEGRATION = os.environ.get("AIFACTORY_REQUIRE_INTEGRATION") == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_INTEGRATION and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"skipped under AIFACTORY_REQUIRE_INTEGRATION=1: {report.longrepr}"


def pytest_sessionstart(session: pytest.Session) -> None:
    # Workloads run as other Unix users than the tests (their tenants'): those
    # users must exist, and reach the data directories under pytest's temp folder.
    ensure_users()


@pytest.fixture(scope="session", autouse=True)
def _traversable_temp(tmp_path_factory: pytest.TempPathFactory) -> None:
    if os.getuid() == 0:
        make_traversable(tmp_path_factory.getbasetemp())
