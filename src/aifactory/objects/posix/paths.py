"""Bucket names and object keys checked, then mapped to paths under the root.

A bucket is a top-level directory, a key is a relative file path in it. Names
starting with ``.aifactory-`` are ours (temporary files) and the directory
``.aifactory`` under the root holds staging and sidecar files; no bucket name
can start with ``.``, and keys whose segments use the reserved prefix are
refused, so no key can reach either. A key ending in ``/`` is a directory
marker: the directory itself.
"""

from __future__ import annotations

import os
import re

from aifactory.objects.errors import S3Error

RESERVED_PREFIX = ".aifactory-"
SYSTEM_DIR = ".aifactory"
MAX_KEY_BYTES = 1024
MAX_SEGMENT_BYTES = 255

_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IP_ADDRESS = re.compile(r"\d+\.\d+\.\d+\.\d+")


def check_bucket_name(name: str) -> None:
    """Raise InvalidBucketName unless ``name`` follows S3's bucket naming rules."""
    if not _BUCKET_NAME.fullmatch(name) or ".." in name or _IP_ADDRESS.fullmatch(name):
        raise S3Error(
            "InvalidBucketName",
            f"The bucket name {name!r} is not valid.",
            fix="use 3-63 lower case letters, digits, '.' and '-', starting and ending "
            "with a letter or digit",
            resource=name,
        )


def check_key(key: str) -> None:
    """Raise an S3 error unless ``key`` maps to a safe path inside its bucket."""
    if not key:
        raise S3Error("InvalidArgument", "The object key is empty.", resource=key)
    if len(key.encode("utf-8", "surrogateescape")) > MAX_KEY_BYTES:
        raise S3Error(
            "KeyTooLongError", f"Keys are at most {MAX_KEY_BYTES} bytes.", resource=key[:64]
        )
    if "\0" in key:
        raise S3Error("InvalidArgument", "Object keys cannot contain NUL.", resource=key)
    if key.startswith("/"):
        raise S3Error("InvalidArgument", "Object keys cannot start with '/'.", resource=key)
    for segment in (key[:-1] if key.endswith("/") else key).split("/"):
        _check_segment(segment, key)


def _check_segment(segment: str, key: str) -> None:
    if segment in ("", ".", ".."):
        raise S3Error(
            "InvalidArgument",
            f"Object key {key!r} has an empty, '.' or '..' path segment.",
            fix="keys map to file paths here: use keys like 'dir/file' without '//', './' or '../'",
            resource=key,
        )
    if segment.startswith(RESERVED_PREFIX):
        raise S3Error(
            "InvalidArgument",
            f"Object key {key!r} uses the reserved name prefix {RESERVED_PREFIX!r}.",
            resource=key,
        )
    if len(segment.encode("utf-8", "surrogateescape")) > MAX_SEGMENT_BYTES:
        raise S3Error(
            "KeyTooLongError",
            f"A path segment of the key is longer than {MAX_SEGMENT_BYTES} bytes.",
            fix="split long names with '/' (each segment becomes a directory)",
            resource=key[:64],
        )


def key_path(bucket_dir: str, key: str) -> str:
    """The file (or, for a ``dir/`` marker, directory) path of a checked key."""
    return os.path.join(bucket_dir, key.rstrip("/"))


def is_directory_key(key: str) -> bool:
    """Whether ``key`` names a directory marker (``dir/``)."""
    return key.endswith("/")


def safe_prefix_dir(prefix: str) -> str | None:
    """The directory part of a listing prefix (``a/b/`` of ``a/b/c``), or None when unsafe."""
    directory = prefix.rpartition("/")[0]
    if not directory:
        return ""
    for segment in directory.split("/"):
        if segment in ("", ".", "..") or segment.startswith(RESERVED_PREFIX) or "\0" in segment:
            return None
    return directory
