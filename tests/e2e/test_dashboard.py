"""The dashboard in a real browser against a real control plane and engine.

The tests run in file order and share one server: the chat service deployed
by the fixture becomes ready in the first tests, later ones use it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from integration.server import Server

READY_TIMEOUT_MS = 180_000
LAPTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def keys(server: Server) -> dict[str, str]:
    """A user key for each of two tenants."""
    made = {}
    for tenant in ("physics", "chemistry"):
        response = server.admin.post("/api/keys", json={"tenant": tenant, "name": "e2e"})
        assert response.status_code == 201, response.text
        made[tenant] = response.json()["key"]
    return made


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=LAPTOP)  # type: ignore[arg-type]
    yield context.new_page()
    context.close()


def sign_in(page: Page, server: Server, key: str, path: str = "/") -> None:
    page.goto(server.url + path)
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("navigation", name="Main")).to_be_visible()


def count(page: Page, selector: str) -> int:
    return int(page.locator(selector).inner_text().replace(",", ""))


def test_sign_in_refuses_a_wrong_key_then_accepts_the_admin_key(server: Server, page: Page) -> None:
    page.goto(server.url + "/")
    page.get_by_label("API key").fill("aif-not-a-key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("not accepted")
    expect(page.get_by_role("navigation", name="Main")).to_be_hidden()
    sign_in(page, server, server.admin_key)
    expect(page.locator("#who-label")).to_have_text("admin · admin")
    assert server.admin_key not in page.url


def test_the_deployed_service_becomes_ready_on_the_overview(
    server: Server, page: Page, screenshots: Path
) -> None:
    sign_in(page, server, server.admin_key)
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    expect(page.get_by_role("link", name="chat", exact=True)).to_be_visible()
    expect(page.locator('[data-service-ready="chat"]')).to_have_text("1", timeout=READY_TIMEOUT_MS)
    expect(page.locator("#replica-counts")).to_contain_text("ready")
    expect(page.locator("#replica-counts")).to_contain_text("local")
    expect(page.get_by_role("img", name=re.compile(r"^Requests\/s, last hour"))).to_be_visible()


def test_the_service_page_example_request_moves_the_counters(
    server: Server, page: Page, screenshots: Path
) -> None:
    sign_in(page, server, server.admin_key, "/#/services/chat")
    expect(page.locator("#service-ready")).to_have_text("1 / 1", timeout=READY_TIMEOUT_MS)
    curl = page.locator("#example-curl")
    expect(curl).to_contain_text(f"{server.url}/v1/chat/completions")
    expect(curl).to_contain_text('"model": "smollm2-135m-instruct"')
    expect(page.locator("#example-python")).to_contain_text(f'base_url="{server.url}/v1",')
    before = count(page, "#service-requests")
    tokens_before = count(page, "#service-tokens")
    page.get_by_role("button", name="Send this request").click()
    expect(page.locator("#try-output")).to_contain_text("tokens", timeout=60_000)
    expect(page.locator("#service-requests")).to_have_text(str(before + 1))
    assert count(page, "#service-tokens") > tokens_before
    expect(page.locator("#replicas")).to_contain_text("ready")
    expect(page.locator("#log")).not_to_have_text("…")
    page.screenshot(path=screenshots / "service.png", full_page=True)


def test_the_key_never_travels_in_a_url(server: Server, browser: Browser) -> None:
    context = browser.new_context(viewport=LAPTOP)  # type: ignore[arg-type]
    page = context.new_page()
    urls: list[str] = []
    authorized: list[str] = []
    page.on("request", lambda r: urls.append(r.url))
    page.on(
        "request",
        lambda r: authorized.append(r.url) if "authorization" in r.headers else None,
    )
    sign_in(page, server, server.admin_key)
    for route in ("#/usage", "#/functions", "#/jobs", "#/buckets", "#/services/chat"):
        page.goto(f"{server.url}/{route}")
        expect(page.locator("#view h1")).to_be_visible()
    page.reload()  # the key survives a reload of the tab (sessionStorage)
    expect(page.locator("#who-label")).to_have_text("admin · admin")
    context.close()
    assert urls and not [u for u in urls if server.admin_key in u]
    assert any("/api/dashboard/overview" in u for u in authorized)


def test_a_user_key_sees_only_its_own_tenant(
    server: Server, page: Page, keys: dict[str, str], screenshots: Path
) -> None:
    for tenant in ("physics", "chemistry"):
        reply = httpx.post(
            f"{server.url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {keys[tenant]}"},
            json={
                "model": "chat",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 4,
            },
            timeout=60,
        )
        assert reply.status_code == 200, reply.text
    as_admin = {"Authorization": f"Bearer {server.admin_key}"}
    assert {"physics", "chemistry"} <= wait_for_usage(server, as_admin, {"physics", "chemistry"})
    as_physics = {"Authorization": f"Bearer {keys['physics']}"}
    assert wait_for_usage(server, as_physics, {"physics"}) == {"physics"}
    csv = httpx.get(f"{server.url}/api/dashboard/usage?format=csv", headers=as_physics).text
    assert "physics" in csv and "chemistry" not in csv
    for path, status in (
        ("/api/keys", 403),
        ("/api/audit", 403),
        ("/api/services/chat/logs", 404),  # the admin's service: not physics's to read
    ):
        assert httpx.get(server.url + path, headers=as_physics).status_code == status, path
    assert httpx.get(f"{server.url}/api/jobs", headers=as_physics).json() == {"jobs": []}
    ledger = httpx.get(f"{server.url}/api/usage", headers=as_physics).json()["usage"]
    assert {row["tenant"] for row in ledger} == {"physics"}, "the ledger API is tenant-scoped"
    other = httpx.get(f"{server.url}/api/usage?tenant=chemistry", headers=as_physics)
    assert other.status_code == 404

    sign_in(page, server, keys["physics"], "/#/usage")
    expect(page.get_by_role("heading", name="Usage of tenant physics")).to_be_visible()
    expect(page.locator("#usage-table")).to_contain_text("physics")
    expect(page.locator("#usage-table")).not_to_contain_text("chemistry")
    expect(page.locator("#keys")).to_have_count(0)
    with page.expect_download() as download:
        page.get_by_role("button", name="Export CSV").click()
    exported = Path(download.value.path()).read_text()
    assert exported.startswith("start,tenant,model,") and "chemistry" not in exported
    page.goto(f"{server.url}/#/jobs")
    expect(page.locator("#jobs")).to_contain_text("No jobs yet")


def test_a_user_key_sees_a_shared_service_by_name_and_models(
    server: Server, page: Page, keys: dict[str, str]
) -> None:
    sign_in(page, server, keys["physics"])
    expect(page.get_by_role("link", name="chat", exact=True)).to_be_visible()
    expect(page.locator('[data-service-ready="chat"]')).to_have_text("\u2013")
    page.goto(f"{server.url}/#/services/chat")
    expect(page.locator("#service-models")).to_have_text("smollm2-135m-instruct")
    expect(page.locator("#try-it")).to_be_visible()
    expect(page.locator("#live")).not_to_contain_text("failed")


def wait_for_usage(server: Server, headers: dict[str, str], tenants: set[str]) -> set[str]:
    """The tenants in the caller's usage, once ``tenants`` are all there (or after 10 s)."""
    deadline = time.monotonic() + 10  # the ledger writes in batches every second
    seen: set[str] = set()
    while time.monotonic() < deadline and not tenants <= seen:
        time.sleep(0.3)
        rows = httpx.get(f"{server.url}/api/dashboard/usage", headers=headers).json()["buckets"]
        seen = {row["tenant"] for row in rows}
    return seen


