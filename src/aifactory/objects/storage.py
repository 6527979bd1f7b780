"""The POSIX side: buckets are directories, objects are files, written atomically.

Every method is blocking and runs in a worker thread. A write goes to
``.aifactory-tmp-*`` in the target directory and is renamed into place, so a
reader sees the old object or the new one, never a part; concurrent writers
of one key each rename a whole file and the last one wins. Paths come from
keys checked by ``paths.check_key``, and every resolved path must stay inside
its bucket (a symbolic link cannot lead out).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
from dataclasses import dataclass

from aifactory.objects.errors import S3Error
from aifactory.objects.metadata import MetadataStore, ObjectMeta, foreign_meta, xattrs_supported
from aifactory.objects.paths import RESERVED_PREFIX, SYSTEM_DIR, key_path

_COPY_CHUNK_BYTES = 8 * 1024 * 1024
_TEMP_PREFIX = RESERVED_PREFIX + "tmp-"


@dataclass
class ObjectInfo:
    """An existing object: where it is, its stat and its metadata."""

    key: str
    path: str
    st: os.stat_result
    meta: ObjectMeta


class FileStore:
    """Buckets and objects under one root directory.

    Args:
        root: The directory whose subdirectories are the buckets.
    """

    def __init__(self, root: str) -> None:
        os.makedirs(root, exist_ok=True)
        self.root = os.path.realpath(root)
        self.system_dir = os.path.join(self.root, SYSTEM_DIR)
        os.makedirs(self.system_dir, exist_ok=True)
        self.meta = MetadataStore(self.root, xattrs_supported(self.system_dir))

    # buckets

    def bucket_dir(self, bucket: str) -> str:
        """The directory of a (checked) bucket name."""
        return os.path.join(self.root, bucket)

    def bucket_exists(self, bucket: str) -> bool:
        """Whether the bucket's directory exists."""
        return os.path.isdir(self.bucket_dir(bucket))

    def create_bucket(self, bucket: str) -> bool:
        """Make the bucket's directory; False when it already exists."""
        try:
            os.mkdir(self.bucket_dir(bucket))
        except FileExistsError:
            return False
        return True

    def delete_bucket(self, bucket: str) -> None:
        """Remove an empty bucket (stale temporary files do not count)."""
        directory = self.bucket_dir(bucket)
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            raise S3Error("NoSuchBucket", resource=bucket) from None
        if any(not name.startswith(_TEMP_PREFIX) for name in names):
            raise S3Error("BucketNotEmpty", fix="delete every object first", resource=bucket)
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(directory, name))
        try:
            os.rmdir(directory)
        except OSError as exc:
            raise S3Error("BucketNotEmpty", resource=bucket) from exc

    def bucket_names(self) -> list[tuple[str, float]]:
        """Every top-level directory (bucket) with its change time."""
        found = []
        with os.scandir(self.root) as entries:
            for entry in entries:
                if not entry.name.startswith(".") and entry.is_dir():
                    found.append((entry.name, entry.stat().st_ctime))
        return sorted(found)

    # objects

    def head(self, bucket: str, key: str) -> ObjectInfo:
        """The object at ``key``; NoSuchKey when there is none."""
        path = key_path(self.bucket_dir(bucket), key)
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            raise _no_such_key(bucket, key) from None
        self._check_inside(bucket, path, key)
        return self._info(bucket, key, path, st)

    def _info(
        self, bucket: str, key: str, path: str, st: os.stat_result, fd: int | None = None
    ) -> ObjectInfo:
        is_dir = stat.S_ISDIR(st.st_mode)
        if key.endswith("/") != is_dir or not (is_dir or stat.S_ISREG(st.st_mode)):
            raise _no_such_key(bucket, key)
        meta = self.meta.read(bucket, key, path, st, fd)
        if meta is None:
            if is_dir:
                raise _no_such_key(bucket, key)
            meta = foreign_meta(path, st)
        return ObjectInfo(key, path, st, meta)

    def info_of_listed(self, bucket: str, key: str, path: str) -> ObjectInfo | None:
        """The object behind a listing entry; None when it vanished meanwhile."""
        try:
            return self._info(bucket, key, path, os.stat(path))
        except (OSError, S3Error):
            return None

    def open(self, bucket: str, key: str) -> tuple[int, ObjectInfo]:
        """An open read descriptor and the object's info (from that descriptor)."""
        path = key_path(self.bucket_dir(bucket), key)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            raise _no_such_key(bucket, key) from None
        try:
            self._check_inside(bucket, path, key)
            return fd, self._info(bucket, key, path, os.fstat(fd), fd)
        except BaseException:
            os.close(fd)
            raise

    def writer(self, bucket: str, key: str) -> FileWriter:
        """A writer that publishes a new object at ``key`` when done."""
        return FileWriter(self, bucket, key)

    def make_directory(self, bucket: str, key: str, meta: ObjectMeta) -> ObjectMeta:
        """Create the directory marker ``key`` (ending in ``/``)."""
        path = key_path(self.bucket_dir(bucket), key)
        _make_dirs(path, key)
        self._check_inside(bucket, path, key)
        meta.mtime_ns = os.stat(path).st_mtime_ns
        self.meta.mark_directory(bucket, key, path, meta)
        return meta

    def delete(self, bucket: str, key: str) -> None:
        """Delete an object (nothing to do when it is absent) and prune empty directories."""
        bucket_dir = self.bucket_dir(bucket)
        path = key_path(bucket_dir, key)
        try:
            self._check_inside(bucket, path, key)
            if key.endswith("/"):
                if not os.path.isdir(path):
                    return
                self.meta.remove(bucket, key, path)
                _remove_empty_dir(path)
            else:
                if os.path.isdir(path):
                    return
                os.unlink(path)
                self.meta.remove(bucket, key, path)
        except (FileNotFoundError, NotADirectoryError):
            return
        self._prune(bucket, os.path.dirname(path))

    def _prune(self, bucket: str, directory: str) -> None:
        bucket_dir = self.bucket_dir(bucket)
        while directory != bucket_dir and directory.startswith(bucket_dir + os.sep):
            marker_key = os.path.relpath(directory, bucket_dir) + "/"
            if self.meta.read(bucket, marker_key, directory, os.stat(directory)) is not None:
                return
            if not _remove_empty_dir(directory):
                return
            directory = os.path.dirname(directory)

    def _check_inside(self, bucket: str, path: str, key: str) -> None:
        real = os.path.realpath(path)
        if not real.startswith(os.path.realpath(self.bucket_dir(bucket)) + os.sep):
            raise S3Error("AccessDenied", "The key leads outside its bucket.", resource=key)


