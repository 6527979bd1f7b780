"""The worker's checkpoint: what its output holds is done, a torn last line is cut off."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from aifactory.batches.worker import Appender, _keep, done_ids, record_of, shard_lines


def test_a_torn_last_line_is_cut_and_not_counted(tmp_path: Path) -> None:
    output = tmp_path / "shard.jsonl"
    output.write_bytes(b'{"custom_id": "a"}\n{"custom_id": "b"}\n{"custom_id": "c", "resp')
    assert done_ids(output) == {"a", "b"}
    assert output.read_bytes() == b'{"custom_id": "a"}\n{"custom_id": "b"}\n'
    appender = Appender(output)
    appender.append({"custom_id": "c"})
    appender.close()
    assert done_ids(output) == {"a", "b", "c"}
    assert done_ids(tmp_path / "none.jsonl") == set()


def test_shards_take_every_nth_line(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"custom_id": str(i)}) + "\n" for i in range(7)))
    assert [r["custom_id"] for r in shard_lines(source, 1, 3)] == ["1", "4"]
    assert [r["custom_id"] for r in shard_lines(source, 0, 1)] == [str(i) for i in range(7)]


def test_a_second_run_waits_until_the_first_lets_its_output_go(tmp_path: Path) -> None:
    output = tmp_path / "shard.jsonl"
    first = Appender(output)
    taken = threading.Event()

    def second_run() -> None:
        Appender(output).close()
        taken.set()

    thread = threading.Thread(target=second_run)
    thread.start()
    assert not taken.wait(0.3)
    first.close()
    assert taken.wait(5)
    thread.join()


def test_a_server_error_while_stopping_is_left_for_the_next_run(tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    appender = Appender(output)
    stop = threading.Event()
    failed = record_of({"custom_id": "a"}, 503, b'{"error": {"message": "shutting down"}}')
    refused = record_of({"custom_id": "b"}, 400, b'{"error": {"message": "bad"}}')
    assert _keep(appender, failed, stop) == 1  # not stopping: the engine's answer stands
    stop.set()
    assert _keep(appender, dict(failed, custom_id="c"), stop) == 0
    assert _keep(appender, refused, stop) == 1  # a client error is an answer whatever happens
    appender.close()
    assert done_ids(output) == {"a", "b"}
