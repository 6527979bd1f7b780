"""Object versions on POSIX: the current version is the plain file, older ones are kept aside.

A reader of the tree (``ls``, a job) sees each key's current version only; a
bucket with versioning on keeps the others in the control plane's reserved
area, on the same filesystem (a version is kept by hard-linking the file it
was, just before a write or delete replaces it: no byte is copied)::

    ROOT/.aifactory/versions/BUCKET/status       Enabled | Suspended (absent: never on)
    ROOT/.aifactory/versions/BUCKET/keys/H/key   the key (H: SHA-256 of it)
    ROOT/.aifactory/versions/BUCKET/keys/H/V.json  version V: its metadata, or a delete marker
    ROOT/.aifactory/versions/BUCKET/keys/H/V     version V's bytes

Version ids start with the time in hex, then random hex; the version a
bucket had before versioning (or writes while it is suspended) is ``null``.
Non-current versions are ordered by when they stopped being current (or, for
a delete marker, were made): every change of a key happens under its lock,
so that order is the order of events. Whenever a key has no file and its
newest kept version holds bytes (its delete marker or current version was
deleted by id), that version goes back in place as the plain file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aifactory.objects.errors import S3Error
from aifactory.objects.posix.dirs import split_key
from aifactory.objects.posix.metadata import ObjectMeta
from aifactory.objects.posix.paths import is_directory_key

if TYPE_CHECKING:
    from aifactory.objects.posix.storage import FileStore, ObjectInfo

__all__ = ["ENABLED", "NULL", "SUSPENDED", "Deleted", "KeptVersion", "Versions"]

ENABLED, SUSPENDED = "Enabled", "Suspended"
NULL = "null"
_STATUS_TTL_S = 2.0
_READ_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW


@dataclass
class KeptVersion:
    """A non-current version (or delete marker) of a key."""

    version_id: str
    since_ns: int  # when it stopped being current, or the marker was made
    marker: bool
    meta: ObjectMeta | None  # None for a delete marker

    def to_bytes(self) -> bytes:
        """The record's JSON."""
        record = {
            "version_id": self.version_id,
            "since_ns": self.since_ns,
            "marker": self.marker,
            "meta": None if self.meta is None else self.meta.__dict__,
        }
        return json.dumps(record, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> KeptVersion | None:
        """Parse a record; None when damaged."""
        try:
            record = json.loads(data)
            meta = None if record["meta"] is None else ObjectMeta(**record["meta"])
            return cls(record["version_id"], record["since_ns"], record["marker"], meta)
        except (ValueError, TypeError, KeyError):
            return None


@dataclass
class Deleted:
    """What a versioned delete did: the version id removed or made, and whether a marker."""

    version_id: str
    marker: bool


class Versions:
    """The versions of one file store's buckets (every method blocks)."""

    def __init__(self, files: FileStore) -> None:
        self._files = files
        self._root = os.path.join(files.system_dir, "versions")
        self._status: dict[str, tuple[float, str]] = {}

    def bucket_dir(self, bucket: str) -> str:
        """Where ``bucket``'s versions are kept (counted in its tenant's bytes quota)."""
        return os.path.join(self._root, bucket)

    # status

    def status(self, bucket: str) -> str:
        """``Enabled``, ``Suspended`` or ``""`` (never on), cached for a moment."""
        now = time.monotonic()
        cached = self._status.get(bucket)
        if cached is None or cached[0] <= now:
            try:
                with open(os.path.join(self._root, bucket, "status")) as handle:
                    status = handle.read().strip()
            except FileNotFoundError:
                status = ""
            cached = (now + _STATUS_TTL_S, status)
            self._status[bucket] = cached
        return cached[1]

    def set_status(self, bucket: str, status: str) -> None:
        """Turn versioning on (``Enabled``) or pause it (``Suspended``); it never goes off."""
        directory = os.path.join(self._root, bucket)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        temporary = os.path.join(directory, f"status.{secrets.token_hex(6)}")
        with open(temporary, "w") as handle:
            handle.write(status)
        os.replace(temporary, os.path.join(directory, "status"))
        self._status.pop(bucket, None)

    def drop_bucket(self, bucket: str) -> None:
        """Forget a bucket's versions and status (the bucket is being deleted).

        Raises:
            S3Error: BucketNotEmpty while versions are kept.
        """
        if self._any_kept(bucket):
            raise S3Error(
                "BucketNotEmpty",
                "The bucket keeps older versions of objects.",
                fix="delete every version (ListObjectVersions, then DeleteObject with versionId)",
                resource=bucket,
            )
        shutil.rmtree(os.path.join(self._root, bucket), ignore_errors=True)
        self._status.pop(bucket, None)

    # writes (called under the key's lock)

    def assign(self, bucket: str, key: str, meta: ObjectMeta) -> bool:
        """Give a new object its version id; whether the bucket versions (before a publish)."""
        status = "" if is_directory_key(key) else self.status(bucket)
        meta.version_id = _new_id() if status == ENABLED else ""
        return bool(status)

    def keep_current(self, bucket: str, key: str) -> None:
        """Keep the current version aside, as a write is about to replace it (under the lock).

        While suspended a ``null`` current version is replaced, not kept, and
        a kept ``null`` version goes: the write is the new ``null`` version.
        """
        suspended = self.status(bucket) == SUSPENDED
        if suspended:
            self._remove(bucket, key, NULL)
        current = self._files.current(bucket, key)
        if current is None or (suspended and not current.meta.version_id):
            return
        self._keep(bucket, key, current)

    def remove(self, bucket: str, key: str, version_id: str = "") -> Deleted:
        """Delete as S3 does: a delete marker where versions are kept, else the file itself.

        With ``version_id``, that version goes for good (``delete_version``).
        """
        if version_id not in ("", NULL) and is_directory_key(key):
            raise S3Error("NoSuchVersion", resource=key)  # a directory has one version
        if is_directory_key(key) or (not version_id and not self.status(bucket)):
            self._files.delete(bucket, key)
            return Deleted(NULL, False)
        if version_id:
            return self.delete_version(bucket, key, version_id)
        return self.delete(bucket, key)

    def delete(self, bucket: str, key: str) -> Deleted:
        """Delete ``key`` in a versioned bucket: its current version is kept, a marker made.

        While suspended the marker is the ``null`` version, replacing any.
        """
        with self._files.publish_lock(bucket, key):
            suspended = self.status(bucket) == SUSPENDED
            if suspended:
                self._remove(bucket, key, NULL)
            current = self._files.current(bucket, key)
            if current is not None:
                if not (suspended and not current.meta.version_id):
                    self._keep(bucket, key, current)
                self._files.delete(bucket, key)
            marker = KeptVersion(NULL if suspended else _new_id(), time.time_ns(), True, None)
            self._write_record(bucket, key, marker)
            return Deleted(marker.version_id, True)

    def delete_version(self, bucket: str, key: str, version_id: str) -> Deleted:
        """Delete one version of ``key`` for good (nothing to do when there is none).

        Deleting the current version (or the newest delete marker) brings the
        newest kept version with bytes back in place.
        """
        if not _valid_id(version_id):
            raise S3Error("NoSuchVersion", resource=key)
        with self._files.publish_lock(bucket, key):
            current = self._files.current(bucket, key)
            if current is not None and (current.meta.version_id or NULL) == version_id:
                self._files.delete(bucket, key)
                self._restore_newest(bucket, key)
                return Deleted(version_id, False)
            kept = self._read_record(bucket, key, version_id)
            if kept is None:
                return Deleted(version_id, False)
            self._remove(bucket, key, version_id)
            if current is None:
                self._restore_newest(bucket, key)
            return Deleted(version_id, kept.marker)

    # reads

    def open(self, bucket: str, key: str, version_id: str) -> tuple[int, ObjectInfo]:
        """An open descriptor and the info of one version of ``key``.

        Raises:
            S3Error: NoSuchVersion; MethodNotAllowed for a delete marker (as S3).
        """
        from aifactory.objects.posix.storage import ObjectInfo

        with contextlib.suppress(S3Error):
            fd, info = self._files.open(bucket, key)
            if (info.meta.version_id or NULL) == version_id:
                return fd, info
            os.close(fd)
        kept = self._read_record(bucket, key, version_id)
        if kept is None:
            raise S3Error("NoSuchVersion", resource=key)
        if kept.meta is None:
            error = S3Error("MethodNotAllowed", "This version is a delete marker.", resource=key)
            error.headers.update({"x-amz-delete-marker": "true", "x-amz-version-id": version_id})
            raise error
        path = os.path.join(self._key_dir(bucket, key), _data_name(version_id))
        try:
            fd = os.open(path, _READ_FLAGS)
        except FileNotFoundError:
            raise S3Error("NoSuchVersion", resource=key) from None
        return fd, ObjectInfo(key, path, os.fstat(fd), kept.meta)

    def marker_headers(self, bucket: str, key: str) -> dict[str, str]:
        """What a read of absent ``key`` says: whether its newest version is a delete marker."""
        versions = self.kept_of(bucket, key) if self.status(bucket) else []
        if versions and versions[0].marker:
            return {"x-amz-delete-marker": "true", "x-amz-version-id": versions[0].version_id}
        return {"x-amz-delete-marker": "false"}

    def kept(self, bucket: str, prefix: str) -> dict[str, list[KeptVersion]]:
        """The kept versions of every key starting with ``prefix``, newest first."""
        keys_dir = os.path.join(self._root, bucket, "keys")
        found: dict[str, list[KeptVersion]] = {}
        try:
            entries = os.listdir(keys_dir)
        except FileNotFoundError:
            return found
        for entry in entries:
            directory = os.path.join(keys_dir, entry)
            try:
                with open(os.path.join(directory, "key"), encoding="utf-8") as handle:
                    key = handle.read()
                names = os.listdir(directory)
            except (FileNotFoundError, NotADirectoryError):
                continue
            if not key.startswith(prefix):
                continue
            versions = []
            for name in names:
                if name.endswith(".json"):
                    with contextlib.suppress(FileNotFoundError):
                        with open(os.path.join(directory, name), "rb") as handle:
                            record = KeptVersion.from_bytes(handle.read())
                        if record is not None:
                            versions.append(record)
            if versions:
                found[key] = sorted(versions, key=lambda v: v.since_ns, reverse=True)
        return found

    # inside

    def _keep(self, bucket: str, key: str, current: ObjectInfo) -> None:
        version_id = current.meta.version_id or NULL
        directory = self._key_dir(bucket, key, create=True)
        data = os.path.join(directory, _data_name(version_id))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(data)
        parents, name = split_key(key)
        parent = self._files.walk(bucket, parents, key)
        try:
            os.link(name, data, src_dir_fd=parent, follow_symlinks=False)
        finally:
            os.close(parent)
        meta = current.meta
        meta.version_id = "" if version_id == NULL else version_id
        self._write_record(bucket, key, KeptVersion(version_id, time.time_ns(), False, meta))

    def _restore_newest(self, bucket: str, key: str) -> None:
        """With no current file, put the newest kept version back when it has bytes."""
        versions = self.kept_of(bucket, key)
        newest = versions[0] if versions else None
        if newest is None or newest.meta is None:
            return
        data = os.path.join(self._key_dir(bucket, key), _data_name(newest.version_id))
        self._files.restore_file(bucket, key, data, newest.meta)
        self._remove(bucket, key, newest.version_id)

    def kept_of(self, bucket: str, key: str) -> list[KeptVersion]:
        """The kept versions of one key, newest first."""
        directory = self._key_dir(bucket, key)
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return []
        versions = []
        for name in names:
            if name.endswith(".json"):
                record = self._read_record(bucket, key, name[: -len(".json")])
                if record is not None:
                    versions.append(record)
        return sorted(versions, key=lambda v: v.since_ns, reverse=True)

    def _read_record(self, bucket: str, key: str, version_id: str) -> KeptVersion | None:
        if not _valid_id(version_id):
            return None
        path = os.path.join(self._key_dir(bucket, key), f"{version_id}.json")
        try:
            with open(path, "rb") as handle:
                return KeptVersion.from_bytes(handle.read())
        except FileNotFoundError:
            return None

    def _write_record(self, bucket: str, key: str, record: KeptVersion) -> None:
        directory = self._key_dir(bucket, key, create=True)
        temporary = os.path.join(directory, f".{secrets.token_hex(6)}")
        with open(temporary, "wb") as handle:
            handle.write(record.to_bytes())
        os.replace(temporary, os.path.join(directory, f"{record.version_id}.json"))

    def _remove(self, bucket: str, key: str, version_id: str) -> None:
        directory = self._key_dir(bucket, key)
        for name in (f"{version_id}.json", _data_name(version_id)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(directory, name))
        with contextlib.suppress(FileNotFoundError, OSError):
            if os.listdir(directory) == ["key"]:
                os.unlink(os.path.join(directory, "key"))
                os.rmdir(directory)

    def _any_kept(self, bucket: str) -> bool:
        with contextlib.suppress(FileNotFoundError):
            return bool(os.listdir(os.path.join(self._root, bucket, "keys")))
        return False

    def _key_dir(self, bucket: str, key: str, create: bool = False) -> str:
        digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()
        directory = os.path.join(self._root, bucket, "keys", digest)
        if create and not os.path.isdir(directory):
            os.makedirs(directory, mode=0o700, exist_ok=True)
            with open(os.path.join(directory, "key"), "w", encoding="utf-8") as handle:
                handle.write(key)
        return directory


def _new_id() -> str:
    return f"{time.time_ns():016x}{secrets.token_hex(8)}"


def _valid_id(version_id: str) -> bool:
    return version_id == NULL or (
        len(version_id) == 32 and all(c in "0123456789abcdef" for c in version_id)
    )


def _data_name(version_id: str) -> str:
    return f"{version_id}.data"
