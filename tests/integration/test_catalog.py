"""The data catalog on a real server: files put with boto3, registered, versioned, searched,
published as DCAT-AP, and hidden from tenants that may not see them."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import mlcroissant as mlc
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError
from rdflib import Graph

from aifactory.catalog.files import DESCRIPTION_FILE
from dcat_ap_shapes import conforms

from .server import Server, free_port, start_server


class Tenant:
    """A tenant's member key: over HTTP and over S3."""

    def __init__(self, server: Server, endpoint: str, name: str) -> None:
        created = server.admin.post("/api/keys", json={"tenant": name}).json()
        self.name = name
        self.http = httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {created['key']}"}, timeout=30
        )
        self.s3: Any = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=created["s3_access_key_id"],
            aws_secret_access_key=created["s3_secret_access_key"],
            region_name="us-east-1",
        )


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    port = free_port()
    server = start_server(tmp_path_factory.mktemp("catalog"), objects_port=str(port))
    yield server, f"http://127.0.0.1:{port}"
    assert server.stop() in (0, -15), server.log_tail()


@pytest.fixture(scope="module")
def physics(up: tuple[Server, str]) -> Tenant:
    tenant = Tenant(*up, "physics")
    tenant.s3.create_bucket(Bucket="physics-data")
    return tenant


@pytest.fixture(scope="module")
def chemistry(up: tuple[Server, str]) -> Tenant:
    return Tenant(*up, "chemistry")


def _put(tenant: Tenant, key: str, body: bytes) -> None:
    tenant.s3.put_object(Bucket="physics-data", Key=key, Body=body)


def _register(tenant: Tenant, **fields: Any) -> dict[str, Any]:
    response = tenant.http.post("/api/catalog", json={"bucket": "physics-data", **fields})
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_a_dataset_registers_with_server_computed_checksums(physics: Tenant) -> None:
    rows = b"".join(json.dumps({"i": i}).encode() + b"\n" for i in range(100))
    _put(physics, "wiki/train.jsonl", rows)
    _put(physics, "wiki/test/part-0.jsonl", b'{"i": -1}\n')
    entry = _register(
        physics,
        prefix="wiki/",
        title="Wiki sentences",
        license="CC-BY-4.0",
        keywords=["nlp"],
        description="sentences, one a line",
        # A typed-in checksum is not a field: the server computes them.
    )
    assert (entry["id"], entry["version"], entry["format"]) == ("physics/wiki", 1, "jsonl")
    files = {f["path"]: f for f in entry["files"]}
    assert set(files) == {"train.jsonl", "test/part-0.jsonl"}
    assert files["train.jsonl"]["size"] == len(rows)
    assert files["train.jsonl"]["sha256"] == hashlib.sha256(rows).hexdigest()
    again = _register(
        physics,
        prefix="wiki",
        title="Wiki sentences",
        license="CC-BY-4.0",
        keywords=["nlp"],
        description="sentences, one a line",
    )
    assert again["version"] == 1, "registering the same files and words makes no new version"


def test_a_changed_file_makes_a_new_version_and_the_old_one_still_reads(physics: Tenant) -> None:
    _put(physics, "models/tiny/weights.safetensors", b"first weights")
    _put(physics, "models/tiny/config.json", b"{}")
    fields = {"prefix": "models/tiny", "title": "Tiny", "license": "Apache-2.0", "kind": "model"}
    first = _register(physics, **fields)
    _put(physics, "models/tiny/weights.safetensors", b"second, longer weights")
    second = _register(physics, **fields)
    assert (first["version"], second["version"]) == (1, 2)
    assert [v["version"] for v in second["versions"]] == [1, 2]
    old = physics.http.get("/api/catalog/physics/tiny/versions/1").json()
    assert {f["path"]: f["size"] for f in old["files"]}["weights.safetensors"] == 13
    base = "/api/catalog/physics/tiny/versions"
    assert physics.http.get(f"{base}/1/files/weights.safetensors").content == b"first weights"
    assert physics.http.get(f"{base}/2/files/weights.safetensors").content == (
        b"second, longer weights"
    )
    assert physics.http.get(f"{base}/3").status_code == 404


