"""Shared test setup.

Under the README's test command (AIFACTORY_REQUIRE_INTEGRATION=1, set by
scripts/test.sh and CI) a skipped test is a failure: integration tests must
run against the real engine there, never be silently skipped.
"""

from __future__ import annotations

import os

import pytest

REQUIRE_INTEGRATION = os.environ.get("AIFACTORY_REQUIRE_INTEGRATION") == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_INTEGRATION and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"skipped under AIFACTORY_REQUIRE_INTEGRATION=1: {report.longrepr}"
