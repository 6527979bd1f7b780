"""Conditional writes: ``If-Match``, ``If-None-Match`` on writes, ``If-Match`` on deletes.

Writes are PutObject and CompleteMultipartUpload; deletes DeleteObject and
DeleteObjects (an ETag per key). The check reads the object in place when
the new one is about to be renamed over it (or it is about to be removed),
under the key's lock (``FileWriter.publish``, ``FileStore.delete``), so of
two writers that both name the same ETag exactly one wins, the other 412.
"""

from __future__ import annotations

from collections.abc import Callable

from aifactory.objects.errors import S3Error
from aifactory.objects.posix.storage import ObjectInfo
from aifactory.objects.s3.request import S3Request

WriteCheck = Callable[[ObjectInfo | None], None]


def write_check(request: S3Request) -> WriteCheck | None:
    """The check the request's conditional headers ask of the current object; None: none."""
    if_match = request.header("if-match")
    if_none_match = request.header("if-none-match")
    if not if_match and not if_none_match:
        return None
    resource = f"/{request.bucket}/{request.key}"

    def check(current: ObjectInfo | None) -> None:
        if if_match:
            if current is None:
                raise S3Error("NoSuchKey", resource=resource)
            if not etag_matches(current.meta.etag, if_match):
                raise S3Error("PreconditionFailed", "If-Match did not match the current ETag.")
        if if_none_match and current is not None and etag_matches(current.meta.etag, if_none_match):
            raise S3Error("PreconditionFailed", "If-None-Match matched the current object.")

    return check


def delete_check(if_match: str) -> WriteCheck | None:
    """The check a delete's ``If-Match`` (or DeleteObjects' ETag) asks; an absent object passes."""
    if not if_match:
        return None

    def check(current: ObjectInfo | None) -> None:
        if current is not None and not etag_matches(current.meta.etag, if_match):
            raise S3Error("PreconditionFailed", "If-Match did not match the current ETag.")

    return check


def etag_matches(etag: str, header: str) -> bool:
    """Whether an If-Match / If-None-Match list names ``etag`` (or is ``*``)."""
    wanted = {item.strip().removeprefix("W/").strip('"') for item in header.split(",")}
    return "*" in wanted or etag.strip('"') in wanted
