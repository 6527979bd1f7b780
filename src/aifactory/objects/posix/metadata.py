"""Object metadata kept beside the file: an extended attribute, or a sidecar file.

The record (ETag, content type, lower-case user metadata, checksum, a few
HTTP headers) names the size and mtime of the file it describes. A file
changed behind our back (an HPC job rewrote it) no longer matches, and is
then served like any file written by plain POSIX: content type guessed from
its name and an ETag derived from inode, size and mtime. That ETag has a
``-1`` suffix, which tells clients it is not the MD5 of the content.

Extended attributes (``user.`` namespace) travel with the inode, so a rename
publishes data and metadata at once. Where the filesystem has none, records
live under ``ROOT/.aifactory/meta`` named by a hash of bucket and key.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import mimetypes
import os
import secrets
from dataclasses import dataclass, field

from aifactory.identity import Identity
from aifactory.objects.errors import S3Error
from aifactory.objects.posix.ownership import STAGED_MODE, hand_file

XATTR_NAME = "user.aifactory.meta"
MAX_USER_METADATA_BYTES = 2048
MAX_PART_CHECKSUM_BYTES = 1024
DEFAULT_CONTENT_TYPE = "binary/octet-stream"
# The grantee that stands for anyone at all (S3's AllUsers group).
ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"


@dataclass
class ObjectMeta:
    """What S3 knows about an object beyond its bytes."""

    etag: str
    size: int
    mtime_ns: int
    content_type: str = DEFAULT_CONTENT_TYPE
    user: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    checksum_algorithm: str = ""
    checksum: str = ""
    parts: int = 0
    foreign: bool = False
    # A multipart object's part sizes as runs of [size, count]: clients cut
    # objects into equal parts, so this is two runs, however many parts.
    part_runs: list[list[int]] = field(default_factory=list)
    # Grantee -> "read" (aifactory.objects.s3.acl); the bucket's tenant owns every object.
    acl: dict[str, str] = field(default_factory=dict)
    version_id: str = ""  # "" is the null version (a bucket without versioning)
    # Each part's checksum (base64), in order, when they fit in ``MAX_PART_CHECKSUM_BYTES``.
    part_checksums: list[str] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        """Compact JSON (every field is a str, int, bool or dict of str: no deep copy needed)."""
        return json.dumps(self.__dict__, separators=(",", ":")).encode()

    @property
    def public(self) -> bool:
        """Whether anyone at all may read the object (its ACL grants AllUsers)."""
        return ALL_USERS in self.acl

    def part_checksum(self, number: int) -> str:
        """Part ``number``'s own checksum (a single upload's part 1 is the object); "": unknown."""
        if not self.parts:
            return self.checksum if number == 1 else ""
        return self.part_checksums[number - 1] if number <= len(self.part_checksums) else ""

    def part_range(self, number: int) -> tuple[int, int]:
        """The inclusive byte range of part ``number`` (from 1); a single upload is part 1.

        An empty single upload's part 1 is ``(0, -1)``.

        Raises:
            S3Error: InvalidPartNumber beyond the last part; NotImplemented for a
                multipart object completed before part sizes were kept.
        """
        if not self.parts:
            if number != 1:
                raise _no_such_part(number, 1)
            return 0, self.size - 1
        if not self.part_runs:
            raise S3Error(
                "NotImplemented",
                "This object's part sizes were not kept (it was completed by an older "
                "aifactory, or its parts have too many different sizes).",
                fix="read it by byte range (Range header) instead of by part number",
            )
        start, before = 0, 0
        for size, count in self.part_runs:
            if number <= before + count:
                start += (number - before - 1) * size
                return start, start + size - 1
            start += size * count
            before += count
        raise _no_such_part(number, self.parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> ObjectMeta | None:
        """Parse a record; None when it is not one of ours."""
        try:
            return cls(**json.loads(data))
        except (ValueError, TypeError):
            return None


def check_user_metadata(user: dict[str, str]) -> None:
    """Raise MetadataTooLarge when user metadata exceeds S3's 2 KB."""
    if sum(len(k) + len(v) for k, v in user.items()) > MAX_USER_METADATA_BYTES:
        raise S3Error("MetadataTooLarge", fix="keep x-amz-meta-* headers under 2 KB in total")


def foreign_meta(path: str, st: os.stat_result) -> ObjectMeta:
    """Metadata of a file we did not write (or that changed since)."""
    identity = f"{st.st_ino}-{st.st_size}-{st.st_mtime_ns}".encode()
    etag = f'"{hashlib.md5(identity, usedforsecurity=False).hexdigest()}-1"'
    content_type = mimetypes.guess_type(path)[0] or DEFAULT_CONTENT_TYPE
    return ObjectMeta(etag, st.st_size, st.st_mtime_ns, content_type, foreign=True)


