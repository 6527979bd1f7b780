"""Partitions of JSONL, CSV (with quoted newlines) and Parquet cover every record once."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aifactory.catalog import partitions, read_records


def _records(parts: list) -> list:
    return [record for part in parts for record in read_records(part)]


@pytest.mark.parametrize("n", [1, 2, 3, 7, 50])
def test_jsonl_parts_cover_every_record_once(tmp_path: Path, n: int) -> None:
    path = tmp_path / "rows.jsonl"
    rows = [{"i": i, "text": "x" * (i % 17)} for i in range(500)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    parts = partitions([path], n)
    assert len(parts) == min(n, 500)
    assert parts[0].start == 0 and parts[-1].end == path.stat().st_size
    assert all(a.end == b.start for a, b in itertools.pairwise(parts))
    assert _records(parts) == rows


@pytest.mark.parametrize("n", [1, 2, 5, 13])
def test_csv_parts_keep_quoted_newlines_inside_their_record(tmp_path: Path, n: int) -> None:
    path = tmp_path / "rows.csv"
    rows = [[str(i), f'line one\nline "two" of {i}\n\n', "plain"] for i in range(300)]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "notes\nmultiline header", "other"])
        writer.writerows(rows)
    parts = partitions([path], n)
    assert len(parts) > 1 or n == 1
    assert all(part.header == parts[0].header for part in parts)
    assert _records(parts) == rows


def test_a_csv_record_longer_than_a_part_stays_whole(tmp_path: Path) -> None:
    path = tmp_path / "long.csv"
    path.write_text("h1,h2\n" + "a,b\n" + '1,"' + '""\n' * 3000 + '"\n' + "2,short\n")
    parts = partitions([path], 8)
    got = _records(parts)
    assert [row[0] for row in got] == ["a", "1", "2"]
    assert got[1][1] == '"\n' * 3000


def test_parquet_parts_are_row_groups(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    table = pa.table({"i": list(range(1000)), "s": [f"r{i}" for i in range(1000)]})
    pq.write_table(table, path, row_group_size=100)
    parts = partitions([path], 3)
    assert [len(part.row_groups) for part in parts] == [3, 3, 4]
    assert sorted(g for part in parts for g in part.row_groups) == list(range(10))
    assert [row["i"] for row in _records(parts)] == list(range(1000))


def test_many_files_share_the_parts_by_size(tmp_path: Path) -> None:
    big, small = tmp_path / "big.jsonl", tmp_path / "small.jsonl"
    big.write_text("".join(json.dumps({"i": i}) + "\n" for i in range(900)))
    small.write_text("".join(json.dumps({"i": i}) + "\n" for i in range(900, 1000)))
    parts = partitions([big, small], 10)
    assert [part.path for part in parts].count(str(small)) == 1
    assert sorted(record["i"] for record in _records(parts)) == list(range(1000))


def test_other_formats_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF")
    with pytest.raises(ValueError, match="cannot split"):
        partitions([path], 2)
