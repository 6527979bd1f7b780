"""Split a dataset's files for parallel reads, at record boundaries.

``partitions(paths, n)`` returns about ``n`` parts over the files (more
parts to bigger files, at least one each):

- JSONL: byte ranges whose ends are moved forward to just after a newline;
  finding each end reads only the bytes up to that newline.
- CSV: byte ranges ending after a newline outside quotes (a quoted field
  may hold newlines). Whether a newline is inside quotes depends on
  everything before it, so one streamed scan (a megabyte at a time, constant
  memory) finds the ends; each part carries the header's range as well.
- Parquet: groups of whole row groups, read from the footer by pyarrow.

Every record lies in exactly one part; ``read_records`` reads one part back.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

__all__ = ["Partition", "format_of", "partitions", "read_records", "shares", "split"]

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Partition:
    """One part of one file: a byte range ``[start, end)``, or Parquet row groups.

    ``header`` is the CSV header's byte range, to be read before the part.
    """

    path: str
    format: str
    start: int = 0
    end: int = 0
    header: tuple[int, int] | None = None
    row_groups: tuple[int, ...] = ()


def format_of(path: str | Path) -> str:
    """``jsonl``, ``csv`` or ``parquet`` by the file's suffix.

    Raises:
        ValueError: another suffix.
    """
    suffix = Path(path).suffix.lower()
    formats = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}
    if suffix not in formats:
        raise ValueError(f"{path}: cannot split a {suffix or 'suffix-less'} file by records")
    return formats[suffix]


def partitions(paths: Sequence[str | Path], n: int) -> list[Partition]:
    """About ``n`` parts over ``paths``, each file split in proportion to its size."""
    sizes = [Path(path).stat().st_size for path in paths]
    return [
        part
        for path, share in zip(paths, shares(sizes, n), strict=True)
        for part in split(str(path), share)
    ]


def shares(sizes: Sequence[int], n: int) -> list[int]:
    """How many of ``n`` parts each file of ``sizes`` gets: by size, at least one."""
    if n < 1:
        raise ValueError("n must be at least 1")
    total = sum(sizes) or 1
    return [max(1, round(n * size / total)) for size in sizes]


def split(path: str, n: int, kind: str = "") -> list[Partition]:
    """At most ``n`` record-aligned parts of one file (fewer when it has fewer records).

    ``kind`` names the format of a file whose name does not (a kept one).
    """
    kind = kind or format_of(path)
    if kind == "parquet":
        groups = pq.ParquetFile(path).metadata.num_row_groups
        bounds = _even(groups, min(n, groups) or 1)
        per = [tuple(range(a, b)) for a, b in itertools.pairwise(bounds)]
        return [Partition(path, kind, row_groups=groups_) for groups_ in per if groups_]
    size = Path(path).stat().st_size
    if kind == "jsonl":
        ends = _jsonl_ends(path, _even(size, n)[1:-1])
        header = None
        begin = 0
    else:
        header_end, ends = _csv_ends(path, _even(size, n)[1:-1])
        header = (0, header_end)
        begin = header_end
    cuts = sorted({begin, *(e for e in ends if begin < e < size), size})
    return [
        Partition(path, kind, start, end, header)
        for start, end in itertools.pairwise(cuts)
        if end > start
    ]


def _even(size: int, n: int) -> list[int]:
    return [size * i // n for i in range(n + 1)]


def _jsonl_ends(path: str, targets: list[int]) -> list[int]:
    """For each target offset, the offset just after the first newline at or after it."""
    ends = []
    with open(path, "rb") as handle:
        for target in targets:
            handle.seek(target)
            offset = target
            while chunk := handle.read(64 * 1024):
                newline = chunk.find(b"\n")
                if newline >= 0:
                    ends.append(offset + newline + 1)
                    break
                offset += len(chunk)
    return ends


def _csv_ends(path: str, targets: list[int]) -> tuple[int, list[int]]:
    """The header's end, and for each target the end of the record that holds it."""
    ends: list[int] = []
    header_end = -1
    pending = iter(targets)
    target = next(pending, None)
    quoted = False
    offset = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            for index in _record_ends(chunk, quoted):
                position = offset + index + 1
                if header_end < 0:
                    header_end = position
                    continue
                while target is not None and target < position:
                    ends.append(position)
                    target = next(pending, None)
            quoted = (chunk.count(b'"') % 2 == 1) != quoted
            offset += len(chunk)
            if header_end >= 0 and target is None:
                break
    return (header_end if header_end >= 0 else offset), ends


def _record_ends(chunk: bytes, quoted: bool) -> Iterator[int]:
    """Indexes of newlines outside quotes in ``chunk`` (``quoted``: it starts inside)."""
    start = 0
    while True:
        newline = chunk.find(b"\n", start)
        if newline < 0:
            return
        quoted = (chunk.count(b'"', start, newline) % 2 == 1) != quoted
        if not quoted:
            yield newline
        start = newline + 1


def read_records(part: Partition) -> Iterator[Any]:
    """The records of one part: dicts (JSONL, Parquet), or rows of strings (CSV, no header)."""
    if part.format == "parquet":
        table = pq.ParquetFile(part.path).read_row_groups(list(part.row_groups))
        yield from table.to_pylist()
        return
    with open(part.path, "rb") as handle:
        handle.seek(part.start)
        body = handle.read(part.end - part.start)
        if part.format == "jsonl":
            for line in body.splitlines():
                if line.strip():
                    yield json.loads(line)
            return
        assert part.header is not None
        handle.seek(part.header[0])
        header = handle.read(part.header[1] - part.header[0])
    rows = csv.reader(io.StringIO((header + body).decode(), newline=""))
    next(rows, None)
    yield from rows