def test_catalog_yaml_describes_its_prefix(physics: Tenant) -> None:
    _put(physics, "tables/rows.csv", b'id,text\n1,"a\nb"\n')
    description = "title: Tables\nlicense: CC0-1.0\nkeywords: [tabular, physics]\ncreator: Lab\n"
    _put(physics, f"tables/{DESCRIPTION_FILE}", description.encode())
    entry = _register(physics, prefix="tables", visibility="public")
    assert (entry["title"], entry["license"], entry["creator"]) == ("Tables", "CC0-1.0", "Lab")
    assert [f["path"] for f in entry["files"]] == ["rows.csv"]
    assert entry["format"] == "csv"


def test_search_by_words_and_facets(physics: Tenant) -> None:
    _put(physics, "search/a.parquet", b"PAR1")
    _register(
        physics,
        prefix="search",
        title="Collider events",
        license="CC-BY-4.0",
        keywords=["hep"],
        format="parquet",
    )
    found = physics.http.get("/api/catalog", params={"q": "collider EVENTS"}).json()
    assert [e["id"] for e in found["entries"]] == ["physics/search"]
    by_license = physics.http.get("/api/catalog", params={"license": "CC-BY-4.0"}).json()
    assert {e["id"] for e in by_license["entries"]} == {"physics/wiki", "physics/search"}
    assert by_license["facets"]["format"] == {"jsonl": 1, "parquet": 1}
    by_keyword = physics.http.get("/api/catalog", params={"keyword": "hep", "q": "wiki"}).json()
    assert by_keyword["entries"] == []


def test_a_private_entry_is_hidden_from_other_tenants_until_shared(
    physics: Tenant, chemistry: Tenant
) -> None:
    _put(physics, "secret/x.jsonl", b"{}\n")
    _register(physics, prefix="secret", title="Secret", license="proprietary")
    hidden = chemistry.http.get("/api/catalog/physics/secret")
    assert hidden.status_code == 404, hidden.text
    assert (
        chemistry.http.get("/api/catalog/physics/secret/versions/1/files/x.jsonl").status_code
        == 404
    )
    assert "physics/secret" not in {
        e["id"] for e in chemistry.http.get("/api/catalog").json()["entries"]
    }
    assert httpx.get(f"{physics.http.base_url}/api/catalog/physics/secret").status_code == 404
    _register(
        physics,
        prefix="secret",
        title="Secret",
        license="proprietary",
        visibility="shared",
        shared_with=["chemistry"],
    )
    shown = chemistry.http.get("/api/catalog/physics/secret")
    assert shown.status_code == 200 and "shared_with" not in shown.json()
    assert chemistry.http.get("/api/catalog/physics/secret/versions/1/files/x.jsonl").content == (
        b"{}\n"
    )


def test_registering_needs_a_key_that_may_deploy_and_read_the_bucket(
    up: tuple[Server, str], physics: Tenant, chemistry: Tenant
) -> None:
    server, _ = up
    refused = chemistry.http.post(
        "/api/catalog",
        json={"bucket": "physics-data", "prefix": "wiki", "title": "t", "license": "MIT"},
    )
    assert refused.status_code == 403, refused.text
    inference = server.admin.post("/api/keys", json={"tenant": "physics", "role": "inference"})
    key = inference.json()["key"]
    response = httpx.post(
        f"{server.url}/api/catalog",
        headers={"Authorization": f"Bearer {key}"},
        json={"bucket": "physics-data", "prefix": "wiki", "title": "t", "license": "MIT"},
    )
    assert response.status_code == 403, response.text
    missing = physics.http.post("/api/catalog", json={"bucket": "physics-data", "prefix": "wiki"})
    assert missing.status_code == 400 and "title" in missing.json()["error"]["message"]


