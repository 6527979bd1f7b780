"""Partitioned reads of a catalog entry against one sequential reader feeding the same workers.

Runs ``aifactory up``, uploads a JSONL file and a CSV file whose every record
holds a quoted newline (boto3, one tenant's key), and registers each as a
catalog entry. Then, for each number of workers W, on the same machine:

* **partitioned**: ``GET /api/catalog/.../partitions?n=W`` (the catalog's
  ``partitions(entry, n)``), then W worker processes each stream their own
  byte range over S3 (a ``Range`` GET) and parse ~1 MiB of whole records at
  a time as the bytes arrive (a CSV worker reads the header's range once
  per file for the column names); again with n=4W parts;
* **sequential**: one reader streams the whole object over S3, cuts it at
  record boundaries (a quote-aware scan for CSV) into ~1 MiB batches, and
  hands them to the same W worker processes, which parse them.

Both sides parse every record the same way (``json.loads``, ``csv.reader``)
and must return the same count and the same sum of ids. The pools (and
their S3 clients) are started before the clock; their start is shown apart.
Reported: wall seconds (median of the rounds; the partitions call is inside
the partitioned time and also shown alone: the first call for an n splits
the file, later ones are the server's cache), the ratios sequential /
partitioned (above 1: partitioned is faster), and the workers' summed
parsing CPU seconds on each side (the profile: parsing is the work).
The sequential side is a pipeline of W+1 processes (the reader overlaps
its download with the workers' parsing).

::

    .venv/bin/python bench/catalog_partitions.py [--records 300000] [--workers 1,2,4] [--rounds 3]

Results: a markdown table on stdout and ``bench/results/catalog_partitions.json``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import multiprocessing
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx

from _harness import start_control_plane

RESULTS = Path(__file__).resolve().parent / "results"
BUCKET = "bench-data"
_BATCH = 1 << 20

_STREAM_CHUNK = 256 * 1024
_s3: Any = None  # each worker process's own client
_headers: dict[tuple[str, tuple[int, int]], list[str]] = {}  # each worker's CSV column names


def _client(endpoint: str, key: str, secret: str) -> Any:
    global _s3
    if _s3 is None:
        _s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            region_name="us-east-1",
        )
    return _s3


def _get(s3: Any, key: str, start: int, end: int) -> bytes:
    body = s3.get_object(Bucket=BUCKET, Key=key, Range=f"bytes={start}-{end - 1}")["Body"]
    return bytes(body.read())


def _parse(kind: str, data: bytes, header: bool = False) -> tuple[int, int]:
    """(records, sum of ids) of whole records: JSONL lines, or CSV rows (``header``: skip one)."""
    if kind == "jsonl":
        ids = [json.loads(line)["id"] for line in data.splitlines() if line.strip()]
    else:
        rows = csv.reader(io.StringIO(data.decode(), newline=""))
        if header:
            next(rows, None)
        ids = [int(row[0]) for row in rows]
    return len(ids), sum(ids)


def read_part(task: tuple[tuple[str, str, str], str, dict[str, Any]]) -> tuple[int, int, float]:
    """A worker: stream one part's byte range over S3, parsing ~1 MiB of whole records at a time.

    Parsing as the bytes arrive overlaps this worker's download with its
    parsing (as the sequential side's pipeline does), and keeps its batches as
    small as the sequential side's. A CSV part's header (its column names) is
    read once per worker and file, not once per part. Returns the records,
    the sum of their ids, and the CPU seconds spent parsing.
    """
    credentials, key, part = task
    s3 = _client(*credentials)
    kind = part["format"]
    if kind == "csv":
        _columns(s3, key, tuple(part["header"]))
    range_ = f"bytes={part['start']}-{part['end'] - 1}"
    body = s3.get_object(Bucket=BUCKET, Key=key, Range=range_)["Body"]
    records = total = 0
    parsing = 0.0
    for batch in _record_cuts(kind, body.iter_chunks(_STREAM_CHUNK)):
        started = time.thread_time()
        count, ids = _parse(kind, batch)
        parsing += time.thread_time() - started
        records, total = records + count, total + ids
    return records, total, parsing


def _columns(s3: Any, key: str, header: tuple[int, int]) -> list[str]:
    """A CSV file's column names, read once per worker process."""
    if (key, header) not in _headers:
        row = _get(s3, key, *header).decode()
        _headers[(key, header)] = next(csv.reader(io.StringIO(row, newline="")))
    return _headers[(key, header)]


def parse_batch(task: tuple[str, bytes, bool]) -> tuple[int, int, float]:
    """A worker: parse one batch of whole records the sequential reader cut."""
    started = time.thread_time()
    count, ids = _parse(*task)
    return count, ids, time.thread_time() - started


def _record_cuts(kind: str, stream: Iterator[bytes]) -> Iterator[bytes]:
    """~1 MiB batches of whole records from a byte stream (CSV: newlines outside quotes)."""
    pending = b""
    for chunk in stream:
        pending += chunk
        if len(pending) < _BATCH:
            continue
        cut = pending.rfind(b"\n") + 1 if kind == "jsonl" else _last_record_end(pending)
        if cut > 0:
            batch, pending = pending[:cut], pending[cut:]
            yield batch
    if pending:
        yield pending


def _last_record_end(data: bytes) -> int:
    """The offset after the last newline outside quotes (``data`` starts at a record)."""
    quoted = False
    last = start = 0
    while (newline := data.find(b"\n", start)) >= 0:
        quoted = (data.count(b'"', start, newline) % 2 == 1) != quoted
        if not quoted:
            last = newline + 1
        start = newline + 1
    return last


def make_files(records: int) -> dict[str, bytes]:
    text = "a sentence of some length, as a corpus line would be"
    jsonl = "".join(json.dumps({"id": i, "text": f"{text} {i}"}) + "\n" for i in range(records))
    rows = io.StringIO()
    writer = csv.writer(rows, lineterminator="\n")
    writer.writerow(["id", "text"])
    for i in range(records):
        writer.writerow([i, f"{text}\nwith a quoted newline, {i}"])
    return {"jsonl": jsonl.encode(), "csv": rows.getvalue().encode()}


def _ready(credentials: tuple[str, str, str]) -> None:
    """A worker's first task: it is started and has its S3 client."""
    _client(*credentials)


def _plan(http: httpx.Client, kind: str, parts_n: int) -> float:
    """Seconds of one partitions call (the first for this n: the server splits the file)."""
    started = time.perf_counter()
    answer = http.get(f"/api/catalog/bench/{kind}/versions/1/partitions", params={"n": parts_n})
    answer.raise_for_status()
    return time.perf_counter() - started


def partitioned(
    pool: Any, http: httpx.Client, credentials: tuple[str, str, str], kind: str, parts_n: int
) -> tuple[float, float, tuple[int, int], float]:
    started = time.perf_counter()
    parts = http.get(f"/api/catalog/bench/{kind}/versions/1/partitions", params={"n": parts_n})
    parts.raise_for_status()
    planned = time.perf_counter() - started
    key = f"{kind}/data.{kind}"
    tasks = [(credentials, key, part) for part in parts.json()["partitions"]]
    results = pool.map(read_part, tasks, chunksize=1)
    took = time.perf_counter() - started
    got = (sum(r[0] for r in results), sum(r[1] for r in results))
    return took, planned, got, sum(r[2] for r in results)


def sequential(
    pool: Any, credentials: tuple[str, str, str], kind: str
) -> tuple[float, tuple[int, int], float]:
    started = time.perf_counter()
    s3 = _client(*credentials)
    body = s3.get_object(Bucket=BUCKET, Key=f"{kind}/data.{kind}")["Body"]
    cuts = _record_cuts(kind, body.iter_chunks(256 * 1024))
    batches = ((kind, batch, i == 0 and kind == "csv") for i, batch in enumerate(cuts))
    results = list(pool.imap_unordered(parse_batch, batches))
    took = time.perf_counter() - started
    got = (sum(r[0] for r in results), sum(r[1] for r in results))
    return took, got, sum(r[2] for r in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    widths = [int(w) for w in args.workers.split(",")]
    files = make_files(args.records)
    expected = (args.records, args.records * (args.records - 1) // 2)
    with tempfile.TemporaryDirectory(prefix="aif-bench-catalog-") as folder:
        process, url, endpoint, admin_key = start_control_plane(Path(folder))
        try:
            admin = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin_key}"})
            issued = admin.post("/api/keys", json={"tenant": "bench"}).json()
            credentials = (endpoint, issued["s3_access_key_id"], issued["s3_secret_access_key"])
            http = httpx.Client(
                base_url=url, headers={"Authorization": f"Bearer {issued['key']}"}, timeout=120
            )
            s3 = _client(*credentials)
            s3.create_bucket(Bucket=BUCKET)
            for kind, data in files.items():
                s3.put_object(Bucket=BUCKET, Key=f"{kind}/data.{kind}", Body=data)
                registered = http.post(
                    "/api/catalog",
                    json={"bucket": BUCKET, "prefix": kind, "name": kind, "title": kind,
                          "license": "CC0-1.0"},
                )  # fmt: skip
                registered.raise_for_status()
            rows = []
            context = multiprocessing.get_context("spawn")
            for workers in widths:
                # Each worker makes its S3 client as it starts, before the clock.
                pool_started = time.perf_counter()
                with context.Pool(workers, _client, credentials) as pool:
                    pool.map(_ready, [credentials] * workers, chunksize=1)
                    pool_start_s = time.perf_counter() - pool_started
                    pool.map(time.sleep, [0.5] * workers, chunksize=1)  # every worker is up
                    for kind in files:
                        times: dict[str, list[float]] = {
                            "p": [], "p4": [], "plan": [], "s": [], "p_parse": [], "s_parse": []
                        }  # fmt: skip
                        first_plan = _plan(http, kind, workers * 7)  # an n no round asks
                        for round_ in range(args.rounds):
                            sides = ["p", "p4", "s"]
                            for side in sides[round_ % 3 :] + sides[: round_ % 3]:
                                if side == "s":
                                    took, got, parsing = sequential(pool, credentials, kind)
                                    times["s_parse"].append(parsing)
                                else:
                                    n = workers * (4 if side == "p4" else 1)
                                    took, planned, got, parsing = partitioned(
                                        pool, http, credentials, kind, n
                                    )
                                    if side == "p":
                                        times["plan"].append(planned)
                                        times["p_parse"].append(parsing)
                                times[side].append(took)
                                assert got == expected, (side, kind, workers, got, expected)
                        rows.append(
                            {
                                "format": kind,
                                "bytes": len(files[kind]),
                                "workers": workers,
                                "pool_start_s": pool_start_s,
                                "partitioned_s": statistics.median(times["p"]),
                                "first_partitions_call_s": first_plan,
                                "partitions_call_s": statistics.median(times["plan"]),
                                "partitioned_4n_s": statistics.median(times["p4"]),
                                "sequential_s": statistics.median(times["s"]),
                                "partitioned_parse_s": statistics.median(times["p_parse"]),
                                "sequential_parse_s": statistics.median(times["s_parse"]),
                            }
                        )
                        print(f"{kind} W={workers}: {rows[-1]}", flush=True)
        finally:
            process.terminate()
            process.wait(timeout=60)
    print()
    print(f"{args.records:,} records, {os.cpu_count()} CPUs, median of {args.rounds} rounds")
    print("| format | MB | workers | partitioned n=W s | partitions call s (first, cached) | "
          "partitioned n=4W s | sequential s | sequential / partitioned n=W | "
          "sequential / partitioned n=4W | parse CPU s, partitioned / sequential | "
          "pool start s |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['format']} | {row['bytes'] / 1e6:.0f} | {row['workers']} | "
            f"{row['partitioned_s']:.2f} | {row['first_partitions_call_s']:.3f}, "
            f"{row['partitions_call_s']:.3f} | "
            f"{row['partitioned_4n_s']:.2f} | {row['sequential_s']:.2f} | "
            f"{row['sequential_s'] / row['partitioned_s']:.2f}x | "
            f"{row['sequential_s'] / row['partitioned_4n_s']:.2f}x | "
            f"{row['partitioned_parse_s']:.2f} / {row['sequential_parse_s']:.2f} | "
            f"{row['pool_start_s']:.2f} |"
        )
    RESULTS.mkdir(exist_ok=True)
    document = {"records": args.records, "rounds": args.rounds, "cpus": os.cpu_count(),
                "machine": platform.node(), "rows": rows}  # fmt: skip
    (RESULTS / "catalog_partitions.json").write_text(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