def test_admin_sees_every_tenant_and_the_keys(
    server: Server, page: Page, keys: dict[str, str], screenshots: Path
) -> None:
    sign_in(page, server, server.admin_key, "/#/usage")
    expect(page.locator("#usage-table")).to_contain_text("chemistry")
    expect(page.locator("#usage-table")).to_contain_text("physics")
    expect(page.locator("#keys")).to_contain_text("chemistry")
    expect(page.get_by_role("img", name=re.compile("^Tokens per 1 min"))).to_be_visible()
    page.screenshot(path=screenshots / "usage.png", full_page=True)


def test_the_overview_charts_show_the_traffic(
    server: Server, page: Page, screenshots: Path
) -> None:
    sign_in(page, server, server.admin_key)
    expect(page.locator("#stat-requests")).to_have_text("3")  # try-it and two tenants
    expect(page.locator("#stat-errors")).to_have_text("0")
    # The chart's peak is above zero once the sample holding the requests is drawn.
    peak = re.compile(r"^Requests\/s, last hour: .*peak (?!0\/s)")
    expect(page.get_by_role("img", name=peak)).to_be_visible(timeout=15_000)
    page.screenshot(path=screenshots / "overview.png", full_page=True)


def test_jobs_functions_and_buckets_pages(server: Server, page: Page, screenshots: Path) -> None:
    sign_in(page, server, server.admin_key, "/#/jobs")
    expect(page.locator("#jobs")).to_contain_text("No jobs yet")
    page.goto(f"{server.url}/#/functions")
    expect(page.locator("#pools")).to_contain_text("No function pools")
    expect(page.locator("#calls")).to_contain_text("Every tenant's calls")
    page.screenshot(path=screenshots / "functions.png", full_page=True)
    page.goto(f"{server.url}/#/buckets")
    expect(page.locator("#buckets")).to_contain_text("No buckets yet.")


def test_readable_on_a_phone_and_usable_by_keyboard(
    server: Server, browser: Browser, screenshots: Path
) -> None:
    context = browser.new_context(viewport=PHONE, is_mobile=True)  # type: ignore[arg-type]
    page = context.new_page()
    page.goto(server.url + "/")
    expect(page.get_by_label("API key")).to_be_focused()
    page.keyboard.type(server.admin_key)
    page.keyboard.press("Enter")
    expect(page.locator('[data-service-ready="chat"]')).to_have_text("1")
    page.goto(f"{server.url}/#/services/chat")
    page.reload()  # still signed in; focus starts at the top of the page
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()
    assert page.url.endswith("#/services/chat")  # skipping does not leave the page
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow}px wider than a phone"
    page.screenshot(path=screenshots / "service-phone.png", full_page=True)
    context.close()


def test_request_ids_and_metric_names(server: Server) -> None:
    echoed = httpx.get(f"{server.url}/v1/models", headers={"X-Request-Id": "trace-42"})
    assert echoed.headers["x-request-id"] == "trace-42"
    refused = httpx.get(f"{server.url}/api/keys", headers={"X-Request-Id": "bad id <script>"})
    assert refused.status_code == 401
    assert re.fullmatch(r"[0-9a-f]{16}", refused.headers["x-request-id"])
    page = httpx.get(f"{server.url}/")
    assert (
        page.headers["x-request-id"]
        and "script-src 'self'" in page.headers["content-security-policy"]
    )
    text = server.admin.get("/metrics").text
    for name in (
        'aifactory_requests_total{endpoint="chat",model="smollm2-135m-instruct",status="200"}',
        "aifactory_request_duration_seconds_bucket",
        'aifactory_replicas{backend="local",service="chat",state="ready"} 1.0',
        'aifactory_tokens_total{kind="completion",model="smollm2-135m-instruct"}',
        "aifactory_queued_requests",
    ):
        assert name in text, name
