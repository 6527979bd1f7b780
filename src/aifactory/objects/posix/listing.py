"""Listing keys in S3 order (UTF-8 byte order of the whole key) by walking directories.

Inside one directory a file ``n`` has the key ``…/n`` and a subdirectory
``n`` holds keys ``…/n/…``; sorting entries by ``n`` for files and ``n/`` for
directories and walking depth-first yields every key in global byte order
(``foo+1`` before ``foo/``), which a plain per-directory sort gets wrong. Code
point order of ``str`` equals UTF-8 byte order, so names are compared as
``str``; names that are not UTF-8 cannot be keys and are skipped.

The walk starts at the deepest directory the prefix names, skips whole
subtrees that sort before the resume point, and with delimiter ``/`` reports
a subdirectory as one common prefix without descending into it.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

from aifactory.objects.posix.paths import RESERVED_PREFIX, safe_prefix_dir
from aifactory.objects.posix.storage import FileStore, ObjectInfo

MAX_KEYS = 1000


@dataclass
class Page:
    """One page of a listing."""

    objects: list[ObjectInfo] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)
    truncated: bool = False
    last: str = ""
    last_is_prefix: bool = False


def list_page(
    files: FileStore,
    bucket: str,
    prefix: str = "",
    delimiter: str = "",
    max_keys: int = MAX_KEYS,
    after: str = "",
    skip_prefix: str = "",
) -> Page:
    """The next page of keys after ``after`` (exclusive), grouped by ``delimiter``.

    Args:
        files: The file store.
        bucket: The bucket.
        prefix: Only keys starting with it.
        delimiter: Group keys sharing ``prefix…delimiter`` into one common prefix.
        max_keys: Most keys plus common prefixes on the page.
        after: Start after this key (StartAfter, marker, or a continuation).
        skip_prefix: A common prefix already returned: skip its keys.
    """
    page = Page()
    if max_keys <= 0:
        return page
    directory = safe_prefix_dir(prefix)
    if directory is None:
        return page
    walk = _Walk(files, bucket, prefix, after, skip_prefix, delimiter == "/")
    start = os.path.join(files.bucket_dir(bucket), directory) if directory else None
    entries = walk.walk(start or files.bucket_dir(bucket), directory + "/" if directory else "")
    if start and prefix == directory + "/" and prefix > after:
        entries = itertools.chain([(prefix, start, True)], entries)  # its own marker
    for key, path, _is_dir in entries:
        common = _common_prefix(key, prefix, delimiter)
        if common is not None:
            if page.prefixes and page.prefixes[-1] == common:
                continue
            if _full(page, max_keys):
                page.truncated = True
                break
            page.prefixes.append(common)
            page.last, page.last_is_prefix = common, True
            continue
        info = files.info_of_listed(bucket, key, path)
        if info is None:
            continue  # a directory without a marker, or a file deleted meanwhile
        if _full(page, max_keys):
            page.truncated = True
            break
        page.objects.append(info)
        page.last, page.last_is_prefix = key, False
    return page


def _full(page: Page, max_keys: int) -> bool:
    return len(page.objects) + len(page.prefixes) >= max_keys


def _common_prefix(key: str, prefix: str, delimiter: str) -> str | None:
    if not delimiter:
        return None
    position = key.find(delimiter, len(prefix))
    if position < 0:
        return None
    return key[: position + len(delimiter)]


@dataclass
class _Walk:
    files: FileStore
    bucket: str
    prefix: str
    after: str
    skip: str
    collapse: bool

    def walk(self, path: str, dir_key: str) -> Iterator[tuple[str, str, bool]]:
        """(key, path, is_directory) in byte order; directories as ``key/``."""
        for key, entry_path, is_dir in self._entries(path, dir_key):
            if not is_dir:
                if key > self.after:
                    yield key, entry_path, False
                continue
            if self.after and key < self.after and not self.after.startswith(key):
                continue  # every key below sorts before the resume point
            if self.collapse and key.startswith(self.prefix):
                if key <= self.after:
                    yield from self.walk(entry_path, key)  # resuming inside it
                elif self._has_content(entry_path, key):
                    yield key, entry_path, True  # one common prefix: no need to descend
                continue
            if key > self.after:
                yield key, entry_path, True
            yield from self.walk(entry_path, key)

    def _entries(self, path: str, dir_key: str) -> list[tuple[str, str, bool]]:
        entries = []
        try:
            with os.scandir(path) as scan:
                for entry in scan:
                    name = entry.name
                    if name.startswith(RESERVED_PREFIX) or not _is_utf8(name):
                        continue
                    try:
                        is_dir = entry.is_dir(follow_symlinks=False)
                        if not is_dir and not entry.is_file(follow_symlinks=False):
                            continue
                    except OSError:
                        continue
                    key = dir_key + name + ("/" if is_dir else "")
                    if self.skip and key.startswith(self.skip):
                        continue
                    if key.startswith(self.prefix) or (is_dir and self.prefix.startswith(key)):
                        entries.append((key, entry.path, is_dir))
        except OSError:
            return []
        entries.sort()
        return entries

    def _has_content(self, path: str, dir_key: str) -> bool:
        """Whether a directory holds any key (a file or a directory marker), at any depth."""
        if self.files.info_of_listed(self.bucket, dir_key, path) is not None:
            return True
        try:
            with os.scandir(path) as scan:
                for entry in scan:
                    name = entry.name
                    if name.startswith(RESERVED_PREFIX) or not _is_utf8(name):
                        continue
                    if entry.is_file(follow_symlinks=False):
                        return True
                    if entry.is_dir(follow_symlinks=False) and self._has_content(
                        entry.path, dir_key + name + "/"
                    ):
                        return True
        except OSError:
            return False
        return False


def _is_utf8(name: str) -> bool:
    try:
        name.encode()
    except UnicodeEncodeError:
        return False
    return True
