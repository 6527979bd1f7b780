"""The buckets page in a real browser: create, upload, browse, download, delete; S3 sees the same.

A control plane of its own (no model deployed), with S3 on a known port so
boto3 can check the page's work with a user key's S3 credentials.
"""

from __future__ import annotations

import hashlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.exceptions import ClientError
from playwright.sync_api import Browser, Page, expect

from integration.server import Server, free_port, start_server

LAPTOP = {"width": 1280, "height": 860}
BUCKET = "physics-data"


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    """A control plane and its S3 endpoint."""
    port = free_port()
    server = start_server(tmp_path_factory.mktemp("aifactory-buckets"), objects_port=str(port))
    yield server, f"http://127.0.0.1:{port}"
    assert server.stop() in (0, -signal.SIGTERM), server.log_tail()


@pytest.fixture(scope="module")
def tenants(storage: tuple[Server, str]) -> dict[str, dict[str, Any]]:
    """A user key, with its S3 pair, for each of two tenants."""
    server, _ = storage
    made = {}
    for tenant in ("physics", "chemistry"):
        response = server.admin.post("/api/keys", json={"tenant": tenant, "name": "e2e"})
        assert response.status_code == 201, response.text
        made[tenant] = response.json()
    return made


def s3_of(endpoint: str, issued: dict[str, Any]) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=issued["s3_access_key_id"],
        aws_secret_access_key=issued["s3_secret_access_key"],
        region_name="us-east-1",
    )


def sign_in(page: Page, server: Server, key: str, path: str) -> None:
    page.goto(server.url + path)
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("navigation", name="Main")).to_be_visible()


def test_upload_and_download_a_file_in_a_bucket(
    storage: tuple[Server, str],
    tenants: dict[str, dict[str, Any]],
    browser: Browser,
    screenshots: Path,
) -> None:
    server, endpoint = storage
    physics = s3_of(endpoint, tenants["physics"])
    key = tenants["physics"]["key"]
    context = browser.new_context(viewport=LAPTOP, accept_downloads=True)  # type: ignore[arg-type]
    page = context.new_page()
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))

    sign_in(page, server, key, "/#/buckets")
    expect(page.locator("#buckets")).to_contain_text("No buckets yet.")
    page.get_by_label("New bucket name").fill(BUCKET)
    page.get_by_role("button", name="Create bucket").click()
    expect(page.get_by_role("heading", name=f"Bucket {BUCKET}")).to_be_visible()
    expect(page.locator("#objects")).to_contain_text("This bucket is empty")

    data = os.urandom(300 * 1024) + "née, the end\n".encode()
    page.get_by_label(f"Upload a file to {BUCKET}/").set_input_files(
        files=[{"name": "spectrum.bin", "mimeType": "application/x-spectrum", "buffer": data}]
    )
    page.get_by_role("button", name="Upload", exact=True).click()
    etag = f'"{hashlib.md5(data).hexdigest()}"'
    expect(page.locator("#upload-status")).to_contain_text("Uploaded spectrum.bin (300.0 KiB")
    row = page.get_by_role("row").filter(has_text="spectrum.bin")
    expect(row).to_contain_text(etag)

    # The page posted a form the API signed straight to S3 (POST Object), not through the API.
    assert f"{endpoint}/{BUCKET}" in urls
    assert not [u for u in urls if u.endswith("object?key=spectrum.bin")]

    # The same object through S3: same bytes, same ETag, same content type.
    got = physics.get_object(Bucket=BUCKET, Key="spectrum.bin")
    assert got["Body"].read() == data
    assert got["ETag"] == etag and got["ContentType"] == "application/x-spectrum"

    with page.expect_download() as download:
        page.get_by_role("button", name="Download spectrum.bin").click()
    assert download.value.suggested_filename == "spectrum.bin"
    assert Path(download.value.path()).read_bytes() == data
    expect(page.locator("#object-status")).to_have_text("Downloaded spectrum.bin.")

    # Folders: a key written through S3 shows up as a folder to open.
    physics.put_object(Bucket=BUCKET, Key="runs/7/log.txt", Body=b"step 1\n")
    page.get_by_role("button", name="Refresh").click()
    page.get_by_role("link", name="runs/").click()
    page.get_by_role("link", name="7/").click()
    crumbs = page.get_by_role("navigation", name="Breadcrumb")
    expect(crumbs.get_by_role("link")).to_have_text(["Buckets", BUCKET, "runs", "7"])
    expect(crumbs.get_by_role("link", name="7")).to_have_attribute("aria-current", "page")
    expect(page.locator("#objects")).to_contain_text("log.txt")
    page.get_by_label(f"Upload a file to {BUCKET}/runs/7/").set_input_files(
        files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"from the page"}]
    )
    page.get_by_role("button", name="Upload", exact=True).click()
    expect(page.locator("#upload-status")).to_contain_text("Uploaded runs/7/notes.txt")
    assert physics.get_object(Bucket=BUCKET, Key="runs/7/notes.txt")["Body"].read() == (
        b"from the page"
    )
    crumbs.get_by_role("link", name=BUCKET).click()
    expect(page.locator("#objects")).to_contain_text("spectrum.bin")
    page.screenshot(path=screenshots / "buckets.png", full_page=True)

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete spectrum.bin").click()
    expect(page.locator("#object-status")).to_have_text("Deleted spectrum.bin.")
    expect(page.locator("#objects")).not_to_contain_text("spectrum.bin")
    with pytest.raises(ClientError) as gone:
        physics.head_object(Bucket=BUCKET, Key="spectrum.bin")
    assert gone.value.response["Error"]["Code"] == "404"
    context.close()
    assert not [u for u in urls if key in u], "the API key travelled in a URL"


def test_another_tenant_can_neither_list_nor_download_it(
    storage: tuple[Server, str],
    tenants: dict[str, dict[str, Any]],
    browser: Browser,
) -> None:
    server, endpoint = storage
    s3_of(endpoint, tenants["physics"]).put_object(Bucket=BUCKET, Key="private.txt", Body=b"p")
    chemistry = {"Authorization": f"Bearer {tenants['chemistry']['key']}"}
    base = f"{server.url}/api/dashboard/buckets"
    listed = httpx.get(base, headers=chemistry).json()["buckets"]
    assert BUCKET not in [b["name"] for b in listed]
    for refused in (
        httpx.get(f"{base}/{BUCKET}/objects", headers=chemistry),
        httpx.post(f"{base}/{BUCKET}/upload-form", json={"key": "x"}, headers=chemistry),
        httpx.get(f"{base}/{BUCKET}/object", params={"key": "private.txt"}, headers=chemistry),
        httpx.delete(f"{base}/{BUCKET}/object", params={"key": "private.txt"}, headers=chemistry),
    ):
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "AccessDenied"
    with pytest.raises(ClientError):
        s3_of(endpoint, tenants["chemistry"]).get_object(Bucket=BUCKET, Key="private.txt")

    context = browser.new_context(viewport=LAPTOP)  # type: ignore[arg-type]
    page = context.new_page()
    sign_in(page, server, tenants["chemistry"]["key"], f"/#/buckets/{BUCKET}")
    expect(page.get_by_role("alert")).to_contain_text("no access to bucket")
    expect(page.locator("#upload-form")).to_be_hidden()
    context.close()
