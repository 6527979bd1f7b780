"""The buckets page's endpoints in-process, over a real ObjectsService: scoping and hostile keys."""

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from aifactory.api import Access
from aifactory.config import Settings
from aifactory.control import ControlPlane
from aifactory.errors import APIError
from aifactory.gateway import error_body
from aifactory.objects import ObjectsService
from aifactory.objects.s3.post_policy import parse_policy, v4_signature
from aifactory.objects.s3.sigv4 import parse_credential
from aifactory.store import Store
from aifactory.tenancy import KeyAuthenticator, issue_key
from aifactory.web import DashboardData, MetricsSampler

BASE = "/api/dashboard/buckets"


class Ledger:
    """Collects what the object service charges (the real ledger writes in batches)."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def record(self, **entry: Any) -> None:
        self.records.append(entry)


class World:
    def __init__(self, tmp_path: Path) -> None:
        settings = Settings(data_dir=tmp_path)
        self.store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
        self.store.create_schema()
        self.ledger = Ledger()
        self.objects = ObjectsService(settings, self.store, self.ledger)  # type: ignore[arg-type]
        self.objects.prepare()
        plane = ControlPlane(settings, self.store)
        access = Access(KeyAuthenticator(self.store))
        data = DashboardData(plane, MetricsSampler(), access, objects=self.objects)
        self.app = Starlette(routes=data.routes(), exception_handlers={APIError: _error})
        self.keys = {
            t: issue_key(self.store, t, "admin" if t == "ops" else "member").secret
            for t in ("ops", "a", "b")
        }
        self.root = Path(settings.objects_dir)

    def call(self, method: str, path: str, tenant: str | None, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.keys[tenant]}"} if tenant else {}
        headers.update(kwargs.pop("headers", {}))

        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                return await client.request(method, path, headers=headers, **kwargs)

        return asyncio.run(go())

    def upload(self, tenant: str, bucket: str, key: str, data: bytes) -> httpx.Response:
        return self.call(
            "PUT", f"{BASE}/{bucket}/object", tenant, params={"key": key}, content=data
        )


async def _error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return JSONResponse(error_body(exc), status_code=exc.status_code)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    made = World(tmp_path)
    assert made.call("POST", BASE, "a", json={"name": "a-data"}).status_code == 201
    yield made
    assert made.objects.app is not None
    made.objects.app.close()


def code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


def test_upload_list_download_delete_round_trip(world: World) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)  # more than one batch of the write path

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 256 * 1024):
            yield data[start : start + 256 * 1024]

    stored = world.call(
        "PUT",
        f"{BASE}/a-data/object",
        "a",
        params={"key": "runs/1/weights.bin"},
        content=pieces(),
        headers={"Content-Type": "application/x-test"},
    )
    assert stored.status_code == 201, stored.text
    etag = f'"{hashlib.md5(data).hexdigest()}"'  # what an S3 PUT of the same bytes answers
    assert stored.json() == {
        "bucket": "a-data",
        "key": "runs/1/weights.bin",
        "size": len(data),
        "etag": etag,
    }
    assert (world.root / "a-data" / "runs" / "1" / "weights.bin").read_bytes() == data
    assert [p.name for p in (world.root / "a-data" / "runs" / "1").iterdir()] == ["weights.bin"]

    top = world.call("GET", f"{BASE}/a-data/objects", "a", params={"delimiter": "/"}).json()
    assert (top["objects"], top["prefixes"], top["next"]) == ([], ["runs/"], None)
    inner = world.call(
        "GET", f"{BASE}/a-data/objects", "a", params={"prefix": "runs/1/", "delimiter": "/"}
    ).json()
    [listed] = inner["objects"]
    assert (listed["key"], listed["size"], listed["etag"]) == (
        "runs/1/weights.bin",
        len(data),
        etag,
    )
    assert listed["content_type"] == "application/x-test"

    open_files = len(os.listdir("/proc/self/fd"))
    got = world.call("GET", f"{BASE}/a-data/object", "a", params={"key": "runs/1/weights.bin"})
    assert got.status_code == 200 and got.content == data
    assert len(os.listdir("/proc/self/fd")) == open_files, "the download left its file open"
    assert got.headers["etag"] == etag
    assert got.headers["content-disposition"].startswith('attachment; filename="weights.bin"')
    assert got.headers["x-content-type-options"] == "nosniff"

    gone = world.call("DELETE", f"{BASE}/a-data/object", "a", params={"key": "runs/1/weights.bin"})
    assert gone.json()["result"] == "deleted"
    assert world.call("GET", f"{BASE}/a-data/objects", "a").json()["objects"] == []
    assert not (world.root / "a-data" / "runs").exists()


def test_listing_pages_with_a_token(world: World) -> None:
    for name in ("k1", "k2", "k3"):
        assert world.upload("a", "a-data", name, b"x").status_code == 201
    first = world.call("GET", f"{BASE}/a-data/objects", "a", params={"limit": 2}).json()
    assert [o["key"] for o in first["objects"]] == ["k1", "k2"] and first["next"]
    rest = world.call(
        "GET", f"{BASE}/a-data/objects", "a", params={"limit": 2, "token": first["next"]}
    ).json()
    assert [o["key"] for o in rest["objects"]] == ["k3"] and rest["next"] is None
    bad = world.call("GET", f"{BASE}/a-data/objects", "a", params={"token": "%%%"})
    assert bad.status_code == 400 and code(bad) == "InvalidArgument"
    assert world.call("GET", f"{BASE}/a-data/objects", "a", params={"limit": 0}).status_code == 400


def test_another_tenant_can_neither_see_nor_touch_the_bucket(world: World) -> None:
    assert world.upload("a", "a-data", "secret.txt", b"only a").status_code == 201
    names = [b["name"] for b in world.call("GET", BASE, "b").json()["buckets"]]
    assert "a-data" not in names
    for method, path, params in (
        ("GET", f"{BASE}/a-data/objects", {}),
        ("GET", f"{BASE}/a-data/object", {"key": "secret.txt"}),
        ("DELETE", f"{BASE}/a-data/object", {"key": "secret.txt"}),
        ("PUT", f"{BASE}/a-data/object", {"key": "planted.txt"}),
    ):
        refused = world.call(method, path, "b", params=params, content=b"x")
        assert refused.status_code == 403, (method, path, refused.text)
        assert code(refused) == "AccessDenied"
        assert "only a" not in refused.text
    assert sorted(p.name for p in (world.root / "a-data").iterdir()) == ["secret.txt"]
    as_admin = world.call("GET", f"{BASE}/a-data/object", "ops", params={"key": "secret.txt"})
    assert as_admin.content == b"only a"
    assert "a-data" in [b["name"] for b in world.call("GET", BASE, "ops").json()["buckets"]]


def test_a_read_grant_reads_but_does_not_write(world: World) -> None:
    assert world.upload("a", "a-data", "shared.txt", b"for b").status_code == 201
    world.store.set_bucket_grant("a-data", "b", "read")
    assert world.objects.registry is not None
    world.objects.registry.forget("a-data")
    got = world.call("GET", f"{BASE}/a-data/object", "b", params={"key": "shared.txt"})
    assert got.content == b"for b"
    assert world.upload("b", "a-data", "mine.txt", b"no").status_code == 403


@pytest.mark.parametrize(
    "key",
    ["../escape", "a/../../escape", "a//b", "./a", "/abs", ".aifactory-tmp-x", "a\0b", "k" * 1100],
)
def test_hostile_keys_are_refused_and_write_nothing(world: World, key: str) -> None:
    refused = world.upload("a", "a-data", key, b"payload")
    assert refused.status_code == 400, refused.text
    assert code(refused) in ("InvalidArgument", "KeyTooLongError")
    assert refused.json()["error"]["message"]
    assert list((world.root / "a-data").iterdir()) == []
    assert not (world.root / "escape").exists() and not (world.root.parent / "escape").exists()
    got = world.call("GET", f"{BASE}/a-data/object", "a", params={"key": key})
    assert got.status_code == 400


def test_a_prefix_cannot_climb_into_another_bucket(world: World) -> None:
    assert world.call("POST", BASE, "b", json={"name": "b-data"}).status_code == 201
    assert world.upload("b", "b-data", "theirs.txt", b"b only").status_code == 201
    for prefix in ("../", "../b-data/", "/", "./"):
        page = world.call("GET", f"{BASE}/a-data/objects", "a", params={"prefix": prefix})
        assert page.status_code == 200
        assert (page.json()["objects"], page.json()["prefixes"]) == ([], []), prefix


def test_bad_requests_say_what_to_do(world: World) -> None:
    no_key = world.call("PUT", f"{BASE}/a-data/object", "a", content=b"x")
    assert no_key.status_code == 400 and "?key=KEY" in no_key.json()["error"]["message"]
    folder = world.upload("a", "a-data", "dir/", b"x")
    assert folder.status_code == 400 and "folder" in folder.json()["error"]["message"]
    missing = world.call("GET", f"{BASE}/a-data/object", "a", params={"key": "nope"})
    assert missing.status_code == 404 and code(missing) == "NoSuchKey"
    no_bucket = world.call("GET", f"{BASE}/nope-bucket/objects", "a")
    assert no_bucket.status_code == 404 and code(no_bucket) == "NoSuchBucket"
    bad_name = world.call("POST", BASE, "a", json={"name": "Not_A_Bucket"})
    assert bad_name.status_code == 400 and code(bad_name) == "InvalidBucketName"
    taken = world.call("POST", BASE, "b", json={"name": "a-data"})
    assert taken.status_code == 409 and code(taken) == "BucketAlreadyExists"
    assert world.call("POST", BASE, "a", content=b"[1]").status_code == 400
    for path in ("objects", "object?key=x"):
        assert world.call("GET", f"{BASE}/a-data/{path}", None).status_code == 401


def test_without_object_storage_the_routes_say_so(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.create_schema()
    plane = ControlPlane(Settings(data_dir=tmp_path), store)
    access = Access(KeyAuthenticator(store))
    data = DashboardData(plane, MetricsSampler(), access)
    app = Starlette(routes=data.routes(), exception_handlers={APIError: _error})
    key = issue_key(store, "a", "member").secret

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.get(
                f"{BASE}/x-bucket/objects", headers={"Authorization": f"Bearer {key}"}
            )

    response = asyncio.run(go())
    assert response.status_code == 404
    assert "object storage not enabled" in response.json()["error"]["message"]


def test_transfers_are_charged_to_the_tenant_like_s3(world: World) -> None:
    assert world.upload("a", "a-data", "five.txt", b"12345").status_code == 201
    world.call("GET", f"{BASE}/a-data/object", "a", params={"key": "five.txt"})
    charged = [
        (r["endpoint"], r["model"], r["bytes_in"], r["bytes_out"])
        for r in world.ledger.records
        if r["endpoint"] in ("s3.PutObject", "s3.GetObject")
    ]
    assert charged == [("s3.PutObject", "a-data", 5, 0), ("s3.GetObject", "a-data", 0, 5)]
    assert {r["tenant_id"] for r in world.ledger.records} == {world.store.ensure_tenant("a")}


def test_an_upload_form_is_signed_with_the_callers_own_s3_pair_for_one_key(world: World) -> None:
    issued = issue_key(world.store, "a", "member", "s3", s3_master=world.objects.master)
    world.keys["a-s3"] = issued.secret
    path = f"{BASE}/a-data/upload-form"
    form = world.call("POST", path, "a-s3", json={"key": "in/x.csv", "content_type": "text/csv"})
    assert form.status_code == 200, form.text
    fields = form.json()["fields"]
    assert form.json()["url"].endswith("/a-data")
    assert fields["x-amz-credential"].startswith(f"{issued.s3_access_key_id}/")
    policy = parse_policy(fields["policy"])
    credential = parse_credential(fields["x-amz-credential"])
    assert credential is not None
    assert fields["x-amz-signature"] == v4_signature(
        issued.s3_secret_access_key, credential, fields["policy"]
    )
    signed = {name.lower(): value for name, value in fields.items()} | {"bucket": "a-data"}
    policy.check(signed, datetime.now(UTC))
    with pytest.raises(APIError):  # the form names one key: another is refused
        policy.check(signed | {"key": "in/other.csv"}, datetime.now(UTC))

    refused = world.call("POST", path, "b", json={"key": "planted"})
    assert refused.status_code == 403 and code(refused) == "AccessDenied"
    no_pair = world.call("POST", path, "a", json={"key": "in/x.csv"})
    assert no_pair.status_code == 409 and "S3" in no_pair.json()["error"]["message"]
    folder = world.call("POST", path, "a-s3", json={"key": "in/"})
    assert folder.status_code == 400 and code(folder) == "InvalidArgument"