class MetadataStore:
    """Reads and writes ObjectMeta for files under one root.

    Args:
        root: The storage root.
        use_xattr: Extended attributes (True) or sidecar files (False).
    """

    def __init__(self, root: str, use_xattr: bool) -> None:
        self.use_xattr = use_xattr
        self._sidecars = os.path.join(root, ".aifactory", "meta")

    def before_publish(self, fd: int, meta: ObjectMeta) -> None:
        """Attach ``meta`` to a file still under its temporary name (xattr mode)."""
        if self.use_xattr:
            try:
                os.setxattr(fd, XATTR_NAME, meta.to_bytes())
            except OSError as exc:
                if exc.errno in (errno.E2BIG, errno.ENOSPC, errno.ERANGE):
                    raise S3Error("MetadataTooLarge") from exc
                raise

    def after_publish(
        self, bucket: str, key: str, meta: ObjectMeta, owner: Identity | None = None
    ) -> None:
        """Record ``meta`` once the file has its final name (sidecar mode).

        The sidecar is the object's owner's (its quota), in the control plane's own directory.
        """
        if not self.use_xattr:
            path = self._sidecar(bucket, key)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            temporary = f"{path}.{secrets.token_hex(6)}"
            with open(temporary, "wb") as handle:
                hand_file(handle.fileno(), owner, STAGED_MODE)
                handle.write(meta.to_bytes())
            os.replace(temporary, path)

    def mark_directory(
        self, bucket: str, key: str, fd: int, meta: ObjectMeta, owner: Identity | None
    ) -> None:
        """Record a directory marker's metadata on its directory (open as ``fd``)."""
        self.rewrite(bucket, key, fd, meta, owner)

    def rewrite(
        self, bucket: str, key: str, fd: int, meta: ObjectMeta, owner: Identity | None
    ) -> None:
        """Replace the record of the published object (or directory) open as ``fd``."""
        if self.use_xattr:
            os.setxattr(fd, XATTR_NAME, meta.to_bytes())
        else:
            self.after_publish(bucket, key, meta, owner)

    def read(
        self, bucket: str, key: str, path: str, st: os.stat_result, fd: int | None = None
    ) -> ObjectMeta | None:
        """Our record of the object at ``path``, if it still describes the file.

        With ``fd`` (the file already open for reading) the record is read
        from that very file: a writer may have replaced ``path`` meanwhile,
        possibly with the same size and, within the clock's granularity, the
        same mtime.
        """
        data: bytes | None = None
        if self.use_xattr:
            with contextlib.suppress(OSError):
                data = os.getxattr(path if fd is None else fd, XATTR_NAME)
        else:
            with contextlib.suppress(OSError), open(self._sidecar(bucket, key), "rb") as handle:
                data = handle.read()
        meta = ObjectMeta.from_bytes(data) if data else None
        if meta is None:
            return None
        if key.endswith("/"):
            return meta  # a directory's mtime moves with its children
        if meta.size != st.st_size or meta.mtime_ns != st.st_mtime_ns:
            return None
        return meta

    def remove(self, bucket: str, key: str, directory_fd: int | None) -> None:
        """Forget an object's record: a directory marker's (open as ``directory_fd``), a sidecar."""
        if self.use_xattr:
            if directory_fd is not None:
                with contextlib.suppress(OSError):
                    os.removexattr(directory_fd, XATTR_NAME)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._sidecar(bucket, key))

    def _sidecar(self, bucket: str, key: str) -> str:
        digest = hashlib.sha256(f"{bucket}/{key}".encode()).hexdigest()
        return os.path.join(self._sidecars, digest[:2], digest)


def kept_part_checksums(values: list[str]) -> list[str]:
    """The parts' checksums to keep with the object: all, or none.

    None when one is missing, or when they would crowd the metadata (an
    extended attribute holds a few KiB).
    """
    if not all(values) or sum(len(value) for value in values) > MAX_PART_CHECKSUM_BYTES:
        return []
    return values


def part_runs(sizes: list[int], most: int) -> list[list[int]]:
    """Part sizes as runs of [size, count]; empty when that takes more than ``most`` runs."""
    runs: list[list[int]] = []
    for size in sizes:
        if runs and runs[-1][0] == size:
            runs[-1][1] += 1
        else:
            runs.append([size, 1])
    return runs if len(runs) <= most else []


def _no_such_part(number: int, count: int) -> S3Error:
    return S3Error(
        "InvalidPartNumber", f"Part {number} was asked of an object with {count} part(s)."
    )


def xattrs_supported(directory: str) -> bool:
    """Whether files in ``directory`` take ``user.`` extended attributes."""
    probe = os.path.join(directory, f".aifactory-probe-{secrets.token_hex(6)}")
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.setxattr(fd, XATTR_NAME, b"{}")
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
        os.unlink(probe)