def test_public_entries_read_without_a_key_as_dcat_ap(physics: Tenant) -> None:
    anonymous = httpx.Client(base_url=str(physics.http.base_url), timeout=30)
    entry = anonymous.get("/api/catalog/physics/tables")
    assert entry.status_code == 200, entry.text
    assert anonymous.get("/api/catalog/physics/tables/versions/1/files/rows.csv").content == (
        b'id,text\n1,"a\nb"\n'
    )
    listed = anonymous.get("/api/catalog").json()["entries"]
    assert [e["id"] for e in listed] == ["physics/tables"]
    for path in ("/api/catalog.jsonld", "/api/catalog/physics/tables/dcat.jsonld"):
        response = anonymous.get(path)
        assert response.headers["content-type"].startswith("application/ld+json")
        graph = Graph().parse(data=response.text, format="json-ld")
        ok, text = conforms(graph)
        assert ok, text
    owned = physics.http.get("/api/catalog.jsonld").text
    assert "Secret" in owned and "Secret" not in anonymous.get("/api/catalog.jsonld").text


def test_the_cli_adds_and_searches(up: tuple[Server, str], physics: Tenant) -> None:
    server, _ = up
    _put(physics, "cli/a.jsonl", b"{}\n")
    added = server.cli(
        "catalog",
        "add",
        "physics-data/cli",
        "--title",
        "From the CLI",
        "--license",
        "MIT",
        "--keyword",
        "cli",
    )
    assert "version 1" in added.stdout, added.stdout
    found = server.cli("catalog", "search", "from the cli").stdout
    assert "From the CLI" in found and "MIT" in found
    entry = added.stdout.split()[0]
    shown = server.cli("catalog", "show", f"{entry}@1").stdout
    assert "a.jsonl" in shown and hashlib.sha256(b"{}\n").hexdigest() in shown


def test_a_file_changed_in_place_answers_gone_for_its_old_version(
    up: tuple[Server, str], physics: Tenant
) -> None:
    server, _ = up
    _put(physics, "inplace/a.jsonl", b'{"v": 1}\n')
    fields = {"prefix": "inplace", "title": "In place", "license": "MIT"}
    _register(physics, **fields)
    # Written through POSIX, not replaced by S3: the kept inode changes with it.
    with (server.data_dir / "objects" / "physics-data" / "inplace" / "a.jsonl").open("r+b") as f:
        f.write(b'{"v": 2}\n')
    assert _register(physics, **fields)["version"] == 2
    base = "/api/catalog/physics/inplace/versions"
    gone = physics.http.get(f"{base}/1/files/a.jsonl")
    assert gone.status_code == 410, gone.text
    assert "latest version (2)" in gone.json()["error"]["message"]
    assert physics.http.get(f"{base}/2/files/a.jsonl").content == b'{"v": 2}\n'


def test_partitions_read_over_s3_ranges_cover_every_record_once(physics: Tenant) -> None:
    _put(physics, "parts/a.jsonl", b"".join(b'{"i": %d}\n' % i for i in range(100)))
    _put(physics, "parts/b/c.jsonl", b'{"i": -1}\n')
    _put(physics, "parts/notes.txt", b"not split")
    _register(physics, prefix="parts", title="Parts", license="MIT")
    response = physics.http.get("/api/catalog/physics/parts/versions/1/partitions", params={"n": 4})
    assert response.status_code == 200, response.text
    parts = response.json()["partitions"]
    assert len(parts) >= 4
    records = []
    for part in parts:
        ranged = physics.s3.get_object(
            Bucket="physics-data",
            Key=f"parts/{part['path']}",
            Range=f"bytes={part['start']}-{part['end'] - 1}",
        )
        records += [json.loads(line) for line in ranged["Body"].read().splitlines()]
    assert sorted(r["i"] for r in records) == [-1, *range(100)]
    assert {part["path"] for part in parts} == {"a.jsonl", "b/c.jsonl"}


def test_a_public_dataset_reads_as_croissant_that_mlcroissant_loads(physics: Tenant) -> None:
    anonymous = httpx.Client(base_url=str(physics.http.base_url), timeout=30)
    response = anonymous.get("/api/catalog/physics/tables/croissant.json")
    assert response.status_code == 200, response.text
    dataset = mlc.Dataset(jsonld=response.json())
    assert not dataset.metadata.ctx.issues.errors
    (listed,) = dataset.metadata.distribution
    assert listed.content_url.endswith("/api/catalog/physics/tables/versions/1/files/rows.csv")
    assert anonymous.get(listed.content_url).content == b'id,text\n1,"a\nb"\n'
    model = physics.http.get("/api/catalog/physics/tiny/croissant.json")
    assert model.status_code == 400 and "describes datasets" in model.text


