"""The catalog page in a real browser: search with facets, an entry's files, versions,
DCAT-AP and Croissant, its lineage, and deleting it; another tenant sees none of it.

A control plane of its own (no model deployed), with S3 on a known port so the test
puts files with boto3 and registers them through the API, as a user would with `aif`.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, expect

from integration.server import Server, free_port, start_server
from integration.waiting import wait_until

from .test_buckets import LAPTOP, s3_of, sign_in

BUCKET = "physics-data"


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, Any]]]:
    """A control plane whose physics tenant registered a dataset and a model."""
    port = free_port()
    server = start_server(tmp_path_factory.mktemp("aifactory-catalog"), objects_port=str(port))
    keys = {
        t: server.admin.post("/api/keys", json={"tenant": t}).json()
        for t in ("physics", "chemistry")
    }
    s3 = s3_of(f"http://127.0.0.1:{port}", keys["physics"])
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key="wiki/train.jsonl", Body=b'{"text": "a"}\n{"text": "b"}\n')
    s3.put_object(Bucket=BUCKET, Key="tiny/model.gguf", Body=b"GGUF tiny")
    http = httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {keys['physics']['key']}"}
    )
    for body in (
        {"prefix": "wiki", "title": "Wiki sentences", "license": "CC-BY-4.0", "keywords": ["nlp"],
         "description": "Sentences, one a line."},
        {"prefix": "tiny", "title": "Tiny model", "license": "Apache-2.0", "kind": "model"},
    ):  # fmt: skip
        assert http.post("/api/catalog", json={"bucket": BUCKET, **body}).status_code == 201
    s3.get_object(Bucket=BUCKET, Key="wiki/train.jsonl")["Body"].read()  # an S3 read: lineage
    wait_until(
        lambda: http.get("/api/catalog/physics/wiki/lineage").json()["used_by"],
        timeout_s=10,
        what="the S3 read in the lineage (written once a second)",
    )
    yield server, keys
    assert server.stop() in (0, -signal.SIGTERM), server.log_tail()


def test_search_facets_and_an_entrys_page(
    catalog: tuple[Server, dict[str, Any]], browser: Browser, screenshots: Path
) -> None:
    server, keys = catalog
    context = browser.new_context(viewport=LAPTOP)  # type: ignore[arg-type]
    page = context.new_page()
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))
    sign_in(page, server, keys["physics"]["key"], "/#/catalog")
    results = page.locator("#catalog-results")
    expect(results).to_contain_text("physics/wiki")
    expect(results).to_contain_text("physics/tiny")

    page.get_by_role("link", name="model (1)").click()
    expect(results.get_by_role("link", name="physics/tiny")).to_be_visible()
    expect(results).not_to_contain_text("physics/wiki")
    page.get_by_role("link", name="model (1) ✕").click()
    # The page is drawn anew for the new address: type into the new page's box, not the old's.
    expect(results).to_contain_text("physics/wiki")
    page.get_by_label("Search datasets and models").fill("sentences")
    page.get_by_role("button", name="Search").click()
    expect(results.get_by_role("link", name="physics/wiki")).to_be_visible()
    expect(results).not_to_contain_text("physics/tiny")
    page.screenshot(path=screenshots / "catalog.png", full_page=True)

    results.get_by_role("link", name="physics/wiki").click()
    expect(page.get_by_role("heading", name="Wiki sentences")).to_be_visible()
    expect(page.locator("#entry-license")).to_have_text("CC-BY-4.0")
    expect(page.get_by_role("row").filter(has_text="train.jsonl")).to_contain_text("28 B")
    page.get_by_role("button", name="DCAT-AP (JSON-LD)").click()
    expect(page.locator("#entry-metadata")).to_contain_text("dcat:Dataset")
    page.get_by_role("button", name="Croissant (JSON-LD)").click()
    # The server imports mlcroissant (and pandas) on first use: seconds on a busy machine.
    expect(page.locator("#entry-metadata")).to_contain_text("cr:FileObject", timeout=60_000)
    expect(page.locator("#lineage")).to_contain_text("prov:used")
    expect(page.locator("#lineage")).to_contain_text("s3")
    page.screenshot(path=screenshots / "catalog-entry.png", full_page=True)

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete physics/wiki").click()
    expect(page.get_by_role("heading", name="Data catalog")).to_be_visible()
    expect(results).not_to_contain_text("physics/wiki")
    context.close()
    assert not [u for u in urls if keys["physics"]["key"] in u], "the API key travelled in a URL"


def test_another_tenant_sees_no_private_entry(
    catalog: tuple[Server, dict[str, Any]], browser: Browser
) -> None:
    server, keys = catalog
    context = browser.new_context(viewport=LAPTOP)  # type: ignore[arg-type]
    page = context.new_page()
    sign_in(page, server, keys["chemistry"]["key"], "/#/catalog")
    expect(page.locator("#catalog-results")).to_contain_text("No entry matches")
    page.goto(f"{server.url}/#/catalog/physics/tiny")
    expect(page.get_by_role("alert")).to_contain_text("physics/tiny does not exist")
    context.close()
    assert json.loads(httpx.get(f"{server.url}/api/catalog/physics/tiny/lineage").text)["error"]
