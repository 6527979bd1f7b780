"""Multipart uploads, staged under ``ROOT/.aifactory/uploads/BUCKET/UPLOAD_ID/``.

::

    upload.json        key, initiation time, content type, user metadata, checksum algorithm
    stride             the slot size: the length of the first part that announced one
    data               parts in their slots: part N at (N - 1) * stride
    3.slot             part 3's slot is taken (once per upload, by its first attempt)
    3-<token>          part 3's bytes, when it has no slot (retries, copies, odd sizes)
    3.json             part 3's record: file, offset, size, ETag, checksum (renamed into place)
    sealed             completion began: no part enters ``data`` any more

    ROOT/.aifactory/uploads/BUCKET/.completed/UPLOAD_ID.json
                       a completed upload's result, for an hour: completing
                       it again answers the same while the object is unchanged

Clients cut an object into equal parts, so the first attempt of each part
writes straight to where it belongs in ``data``; completion then truncates
``data`` and renames it into place (``FileWriter.adopt``), no byte copied.
Anything else (a retry, a copy, sizes that do not tile, a mount in the way)
takes the general path: a file per attempt, concatenated on completion with
``copy_file_range`` (in the kernel, never through Python). A retried part
writes a new file and then swaps the record, so the record always names
complete bytes that no other attempt writes to.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import json
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aifactory.identity import Identity
from aifactory.objects.errors import S3Error
from aifactory.objects.posix import checksums
from aifactory.objects.posix.metadata import ObjectMeta, kept_part_checksums, part_runs
from aifactory.objects.posix.ownership import STAGED_MODE, hand_file
from aifactory.objects.posix.storage import FileStore, FileWriter, ObjectInfo, remove_tree

MIN_PART_BYTES = 5 * 1024 * 1024
MAX_PART_NUMBER = 10_000
MAX_OBJECT_BYTES = 5 * 1024**4
# Beyond this many runs of equal part sizes an object keeps no part table
# (extended attributes hold a few KiB): reads by part number are refused.
MAX_PART_RUNS = 64
_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
_DATA, _STRIDE, _SEALED = "data", "stride", "sealed"
_COMPLETED = ".completed"
COMPLETED_KEEP_S = 3600.0
_PRUNE_EVERY_S = 60.0


@dataclass
class Part:
    """One uploaded part."""

    number: int
    etag: str
    size: int
    checksum: str
    last_modified: float
    file: str
    offset: int = 0


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
    checksum_type: str = ""  # COMPOSITE or FULL_OBJECT, with an algorithm
    acl: dict[str, str] = field(default_factory=dict)  # the object's grants, once completed


@dataclass
class Completion:
    """What completing an upload gave: the object's key, ETag and checksum."""

    key: str
    etag: str
    checksum_algorithm: str
    checksum: str
    completed: float