def test_a_read_grant_registers_privately_but_does_not_publish(
    up: tuple[Server, str], physics: Tenant, chemistry: Tenant
) -> None:
    server, _ = up
    _put(physics, "granted/a.jsonl", b"{}\n")
    granted = server.admin.put(
        "/api/buckets/physics-data/grants", json={"tenant": "chemistry", "access": "read"}
    )
    assert granted.status_code == 200, granted.text
    try:
        fields = {"bucket": "physics-data", "prefix": "granted", "title": "G", "license": "MIT"}
        private = chemistry.http.post("/api/catalog", json=fields)
        assert private.status_code == 201, private.text
        assert private.json()["id"] == "chemistry/granted"
        public = chemistry.http.post("/api/catalog", json={**fields, "visibility": "public"})
        assert public.status_code == 403 and "owner" in public.text
        assert chemistry.http.get("/api/catalog/chemistry/granted").json()["visibility"] == (
            "private"
        )
    finally:
        server.admin.put(
            "/api/buckets/physics-data/grants", json={"tenant": "chemistry", "access": None}
        )


def test_a_public_entry_reads_unsigned_over_s3_and_nothing_beside_it(
    up: tuple[Server, str], physics: Tenant
) -> None:
    _put(physics, "open-s3/data.csv", b"x\n1\n")
    _put(physics, "closed-s3/data.csv", b"secret\n")
    unsigned = boto3.client(
        "s3",
        endpoint_url=up[1],
        region_name="us-east-1",
        config=Config(signature_version=UNSIGNED, retries={"max_attempts": 1}),
    )
    with pytest.raises(ClientError):
        unsigned.get_object(Bucket="physics-data", Key="open-s3/data.csv")
    words = {"title": "Open", "license": "CC0-1.0"}
    _register(physics, prefix="open-s3", visibility="public", **words)
    _register(physics, prefix="closed-s3", **words)
    time.sleep(5.5)  # the catalog's public prefixes are read again every 5 s
    got = unsigned.get_object(Bucket="physics-data", Key="open-s3/data.csv")
    assert got["Body"].read() == b"x\n1\n"
    for key, code in (
        ("closed-s3/data.csv", "AccessDenied"),
        ("open-s3x", "AccessDenied"),
        ("open-s3/absent.csv", "NoSuchKey"),  # within a public prefix, absence is public too
    ):
        with pytest.raises(ClientError) as refused:
            unsigned.get_object(Bucket="physics-data", Key=key)
        assert refused.value.response["Error"]["Code"] == code, key
    with pytest.raises(ClientError) as refused:
        unsigned.put_object(Bucket="physics-data", Key="open-s3/new.csv", Body=b"no")
    assert refused.value.response["Error"]["Code"] == "AccessDenied"


def test_bytes_only_the_catalog_keeps_count_in_the_owners_bytes_quota(
    up: tuple[Server, str],
) -> None:
    server, endpoint = up
    archive = Tenant(server, endpoint, "archive")
    archive.s3.create_bucket(Bucket="archive-data")
    archive.s3.put_object(Bucket="archive-data", Key="v/a.bin", Body=b"1" * 1000)
    _register(archive, bucket="archive-data", prefix="v", title="v", license="CC0-1.0")
    archive.s3.put_object(Bucket="archive-data", Key="v/a.bin", Body=b"2" * 1000)
    # Version 1's bytes now live in the catalog alone: 1,000 in the bucket, 1,000 kept.
    assert (
        _register(archive, bucket="archive-data", prefix="v", title="v", license="CC0-1.0")[
            "version"
        ]
        == 2
    )
    assert server.admin.put("/api/tenants/archive/quotas", json={"bytes": 2500}).is_success
    time.sleep(5.5)  # the S3 server reads a tenant's quota again after 5 s
    archive.s3.put_object(Bucket="archive-data", Key="w/b.bin", Body=b"3" * 400)
    with pytest.raises(ClientError) as refused:
        archive.s3.put_object(Bucket="archive-data", Key="w/c.bin", Body=b"4" * 200)
    error = refused.value.response["Error"]
    assert error["Code"] == "QuotaExceeded", error
    assert "they hold 2400" in error["Message"], error