class FileWriter:
    """Writes one object to a temporary file and renames it into place.

    The temporary file is created on the first write, in the target directory
    (so the rename stays on one filesystem).
    """

    def __init__(self, store: FileStore, bucket: str, key: str) -> None:
        self._store = store
        self._bucket = bucket
        self.key = key
        self.path = key_path(store.bucket_dir(bucket), key)
        self._temporary = ""
        self._fd = -1

    @property
    def fd(self) -> int:
        """The temporary file's descriptor, opening it first if needed."""
        if self._fd < 0:
            self._open()
        return self._fd

    def _open(self) -> None:
        if os.path.isdir(self.path):
            raise S3Error(
                "ExistingObjectIsDirectory",
                f"{self.key!r} is a directory here (it holds other keys).",
                fix=f"write to {self.key + '/'!r} plus a name, or delete the keys under it",
                resource=self.key,
            )
        directory = os.path.dirname(self.path)
        for _attempt in range(5):
            _make_dirs(directory, self.key)
            self._store._check_inside(self._bucket, self.path, self.key)
            self._temporary = os.path.join(directory, _TEMP_PREFIX + secrets.token_hex(8))
            try:
                self._fd = os.open(
                    self._temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666
                )
                return
            except FileNotFoundError:
                continue  # a concurrent delete pruned the directory: make it again
        raise S3Error("InternalError", "The target directory keeps disappearing.")

    def write(self, data: bytes | memoryview) -> None:
        """Append bytes."""
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]

    def copy_from(self, source_fd: int, offset: int, count: int) -> None:
        """Append ``count`` bytes of another file, in the kernel where it can."""
        copy_range(source_fd, self.fd, offset, count)

    def publish(self, meta: ObjectMeta) -> ObjectMeta:
        """Attach ``meta`` (size and mtime filled in) and rename the file into place."""
        st = os.fstat(self.fd)
        meta.size, meta.mtime_ns = st.st_size, st.st_mtime_ns
        try:
            self._store.meta.before_publish(self._fd, meta)
            os.close(self._fd)
            self._fd = -2
            os.replace(self._temporary, self.path)
        except IsADirectoryError:
            self.abort()
            raise S3Error("ExistingObjectIsDirectory", resource=self.key) from None
        except BaseException:
            self.abort()
            raise
        self._store.meta.after_publish(self._bucket, self.key, meta)
        return meta

    def abort(self) -> None:
        """Drop the temporary file."""
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = -2
        if self._temporary:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._temporary)


def copy_range(source_fd: int, target_fd: int, offset: int, count: int) -> None:
    """Copy bytes between files without passing them through Python where possible."""
    end = offset + count
    try:
        while offset < end:
            copied = os.copy_file_range(source_fd, target_fd, end - offset, offset)
            if copied == 0:
                raise S3Error("InternalError", "The source file is shorter than expected.")
            offset += copied
        return
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
            raise
    with open(source_fd, "rb", closefd=False) as source:
        source.seek(offset)
        while offset < end:
            block = source.read(min(_COPY_CHUNK_BYTES, end - offset))
            if not block:
                raise S3Error("InternalError", "The source file is shorter than expected.")
            os.write(target_fd, block)
            offset += len(block)


def _make_dirs(directory: str, key: str) -> None:
    try:
        os.makedirs(directory, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise S3Error(
            "ObjectParentIsFile",
            f"A parent of {key!r} is an object, so it cannot also be a directory.",
            fix="delete that object or choose another key",
            resource=key,
        ) from None


def _remove_empty_dir(path: str) -> bool:
    try:
        os.rmdir(path)
    except OSError:
        return False
    return True


def _no_such_key(bucket: str, key: str) -> S3Error:
    return S3Error("NoSuchKey", resource=f"/{bucket}/{key}")


def remove_tree(path: str) -> None:
    """Remove a directory tree, ignoring what is already gone."""
    shutil.rmtree(path, ignore_errors=True)