class Multipart:
    """The multipart uploads of one file store."""

    def __init__(self, files: FileStore, min_part_bytes: int = MIN_PART_BYTES) -> None:
        self._files = files
        self._uploads = os.path.join(files.system_dir, "uploads")
        self.min_part_bytes = min_part_bytes
        self._pruned: dict[str, float] = {}

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

    def part_writer(
        self, bucket: str, upload_id: str, number: int, size: int | None = None
    ) -> PartWriter:
        """A writer for part ``number`` of a (checked) upload; ``size``: its announced length."""
        if not 1 <= number <= MAX_PART_NUMBER:
            raise S3Error(
                "InvalidArgument", f"Part numbers run from 1 to {MAX_PART_NUMBER}, not {number}."
            )
        owner = self._files.owners.of(bucket)
        return PartWriter(self._dir(bucket, upload_id), number, owner, size)

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
        self,
        bucket: str,
        upload: Upload,
        requested: list[tuple[int, str, str]],
        check: Callable[[ObjectInfo | None], None] | None = None,
        expected_checksum: str = "",
    ) -> ObjectMeta:
        """Assemble the listed parts (number, ETag, checksum or "") into the object.

        ``check`` (conditional writes) sees the object about to be replaced
        first, and again under the key's lock as the new one is renamed in.
        ``expected_checksum``, the client's whole-object checksum of the
        upload's algorithm and type, must be the one the parts give.
        """
        directory = self._dir(bucket, upload.upload_id)
        if check is not None:
            check(self._files.current(bucket, upload.key))
        if not requested:
            raise S3Error("MalformedXML", "The part list is empty.")
        numbers = [number for number, _etag, _checksum in requested]
        if any(later < earlier for earlier, later in itertools.pairwise(numbers)):
            raise S3Error("InvalidPartOrder", fix="list the parts by ascending part number")
        # A part listed twice (a client that re-sent it) is its last listing, as in S3.
        requested = list({entry[0]: entry for entry in requested}.values())
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
        checksum = _object_checksum(upload, parts)
        if expected_checksum and expected_checksum.strip() != checksum:
            raise S3Error(
                "BadDigest",
                f"The {upload.checksum_algorithm.upper() or 'checksum'} you specified does not "
                "match the one the parts give.",
            )
        writer = self._files.writer(bucket, upload.key)
        adopted = False
        try:
            adopted = _adopt_data(directory, parts, writer)
            if not adopted:
                for part in parts:
                    fd = os.open(os.path.join(directory, part.file), os.O_RDONLY | os.O_CLOEXEC)
                    try:
                        writer.copy_from(fd, part.offset, part.size)
                    finally:
                        os.close(fd)
        except FileNotFoundError:
            writer.abort()
            raise _no_such_upload(upload.upload_id) from None  # completed or aborted meanwhile
        except BaseException:
            writer.abort()
            raise
        md5s = b"".join(bytes.fromhex(part.etag.strip('"')) for part in parts)
        etag = f'"{hashlib.md5(md5s, usedforsecurity=False).hexdigest()}-{len(parts)}"'
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
            part_runs=part_runs([part.size for part in parts], MAX_PART_RUNS),
            acl=dict(upload.acl),
            part_checksums=kept_part_checksums([part.checksum for part in parts]),
        )
        try:
            meta = writer.publish(meta, check)
        except S3Error:
            if adopted:
                remove_tree(directory)  # its data went with the writer: the upload is spent
            raise
        remove_tree(directory)
        done = Completion(
            upload.key, meta.etag, meta.checksum_algorithm, meta.checksum, time.time()
        )
        self._remember(bucket, upload.upload_id, done)
        return meta

    def completed(self, bucket: str, key: str, upload_id: str) -> Completion | None:
        """How ``upload_id`` of ``key`` was completed, if it was and its object is unchanged."""
        if not _UPLOAD_ID.fullmatch(upload_id):
            return None
        path = os.path.join(self._uploads, bucket, _COMPLETED, f"{upload_id}.json")
        try:
            with open(path) as handle:
                done = Completion(**json.load(handle))
        except (OSError, ValueError, TypeError):
            return None
        if done.key != key or time.time() - done.completed > COMPLETED_KEEP_S:
            return None
        current = self._files.current(bucket, key)
        if current is None or current.meta.etag != done.etag:
            return None
        return done

    def _remember(self, bucket: str, upload_id: str, done: Completion) -> None:
        directory = os.path.join(self._uploads, bucket, _COMPLETED)
        os.makedirs(directory, exist_ok=True)
        _write_json(os.path.join(directory, f"{upload_id}.json"), done.__dict__)
        now = time.time()
        if now - self._pruned.get(bucket, 0.0) < _PRUNE_EVERY_S:
            return
        self._pruned[bucket] = now
        with os.scandir(directory) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):
                    if now - entry.stat().st_mtime > COMPLETED_KEEP_S:
                        os.unlink(entry.path)

    def abort(self, bucket: str, upload_id: str) -> None:
        """Drop an upload and its parts."""
        remove_tree(self._dir(bucket, upload_id))

    def uploads(self, bucket: str, prefix: str = "") -> list[Upload]:
        """Uploads in progress in ``bucket``, by key then initiation time."""
        found = []
        with contextlib.suppress(FileNotFoundError):
            for upload_id in os.listdir(os.path.join(self._uploads, bucket)):
                if upload_id == _COMPLETED:
                    continue
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
    """Writes one part into its slot of ``data`` or under a fresh name; ``publish`` records it.

    Part files are the bucket owner's (their bytes count against the owner's
    quota), mode 0600 in the control plane's own staging directory.

    Args:
        size: The part's announced length; without one (a copy) the part
            gets a file of its own.
    """

    def __init__(
        self, directory: str, number: int, owner: Identity | None = None, size: int | None = None
    ) -> None:
        self._directory = directory
        self._owner = owner
        self._size = size
        self.number = number
        self.file = f"{number}-{secrets.token_hex(8)}"
        self._offset = -1  # where in ``data`` this part goes; -1: a file of its own
        self._written = 0
        self._fd = -1

    @property
    def fd(self) -> int:
        """The part's descriptor, opened on first use."""
        if self._fd < 0:
            try:
                self._fd = self._open()
            except FileNotFoundError:
                raise _no_such_upload(os.path.basename(self._directory)) from None
            try:
                hand_file(self._fd, self._owner, STAGED_MODE)
            except BaseException:
                self.abort()
                raise
        return self._fd

    def _open(self) -> int:
        offset = self._slot()
        if offset >= 0:
            flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
            fd = os.open(os.path.join(self._directory, _DATA), flags, STAGED_MODE)
            # Sealed after the slot was taken: completion may already own ``data``.
            if not os.path.exists(os.path.join(self._directory, _SEALED)):
                self._offset, self.file = offset, _DATA
                return fd
            os.close(fd)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        return os.open(os.path.join(self._directory, self.file), flags, STAGED_MODE)

    def _slot(self) -> int:
        """The offset of this part's slot in ``data``, taken now; -1 when it gets none."""
        if not self._size or os.path.exists(os.path.join(self._directory, _SEALED)):
            return -1
        stride = _claim_stride(self._directory, self._size)
        offset = (self.number - 1) * stride
        if self._size > stride or offset + self._size > MAX_OBJECT_BYTES:
            return -1
        try:
            os.close(_create_exclusive(os.path.join(self._directory, f"{self.number}.slot")))
        except FileExistsError:
            return -1  # an earlier attempt's: its record may point there
        return offset

    def write(self, data: bytes | memoryview) -> None:
        """Append bytes."""
        view = memoryview(data)
        fd = self.fd
        if self._offset < 0:
            while view:
                view = view[os.write(fd, view) :]
            return
        assert self._size is not None
        if self._written + len(view) > self._size:
            announced = f"The part is longer than the {self._size} bytes announced."
            raise S3Error("IncompleteBody", announced)
        while view:
            written = os.pwrite(fd, view, self._offset + self._written)
            self._written += written
            view = view[written:]

    def publish(self, etag: str, checksum: str) -> Part:
        """Close the part and make it the upload's part ``number``."""
        fd = self.fd
        size = os.fstat(fd).st_size if self._offset < 0 else self._written
        os.close(fd)
        self._fd = -2
        offset = max(self._offset, 0)
        part = Part(self.number, etag, size, checksum, time.time(), self.file, offset)
        try:
            _write_json(os.path.join(self._directory, f"{self.number}.json"), part.__dict__)
        except FileNotFoundError:
            raise _no_such_upload(os.path.basename(self._directory)) from None
        return part

    def abort(self) -> None:
        """Drop the part file (a slot stays taken, unused)."""
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = -2
        if self._offset < 0:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self._directory, self.file))


