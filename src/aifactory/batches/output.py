"""A batch's output and error files, assembled from its shards' answers (pure functions).

Shards append answers in the order they came back; the files list them in
the input's order. An answer with a 2xx status goes to the output file, any
other to the error file (OpenAI's split), and a request that never got an
answer (the batch was cancelled or expired, or its shard gave up) goes to
the error file with an ``error`` saying why and no ``response``.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from aifactory.batches.own_files import OwnFolder


@dataclass
class Answers:
    """What the shards answered so far, by custom_id."""

    records: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def done(self) -> int:
        """Requests answered (any status)."""
        return len(self.records)

    @property
    def failed(self) -> int:
        """Requests the engine answered with an error status."""
        return sum(1 for r in self.records.values() if not _succeeded(r))

    def tokens(self) -> tuple[int, int]:
        """Prompt and completion tokens of every answer (embeddings count prompt tokens)."""
        prompt = completion = 0
        for record in self.records.values():
            usage = (record.get("response") or {}).get("body", {}).get("usage") or {}
            prompt += int(usage.get("prompt_tokens") or 0)
            completion += int(usage.get("completion_tokens") or 0)
        return prompt, completion


@dataclass
class Tally:
    """Counts of one shard output, read on from where the last look stopped.

    The supervisor looks every second; reading only what was appended since
    keeps that cheap however long the output grows. A file that shrank (a
    resumed worker cut a torn line) is counted again from its start.
    """

    offset: int = 0
    done: int = 0
    failed: int = 0

    def update(self, folder: OwnFolder, output: PurePath) -> None:
        """Count the whole lines appended to ``output`` (in ``folder``) since the last call."""
        size, data = folder.read(output, self.offset)
        if size < self.offset:
            self.offset = self.done = self.failed = 0
            size, data = folder.read(output)
        whole = data.rfind(b"\n") + 1
        for line in data[:whole].splitlines():
            if line.strip():
                self.done += 1
                self.failed += not _succeeded(json.loads(line))
        self.offset += whole


def read_answers(folder: OwnFolder, outputs: Iterable[PurePath]) -> Answers:
    """The answers in the shards' output files (a torn last line is not one yet)."""
    answers = Answers()
    for output in outputs:
        _size, data = folder.read(output)
        for line in data[: data.rfind(b"\n") + 1].splitlines():
            if line.strip():
                record = json.loads(line)
                answers.records.setdefault(record["custom_id"], record)
    return answers


def input_ids(data: bytes) -> list[str]:
    """The custom_ids of an input file's bytes, in order."""
    return [json.loads(line)["custom_id"] for line in data.splitlines() if line.strip()]


@dataclass(frozen=True)
class Assembled:
    """The two files' bytes and how many lines each holds."""

    output: bytes
    errors: bytes
    output_lines: int
    error_lines: int


def assemble(ids: list[str], answers: Answers, unanswered: tuple[str, str]) -> Assembled:
    """The output and error files, in input order.

    Args:
        ids: The input's custom_ids, in order.
        answers: What the shards answered.
        unanswered: ``(code, message)`` of the error line of a request without answer.
    """
    output: list[bytes] = []
    errors: list[bytes] = []
    code, message = unanswered
    for custom_id in ids:
        record = answers.records.get(custom_id)
        if record is None:
            record = {
                "id": "batch_req_" + secrets.token_hex(12),
                "custom_id": custom_id,
                "response": None,
                "error": {"code": code, "message": message},
            }
        line = json.dumps(record, separators=(",", ":")).encode() + b"\n"
        (output if _succeeded(record) else errors).append(line)
    return Assembled(b"".join(output), b"".join(errors), len(output), len(errors))


def _succeeded(record: dict[str, Any]) -> bool:
    response = record.get("response") or {}
    return 200 <= int(response.get("status_code", 0)) < 300
