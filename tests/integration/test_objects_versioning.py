"""Versioned buckets on a real `objects serve`: old versions aside, the current one a plain file."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from aifactory.store import Store

from .objects_server import S3Server, start_objects_server


@pytest.fixture(scope="module")
def s3server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_objects_server(tmp_path_factory.mktemp("objects-versioning"))
    yield server
    assert server.stop() in (0, -15), server.log_tail()


@pytest.fixture(scope="module")
def s3(s3server: S3Server) -> Any:
    client = s3server.client(s3server.issue("versions"))
    client.create_bucket(Bucket="kept")
    client.put_bucket_versioning(Bucket="kept", VersioningConfiguration={"Status": "Enabled"})
    return client


def _error(call: Any, **kwargs: Any) -> tuple[int, str]:
    with pytest.raises(ClientError) as caught:
        call(**kwargs)
    response = caught.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"].get("Code", "")


def _versions(s3: Any, prefix: str) -> list[tuple[str, str, bool]]:
    listed = s3.list_object_versions(Bucket="kept", Prefix=prefix)
    found = [(v["VersionId"], "v", v["IsLatest"]) for v in listed.get("Versions", [])]
    found += [(m["VersionId"], "m", m["IsLatest"]) for m in listed.get("DeleteMarkers", [])]
    return found


def test_three_puts_keep_three_versions_and_ls_shows_the_current_file(
    s3server: S3Server, s3: Any
) -> None:
    assert s3.get_bucket_versioning(Bucket="kept")["Status"] == "Enabled"
    ids = [
        s3.put_object(Bucket="kept", Key="doc.txt", Body=f"v{n}".encode())["VersionId"]
        for n in (1, 2, 3)
    ]
    assert len(set(ids)) == 3
    assert os.listdir(s3server.root / "kept") == ["doc.txt"]
    assert (s3server.root / "kept" / "doc.txt").read_bytes() == b"v3"
    for number, version in enumerate(ids, 1):
        got = s3.get_object(Bucket="kept", Key="doc.txt", VersionId=version)
        assert got["Body"].read() == f"v{number}".encode()
        assert got["VersionId"] == version
        attributes = s3.get_object_attributes(
            Bucket="kept", Key="doc.txt", VersionId=version, ObjectAttributes=["ObjectSize"]
        )
        assert (attributes["VersionId"], attributes["ObjectSize"]) == (version, 2)
    listed = s3.list_object_versions(Bucket="kept", Prefix="doc.txt")["Versions"]
    assert [(v["VersionId"], v["IsLatest"]) for v in listed] == [
        (ids[2], True),
        (ids[1], False),
        (ids[0], False),
    ]
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="kept")["Contents"]] == ["doc.txt"]
    # A directory marker has one version, and deletes as before.
    s3.put_object(Bucket="kept", Key="folder/", Body=b"")
    s3.delete_object(Bucket="kept", Key="folder/")
    assert os.listdir(s3server.root / "kept") == ["doc.txt"]


def test_a_delete_makes_a_marker_and_deleting_it_brings_the_object_back(
    s3server: S3Server, s3: Any
) -> None:
    first = s3.put_object(Bucket="kept", Key="gone.txt", Body=b"one")["VersionId"]
    second = s3.put_object(Bucket="kept", Key="gone.txt", Body=b"two")["VersionId"]
    deleted = s3.delete_object(Bucket="kept", Key="gone.txt")
    assert deleted["DeleteMarker"] is True
    marker = deleted["VersionId"]
    assert not (s3server.root / "kept" / "gone.txt").exists()
    with pytest.raises(ClientError) as absent:
        s3.head_object(Bucket="kept", Key="gone.txt")
    headers = absent.value.response["ResponseMetadata"]["HTTPHeaders"]
    assert absent.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert (headers["x-amz-delete-marker"], headers["x-amz-version-id"]) == ("true", marker)
    assert _error(s3.get_object, Bucket="kept", Key="gone.txt", VersionId=marker)[0] == 405
    assert s3.get_object(Bucket="kept", Key="gone.txt", VersionId=first)["Body"].read() == b"one"
    assert _versions(s3, "gone.txt") == [
        (second, "v", False),
        (first, "v", False),
        (marker, "m", True),
    ]

    s3.delete_object(Bucket="kept", Key="gone.txt", VersionId=marker)
    assert (s3server.root / "kept" / "gone.txt").read_bytes() == b"two"
    assert s3.get_object(Bucket="kept", Key="gone.txt")["Body"].read() == b"two"
    # Deleting the current version by id puts the one before it back.
    s3.delete_object(Bucket="kept", Key="gone.txt", VersionId=second)
    assert (s3server.root / "kept" / "gone.txt").read_bytes() == b"one"
    s3.delete_object(Bucket="kept", Key="gone.txt", VersionId=first)
    assert _versions(s3, "gone.txt") == []
    assert not (s3server.root / "kept" / "gone.txt").exists()
    assert _error(s3.get_object, Bucket="kept", Key="x", VersionId=first) == (404, "NoSuchVersion")


def test_suspended_writes_replace_the_null_version(s3: Any) -> None:
    s3.create_bucket(Bucket="paused")
    s3.put_object(Bucket="paused", Key="k", Body=b"before")
    s3.put_bucket_versioning(Bucket="paused", VersioningConfiguration={"Status": "Enabled"})
    enabled = s3.put_object(Bucket="paused", Key="k", Body=b"enabled")["VersionId"]
    s3.put_bucket_versioning(Bucket="paused", VersioningConfiguration={"Status": "Suspended"})
    s3.put_object(Bucket="paused", Key="k", Body=b"suspended-1")
    s3.put_object(Bucket="paused", Key="k", Body=b"suspended-2")
    listed = s3.list_object_versions(Bucket="paused")["Versions"]
    assert [(v["VersionId"], v["IsLatest"]) for v in listed] == [("null", True), (enabled, False)]
    assert (
        s3.get_object(Bucket="paused", Key="k", VersionId="null")["Body"].read() == b"suspended-2"
    )
    assert _error(s3.delete_bucket, Bucket="paused") == (409, "BucketNotEmpty")
    for version in ("null", enabled):
        s3.delete_object(Bucket="paused", Key="k", VersionId=version)
    s3.delete_bucket(Bucket="paused")


def test_only_the_owner_turns_versioning_on(s3server: S3Server, s3: Any) -> None:
    other = s3server.client(s3server.issue("intruder"))
    config = {"Status": "Enabled"}
    assert (
        _error(other.put_bucket_versioning, Bucket="kept", VersioningConfiguration=config)[0] == 403
    )
    assert _error(
        s3.put_bucket_versioning, Bucket="kept", VersioningConfiguration={"Status": "Off"}
    ) == (400, "MalformedXML")


def test_copy_from_a_version_and_delete_page_by_page(s3: Any) -> None:
    s3.create_bucket(Bucket="paged")
    s3.put_bucket_versioning(Bucket="paged", VersioningConfiguration={"Status": "Enabled"})
    first = s3.put_object(Bucket="paged", Key="what?now", Body=b"first")["VersionId"]
    s3.put_object(Bucket="paged", Key="what?now", Body=b"second")
    s3.put_object(Bucket="paged", Key="what?now", Body=b"third")
    source = {"Bucket": "paged", "Key": "what?now", "VersionId": first}
    s3.copy_object(Bucket="paged", Key="restored", CopySource=source)
    assert s3.get_object(Bucket="paged", Key="restored")["Body"].read() == b"first"
    s3.delete_object(Bucket="paged", Key="restored")
    # A client deleting each page it lists (as cleanup tools do) reaches every version.
    kwargs: dict[str, Any] = {"Bucket": "paged", "MaxKeys": 2}
    while True:
        listed = s3.list_object_versions(**kwargs)
        found = listed.get("Versions", []) + listed.get("DeleteMarkers", [])
        if found:
            objects = [{"Key": v["Key"], "VersionId": v["VersionId"]} for v in found]
            s3.delete_objects(Bucket="paged", Delete={"Objects": objects, "Quiet": True})
        if not listed["IsTruncated"]:
            break
        kwargs["KeyMarker"] = listed["NextKeyMarker"]
        kwargs["VersionIdMarker"] = listed.get("NextVersionIdMarker", "")
    s3.delete_bucket(Bucket="paged")


def test_kept_versions_count_in_the_bytes_quota(s3server: S3Server) -> None:
    s3 = s3server.client(s3server.issue("quota-versions"))
    s3.create_bucket(Bucket="quota-kept")
    s3.put_bucket_versioning(Bucket="quota-kept", VersioningConfiguration={"Status": "Enabled"})
    for _ in range(2):
        s3.put_object(Bucket="quota-kept", Key="same", Body=b"x" * 1000)
    # One file of 1000 bytes in the tree, 2000 bytes held: 100 more do not fit in 1500.
    store = Store(f"sqlite:///{s3server.data_dir / 'aifactory.db'}")
    try:
        tenant = store.tenant("quota-versions")
        assert tenant is not None
        store.set_quotas(tenant.id, bytes=1500)
    finally:
        store.close()
    time.sleep(5.5)  # quotas are read again every 5 s
    with pytest.raises(ClientError) as refused:
        s3.put_object(Bucket="quota-kept", Key="other", Body=b"x" * 100)
    assert refused.value.response["Error"]["Code"] == "QuotaExceeded"
