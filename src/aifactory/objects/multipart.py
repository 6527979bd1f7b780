"""Multipart uploads, staged under ``ROOT/.aifactory/uploads/BUCKET/UPLOAD_ID/``.

::

    upload.json        key, initiation time, content type, user metadata, checksum algorithm
    3-<token>          part 3's bytes (a fresh name for every attempt)
    3.json             part 3's record: file name, size, ETag, checksum (renamed into place)

A retried part writes a new file and then swaps the record, so the record
always names a complete file. Completion concatenates the parts into a
temporary file beside the target with ``copy_file_range`` (the bytes never
pass through Python), then renames it into place like any other write.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import re
import secrets
import time
from dataclasses import dataclass

from aifactory.identity import Identity
from aifactory.objects import checksums
from aifactory.objects.errors import S3Error
from aifactory.objects.metadata import ObjectMeta
from aifactory.objects.ownership import STAGED_MODE, hand_file
from aifactory.objects.storage import FileStore, remove_tree

MIN_PART_BYTES = 5 * 1024 * 1024
MAX_PART_NUMBER = 10_000
_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")


@dataclass
class Part:
    """One uploaded part."""

    number: int
    etag: str
    size: int
    checksum: str
    last_modified: float
    file: str


@dataclass
class Upload:
    """One multipart upload in progress."""

    upload_id: str
    key: str
    initiated: float
    content_type: str
    user: dict[str, str]
    headers: dict[str, str]
    checksum_algorithm: str


class Multipart:
    """The multipart uploads of one file store."""

    def __init__(self, files: FileStore, min_part_bytes: int = MIN_PART_BYTES) -> None:
        self._files = files
        self._uploads = os.path.join(files.system_dir, "uploads")
        self.min_part_bytes = min_part_bytes

    def create(self, bucket: str, upload: Upload) -> str:
        """Start an upload; returns its id."""
        upload.upload_id = secrets.token_hex(16)
        directory = self._dir(bucket, upload.upload_id)
        os.makedirs(directory)
        _write_json(os.path.join(directory, "upload.json"), upload.__dict__)
        return upload.upload_id

    def upload(self, bucket: str, key: str, upload_id: str) -> Upload:
        """The upload ``upload_id`` of ``key``; NoSuchUpload when absent."""
        if not _UPLOAD_ID.fullmatch(upload_id):
            raise _no_such_upload(upload_id)
        try:
            with open(os.path.join(self._dir(bucket, upload_id), "upload.json")) as handle:
                upload = Upload(**json.load(handle))
        except (FileNotFoundError, ValueError, TypeError):
            raise _no_such_upload(upload_id) from None
        if upload.key != key:
            raise _no_such_upload(upload_id)
        return upload

    def part_writer(self, bucket: str, upload_id: str, number: int) -> PartWriter:
        """A writer for part ``number`` of a (checked) upload."""
        if not 1 <= number <= MAX_PART_NUMBER:
            raise S3Error(
                "InvalidArgument", f"Part numbers run from 1 to {MAX_PART_NUMBER}, not {number}."
            )
        return PartWriter(self._dir(bucket, upload_id), number, self._files.owners.of(bucket))

    def parts(self, bucket: str, upload_id: str) -> list[Part]:
        """Every uploaded part, by number."""
        directory = self._dir(bucket, upload_id)
        found = []
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(directory):
                stem, _, extension = name.partition(".")
                if extension == "json" and stem.isdigit():
                    part = _read_part(directory, int(stem))
                    if part is not None:
                        found.append(part)
        return sorted(found, key=lambda p: p.number)

    def complete(
        self, bucket: str, upload: Upload, requested: list[tuple[int, str, str]]
    ) -> ObjectMeta:
        """Assemble the listed parts (number, ETag, checksum or "") into the object."""
        directory = self._dir(bucket, upload.upload_id)
        if not requested:
            raise S3Error("MalformedXML", "The part list is empty.")
        numbers = [number for number, _etag, _checksum in requested]
        if any(later <= earlier for earlier, later in itertools.pairwise(numbers)):
            raise S3Error("InvalidPartOrder", fix="list the parts by ascending part number")
        parts = []
        for index, (number, etag, checksum) in enumerate(requested):
            part = _read_part(directory, number)
            if part is None or part.etag.strip('"') != etag.strip('"'):
                raise S3Error("InvalidPart", f"Part {number} is missing or its ETag differs.")
            if checksum and part.checksum and checksum != part.checksum:
                raise S3Error("InvalidPart", f"Part {number}'s checksum differs.")
            if index < len(requested) - 1 and part.size < self.min_part_bytes:
                raise S3Error(
                    "EntityTooSmall",
                    f"Part {number} has {part.size} bytes; all parts but the last need "
                    f"at least {self.min_part_bytes}.",
                )
            parts.append(part)
        writer = self._files.writer(bucket, upload.key)
        try:
            for part in parts:
                fd = os.open(os.path.join(directory, part.file), os.O_RDONLY | os.O_CLOEXEC)
                try:
                    writer.copy_from(fd, 0, part.size)
                finally:
                    os.close(fd)
        except BaseException:
            writer.abort()
            raise
        md5s = b"".join(bytes.fromhex(part.etag.strip('"')) for part in parts)
        etag = f'"{hashlib.md5(md5s, usedforsecurity=False).hexdigest()}-{len(parts)}"'
        checksum = ""
        if upload.checksum_algorithm and all(part.checksum for part in parts):
            checksum = checksums.composite(
                upload.checksum_algorithm, [part.checksum for part in parts]
            )
        meta = ObjectMeta(
            etag,
            0,
            0,
            upload.content_type,
            upload.user,
            upload.headers,
            upload.checksum_algorithm if checksum else "",
            checksum,
            len(parts),
        )
        meta = writer.publish(meta)
        remove_tree(directory)
        return meta

    def abort(self, bucket: str, upload_id: str) -> None:
        """Drop an upload and its parts."""
        remove_tree(self._dir(bucket, upload_id))

    def uploads(self, bucket: str, prefix: str = "") -> list[Upload]:
        """Uploads in progress in ``bucket``, by key then initiation time."""
        found = []
        with contextlib.suppress(FileNotFoundError):
            for upload_id in os.listdir(os.path.join(self._uploads, bucket)):
                try:
                    path = os.path.join(self._dir(bucket, upload_id), "upload.json")
                    with open(path) as handle:
                        upload = Upload(**json.load(handle))
                except (OSError, ValueError, TypeError):
                    continue
                if upload.key.startswith(prefix):
                    found.append(upload)
        return sorted(found, key=lambda u: (u.key, u.initiated))

    def drop_bucket(self, bucket: str) -> None:
        """Forget every upload of a deleted bucket."""
        remove_tree(os.path.join(self._uploads, bucket))

    def _dir(self, bucket: str, upload_id: str) -> str:
        return os.path.join(self._uploads, bucket, upload_id)


class PartWriter:
    """Writes one part under a fresh name; ``publish`` records it.

    The part file is the bucket owner's (its bytes count against the owner's
    quota), mode 0600 in the control plane's own staging directory.
    """

    def __init__(self, directory: str, number: int, owner: Identity | None = None) -> None:
        self._directory = directory
        self._owner = owner
        self.number = number
        self.file = f"{number}-{secrets.token_hex(8)}"
        self._fd = -1

    @property
    def fd(self) -> int:
        """The part file's descriptor, created on first use."""
        if self._fd < 0:
            try:
                self._fd = os.open(
                    os.path.join(self._directory, self.file),
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                    STAGED_MODE,
                )
            except FileNotFoundError:
                raise _no_such_upload(os.path.basename(self._directory)) from None
            try:
                hand_file(self._fd, self._owner, STAGED_MODE)
            except BaseException:
                self.abort()
                raise
        return self._fd

    def write(self, data: bytes | memoryview) -> None:
        """Append bytes."""
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]

    def publish(self, etag: str, checksum: str) -> Part:
        """Close the part and make it the upload's part ``number``."""
        size = os.fstat(self.fd).st_size
        os.close(self._fd)
        self._fd = -2
        part = Part(self.number, etag, size, checksum, time.time(), self.file)
        try:
            _write_json(os.path.join(self._directory, f"{self.number}.json"), part.__dict__)
        except FileNotFoundError:
            raise _no_such_upload(os.path.basename(self._directory)) from None
        return part

    def abort(self) -> None:
        """Drop the part file."""
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = -2
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self._directory, self.file))


def _read_part(directory: str, number: int) -> Part | None:
    try:
        with open(os.path.join(directory, f"{number}.json")) as handle:
            return Part(**json.load(handle))
    except (OSError, ValueError, TypeError):
        return None


def _write_json(path: str, document: dict[str, object]) -> None:
    temporary = f"{path}.{secrets.token_hex(6)}"
    with open(temporary, "w") as handle:
        json.dump(document, handle)
    os.replace(temporary, path)


def _no_such_upload(upload_id: str) -> S3Error:
    return S3Error("NoSuchUpload", resource=upload_id)
