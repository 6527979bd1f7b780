"""The POSIX side: buckets are directories, objects are files, written atomically.

Every method is blocking and runs in a worker thread. A write goes to
``.aifactory-tmp-*`` in the target directory and is renamed into place, so a
reader sees the old object or the new one, never a part; concurrent writers
of one key each rename a whole file and the last one wins. Paths come from
keys checked by ``paths.check_key``, and every path is resolved below an open
descriptor of its bucket without following symbolic links (``dirs``).

Who owns what is written is ``ownership``'s business: with a root control
plane, the bucket's tenant, from the first byte on.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from aifactory.identity import Identity
from aifactory.objects.errors import S3Error
from aifactory.objects.posix.dirs import DIR_FLAGS, descend, split_key
from aifactory.objects.posix.filesystems import LocalTree
from aifactory.objects.posix.metadata import (
    MetadataStore,
    ObjectMeta,
    foreign_meta,
    xattrs_supported,
)
from aifactory.objects.posix.ownership import (
    Ownership,
    hand_dir,
    hand_file,
    object_mode,
    warn_unless_traversable,
)
from aifactory.objects.posix.paths import RESERVED_PREFIX, SYSTEM_DIR, key_path
from aifactory.objects.posix.versions import Versions

_COPY_CHUNK_BYTES = 8 * 1024 * 1024
_TEMP_PREFIX = RESERVED_PREFIX + "tmp-"
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
_READ_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
_DEFAULT_ACL = "system.posix_acl_default"
_ACCESS_ACL = "system.posix_acl_access"
_PUBLISH_LOCKS = 64


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
        ownership: Who owns each bucket's files (left out: whoever runs this).
    """

    def __init__(self, root: str, ownership: Ownership | None = None) -> None:
        os.makedirs(root, exist_ok=True)
        self.root = os.path.realpath(root)
        self.system_dir = os.path.join(self.root, SYSTEM_DIR)
        os.makedirs(self.system_dir, exist_ok=True)
        self.owners = ownership or Ownership()
        self.umask = process_umask()
        if self.owners.enabled:
            # Every tenant's staged parts and sidecars: the control plane's alone.
            os.chmod(self.system_dir, 0o700)
            warn_unless_traversable(self.root)
        self.meta = MetadataStore(self.root, xattrs_supported(self.system_dir))
        self.local = LocalTree(self.root)
        self.versions = Versions(self)
        self._publish_locks = [threading.Lock() for _ in range(_PUBLISH_LOCKS)]

    # buckets

    def bucket_dir(self, bucket: str) -> str:
        """The directory of a (checked) bucket name."""
        return os.path.join(self.root, bucket)

    def bucket_exists(self, bucket: str) -> bool:
        """Whether the bucket's directory exists."""
        return os.path.isdir(self.bucket_dir(bucket))

    def create_bucket(self, bucket: str) -> bool:
        """Make the bucket's directory, its owner's; False when it already exists.

        An existing directory (an admin adopting a tree) keeps its owner and modes.
        """
        owner = self.owners.of(bucket)
        try:
            os.mkdir(self.bucket_dir(bucket), 0o700 if owner is not None else 0o777)
        except FileExistsError:
            return False
        fd = os.open(self.bucket_dir(bucket), DIR_FLAGS)
        try:
            hand_dir(fd, owner)
        finally:
            os.close(fd)
        return True

    def walk(self, bucket: str, names: list[str], key: str, create: bool = False) -> int:
        """An open descriptor of directory ``names`` in ``bucket``, symbolic links refused.

        With ``create``, missing directories (the bucket's own too, should it
        have been removed behind our back) are made, owned by the bucket's owner.

        Raises:
            S3Error: see ``dirs.descend``; NoSuchKey without the bucket's directory.
        """
        owner = self.owners.of(bucket) if create else None
        try:
            fd = os.open(self.bucket_dir(bucket), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            if not create:
                raise _no_such_key(bucket, key) from None
            self.create_bucket(bucket)
            fd = os.open(self.bucket_dir(bucket), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        return descend(fd, names, key, create, owner)

    def open_way(self, bucket: str, key: str) -> None:
        """Let others pass (``o+x``, not list) the directories down to a public object's file.

        Only public files are readable by others, so passing exposes nothing else.
        """
        if not self.owners.enabled:
            return
        parents, _name = split_key(key)
        for depth in range(len(parents) + 1):
            fd = self.walk(bucket, parents[:depth], key)
            try:
                os.fchmod(fd, stat.S_IMODE(os.fstat(fd).st_mode) | 0o001)
            finally:
                os.close(fd)

    def delete_bucket(self, bucket: str) -> None:
        """Remove an empty bucket (stale temporary files do not count)."""
        directory = self.bucket_dir(bucket)
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            raise S3Error("NoSuchBucket", resource=bucket) from None
        if any(not name.startswith(_TEMP_PREFIX) for name in names):
            raise S3Error("BucketNotEmpty", fix="delete every object first", resource=bucket)
        self.versions.drop_bucket(bucket)
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
        fd, info = self.open(bucket, key)
        os.close(fd)
        return info

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
        """An open read descriptor and the object's info (from that descriptor).

        A symbolic link is no object, and a FIFO a job left there cannot
        block the opening thread (``O_NONBLOCK``; ``_info`` refuses it).
        """
        parents, name = split_key(key)
        directory = self.walk(bucket, parents, key)
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=directory)
        except (FileNotFoundError, NotADirectoryError):
            raise _no_such_key(bucket, key) from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _no_such_key(bucket, key) from None
            raise
        finally:
            os.close(directory)
        try:
            path = key_path(self.bucket_dir(bucket), key)
            return fd, self._info(bucket, key, path, os.fstat(fd), fd)
        except BaseException:
            os.close(fd)
            raise

    def publish_lock(self, bucket: str, key: str) -> threading.Lock:
        """The lock a key's check-then-rename holds (one of a few, shared by hash)."""
        index = zlib.crc32(f"{bucket}/{key}".encode()) % _PUBLISH_LOCKS
        return self._publish_locks[index]

    def current(self, bucket: str, key: str) -> ObjectInfo | None:
        """The object now at ``key``, or None."""
        try:
            return self.head(bucket, key)
        except S3Error as exc:
            if exc.code == "NoSuchKey":
                return None
            raise

    def writer(self, bucket: str, key: str) -> FileWriter:
        """A writer that publishes a new object at ``key`` when done."""
        return FileWriter(self, bucket, key)

    def restore_file(self, bucket: str, key: str, source: str, meta: ObjectMeta) -> None:
        """Move a kept version's file ``source`` back to ``key``, with ``meta`` (under its lock)."""
        parents, name = split_key(key)
        directory = self.walk(bucket, parents, key, create=True)
        try:
            os.rename(source, name, dst_dir_fd=directory)
            fd = os.open(name, _READ_FLAGS, dir_fd=directory)
            try:
                self.meta.rewrite(bucket, key, fd, meta, self.owners.of(bucket))
            finally:
                os.close(fd)
        finally:
            os.close(directory)

    def make_directory(self, bucket: str, key: str, meta: ObjectMeta) -> ObjectMeta:
        """Create the directory marker ``key`` (ending in ``/``)."""
        parents, name = split_key(key)
        fd = self.walk(bucket, [*parents, name], key, create=True)
        try:
            meta.mtime_ns = os.fstat(fd).st_mtime_ns
            self.meta.mark_directory(bucket, key, fd, meta, self.owners.of(bucket))
        finally:
            os.close(fd)
        return meta

    def delete(
        self, bucket: str, key: str, check: Callable[[ObjectInfo | None], None] | None = None
    ) -> None:
        """Delete an object (nothing to do when it is absent) and prune empty directories.

        ``check`` sees the object first, under the key's lock, and raises to keep it.
        """
        if check is None:
            self._delete(bucket, key)
            return
        with self.publish_lock(bucket, key):
            check(self.current(bucket, key))
            self._delete(bucket, key)

    def _delete(self, bucket: str, key: str) -> None:
        parents, name = split_key(key)
        try:
            directory = self.walk(bucket, parents, key)
        except S3Error as exc:
            if exc.code == "NoSuchKey":
                return
            raise
        try:
            is_dir = stat.S_ISDIR(os.stat(name, dir_fd=directory, follow_symlinks=False).st_mode)
            if is_dir != key.endswith("/"):
                return
            if is_dir:
                marker = os.open(name, DIR_FLAGS, dir_fd=directory)
                try:
                    self.meta.remove(bucket, key, marker)
                finally:
                    os.close(marker)
                with contextlib.suppress(OSError):
                    os.rmdir(name, dir_fd=directory)
            else:
                os.unlink(name, dir_fd=directory)
                self.meta.remove(bucket, key, None)
        except (FileNotFoundError, NotADirectoryError):
            return
        finally:
            os.close(directory)
        self._prune(bucket, os.path.dirname(key_path(self.bucket_dir(bucket), key)))

    def _prune(self, bucket: str, directory: str) -> None:
        bucket_dir = self.bucket_dir(bucket)
        while directory != bucket_dir and directory.startswith(bucket_dir + os.sep):
            marker_key = os.path.relpath(directory, bucket_dir) + "/"
            if self.meta.read(bucket, marker_key, directory, os.stat(directory)) is not None:
                return
            if not _remove_empty_dir(directory):
                return
            directory = os.path.dirname(directory)


class FileWriter:
    """Writes one object to a temporary file and renames it into place.

    The temporary file is created on the first write, in the target directory
    (so the rename stays on one filesystem), and handed to the bucket's owner
    before its first byte: the final name is never the control plane's.
    """

    def __init__(self, store: FileStore, bucket: str, key: str) -> None:
        self._store = store
        self._bucket = bucket
        self.key = key
        self.path = key_path(store.bucket_dir(bucket), key)
        self._parents, self._name = split_key(key)
        self._owner: Identity | None = None
        self._temporary = ""
        self._dir_fd = -1
        self._fd = -1

    @property
    def fd(self) -> int:
        """The temporary file's descriptor, opening it first if needed."""
        if self._fd < 0:
            self._open()
        return self._fd

    def adopt(self, path: str) -> None:
        """Take the finished file at ``path`` as the new object, instead of writing one.

        It moves beside the target under a temporary name (the staging
        directory is under the root, so one filesystem) and gets what a file
        created there would have: the bucket owner, the object mode, and the
        directory's default ACL (bucket grants). ``publish`` then renames it
        into place like any other write.

        Raises:
            OSError: EXDEV when the target directory is on another filesystem
                (a mount inside the bucket); FileNotFoundError when ``path`` is gone.
        """
        self._open(path)

    def _open(self, source: str = "") -> None:
        if os.path.isdir(self.path):
            raise S3Error(
                "ExistingObjectIsDirectory",
                f"{self.key!r} is a directory here (it holds other keys).",
                fix=f"write to {self.key + '/'!r} plus a name, or delete the keys under it",
                resource=self.key,
            )
        self._owner = self._store.owners.of(self._bucket)
        for _attempt in range(5):
            try:
                self._dir_fd = self._store.walk(self._bucket, self._parents, self.key, create=True)
            except S3Error as exc:
                if exc.code == "NoSuchKey":
                    continue  # a concurrent delete pruned a directory on the way: make it again
                raise
            self._temporary = _TEMP_PREFIX + secrets.token_hex(8)
            try:
                self._fd = self._create(source)
            except FileNotFoundError:
                self._close_dir()
                if source and not os.path.exists(source):
                    raise
                continue  # the directory was pruned after we opened it
            except BaseException:
                self._close_dir()
                raise
            try:
                if source:
                    inherit_default_acl(self._dir_fd, self._fd)
                    if self._owner is None:
                        os.fchmod(self._fd, 0o666 & ~self._store.umask)
                hand_file(self._fd, self._owner)
            except BaseException:
                self.abort()
                raise
            return
        raise S3Error("InternalError", "The target directory keeps disappearing.")

    def _create(self, source: str) -> int:
        """The temporary file, new or moved in from ``source``, open for writing."""
        if not source:
            mode = 0o600 if self._owner is not None else 0o666  # handed over after
            return os.open(self._temporary, _CREATE_FLAGS, mode, dir_fd=self._dir_fd)
        fd = os.open(source, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            os.rename(source, self._temporary, dst_dir_fd=self._dir_fd)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def write(self, data: bytes | memoryview) -> None:
        """Append bytes."""
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]

    def copy_from(self, source_fd: int, offset: int, count: int) -> None:
        """Append ``count`` bytes of another file, in the kernel where it can."""
        copy_range(source_fd, self.fd, offset, count)

    def publish(
        self, meta: ObjectMeta, check: Callable[[ObjectInfo | None], None] | None = None
    ) -> ObjectMeta:
        """Attach ``meta`` (size and mtime filled in) and rename the file into place.

        ``check`` is shown the object about to be replaced (None: there is
        none) and raises to keep it; check, rename and metadata happen under
        the key's lock, so two conditional writers never both pass.
        """
        st = os.fstat(self.fd)
        meta.size, meta.mtime_ns = st.st_size, st.st_mtime_ns
        try:
            versioned = self._store.versions.assign(self._bucket, self.key, meta)
            self._store.meta.before_publish(self._fd, meta)
            if meta.public and self._owner is not None:
                os.fchmod(self._fd, object_mode(public=True))
            os.close(self._fd)
            self._fd = -2
            with self._store.publish_lock(self._bucket, self.key):
                if check is not None:
                    check(self._store.current(self._bucket, self.key))
                if versioned:
                    self._store.versions.keep_current(self._bucket, self.key)
                os.replace(
                    self._temporary, self._name, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd
                )
                self._store.meta.after_publish(self._bucket, self.key, meta, self._owner)
            if meta.public:
                self._store.open_way(self._bucket, self.key)
        except IsADirectoryError:
            self.abort()
            raise S3Error("ExistingObjectIsDirectory", resource=self.key) from None
        except BaseException:
            self.abort()
            raise
        self._close_dir()
        return meta

    def abort(self) -> None:
        """Drop the temporary file."""
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = -2
        if self._temporary and self._dir_fd >= 0:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._temporary, dir_fd=self._dir_fd)
        self._close_dir()

    def _close_dir(self) -> None:
        if self._dir_fd >= 0:
            os.close(self._dir_fd)
        self._dir_fd = -1


def inherit_default_acl(directory_fd: int, fd: int) -> None:
    """Give a file moved into a directory the access ACL it would have had if created there.

    Bucket grants live in default ACLs (``sharing``), which only files
    created in the directory inherit; the later ``fchmod`` narrows the mask.
    """
    try:
        acl = os.getxattr(directory_fd, _DEFAULT_ACL)
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.EOPNOTSUPP, errno.ENOTSUP):
            return
        raise
    os.setxattr(fd, _ACCESS_ACL, acl)


def process_umask() -> int:
    """This process's umask, read without changing it (``os.umask`` sets it, racing threads)."""
    with contextlib.suppress(OSError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022


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
