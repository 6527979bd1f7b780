"""Output and error files are assembled in input order from the shards' answers."""

from __future__ import annotations

import json
import os
from pathlib import Path

from aifactory.batches.output import Tally, assemble, input_ids, read_answers
from aifactory.batches.own_files import OwnFolder


def _answer(custom_id: str, status: int, completion_tokens: int = 0) -> bytes:
    record = {
        "id": f"r-{custom_id}",
        "custom_id": custom_id,
        "response": {
            "status_code": status,
            "body": {"usage": {"prompt_tokens": 2, "completion_tokens": completion_tokens}},
        },
        "error": None,
    }
    return json.dumps(record).encode() + b"\n"


def test_answers_split_by_status_in_input_order(tmp_path: Path) -> None:
    (tmp_path / "s0").write_bytes(_answer("c", 200, 3) + _answer("a", 400))
    (tmp_path / "s1").write_bytes(_answer("b", 200, 4) + b'{"custom_id": "torn')
    folder = OwnFolder(tmp_path, os.getuid())
    answers = read_answers(folder, [Path("s0"), Path("s1"), Path("missing")])
    assert (answers.done, answers.failed, answers.tokens()) == (3, 1, (6, 7))
    files = assemble(["a", "b", "c", "d"], answers, ("batch_cancelled", "cancelled"))
    assert [json.loads(line)["custom_id"] for line in files.output.splitlines()] == ["b", "c"]
    errors = [json.loads(line) for line in files.errors.splitlines()]
    assert [e["custom_id"] for e in errors] == ["a", "d"]
    assert errors[1]["response"] is None and errors[1]["error"]["code"] == "batch_cancelled"
    assert (files.output_lines, files.error_lines) == (2, 2)


def test_a_tally_reads_on_from_where_it_stopped(tmp_path: Path) -> None:
    output = tmp_path / "shard.jsonl"
    tally, folder = Tally(), OwnFolder(tmp_path, os.getuid())
    tally.update(folder, Path(output.name))  # not there yet
    output.write_bytes(_answer("a", 200) + _answer("b", 500) + b'{"custom_id": "c"')
    tally.update(folder, Path(output.name))
    assert (tally.done, tally.failed) == (2, 1)
    with output.open("ab") as handle:
        handle.write(b', "response": {"status_code": 200}}\n')
    tally.update(folder, Path(output.name))
    assert (tally.done, tally.failed) == (3, 1)
    output.write_bytes(_answer("a", 200))  # shorter: counted again from the start
    tally.update(folder, Path(output.name))
    assert (tally.done, tally.failed) == (1, 0)


def test_input_ids_keep_the_input_order() -> None:
    assert input_ids(b'{"custom_id": "b"}\n\n{"custom_id": "a"}\n') == ["b", "a"]