def _object_checksum(upload: Upload, parts: list[Part]) -> str:
    """The object's checksum from its parts', of the upload's algorithm and type ("": none)."""
    algorithm = upload.checksum_algorithm
    if not algorithm or not all(part.checksum for part in parts):
        return ""
    if upload.checksum_type == checksums.FULL_OBJECT:
        return checksums.full_object(algorithm, [(part.checksum, part.size) for part in parts])
    return checksums.composite(algorithm, [part.checksum for part in parts])


def _claim_stride(directory: str, size: int) -> int:
    """The upload's slot size: ``size`` if this part is the first to claim it."""
    path = os.path.join(directory, _STRIDE)
    with contextlib.suppress(FileNotFoundError), open(path) as handle:
        return int(handle.read())
    temporary = f"{path}.{secrets.token_hex(6)}"
    with open(temporary, "w") as handle:
        handle.write(str(size))
    try:
        os.link(temporary, path)  # atomic, and never replaces an earlier claim
        return size
    except FileExistsError:
        with open(path) as handle:
            return int(handle.read())
    finally:
        os.unlink(temporary)


def _adopt_data(directory: str, parts: list[Part], writer: FileWriter) -> bool:
    """Publish ``data`` itself when the listed parts tile it from the start; False otherwise.

    Completion seals the upload first; a slot outside the list whose part is
    not recorded there may still have a writer, which would write past the
    end of the published file, so then the parts are copied instead.
    """
    stride = parts[0].size
    for index, part in enumerate(parts):
        tiles = part.number == index + 1 and part.offset == index * stride
        if part.file != _DATA or not tiles or (part is not parts[-1] and part.size != stride):
            return False
    with contextlib.suppress(FileExistsError):
        os.close(_create_exclusive(os.path.join(directory, _SEALED)))
    listed = {part.number for part in parts}
    for name in os.listdir(directory):
        stem, _, extension = name.partition(".")
        if extension == "slot" and int(stem) not in listed:
            record = _read_part(directory, int(stem))
            if record is None or record.file != _DATA:
                return False
    path = os.path.join(directory, _DATA)
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        os.ftruncate(fd, (len(parts) - 1) * stride + parts[-1].size)
    finally:
        os.close(fd)
    try:
        writer.adopt(path)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        return False
    return True


def _create_exclusive(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, STAGED_MODE)


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
