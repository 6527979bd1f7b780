"""The loop of one task process under a worker manager.

Kept apart from ``worker.py`` so that a freshly started process imports only
what running tasks needs. The manager speaks to it over a pipe: one message
per task (task header + payload) and one per result (result header +
payload); an empty message says the process is ready.
"""

from __future__ import annotations

import signal
from multiprocessing.connection import Connection
from pathlib import Path

from aifactory.engines import die_with_parent
from aifactory.functions import protocol as p


def child_main(conn: Connection, spill_dir: str | None, spill_threshold: int) -> None:
    """Run tasks from ``conn`` until the manager closes it."""
    # Killed with the manager, even by -9: its tasks are retried elsewhere.
    die_with_parent(signal.SIGKILL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    spill_path = Path(spill_dir) if spill_dir else None
    functions = p.LoadedFunctions()
    conn.send_bytes(b"")
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return
        conn.send_bytes(run_task(data, functions, spill_path, spill_threshold))


def run_task(
    data: bytes, functions: p.LoadedFunctions, spill_path: Path | None, spill_threshold: int
) -> bytes:
    """One task message (task header + payload) in, its result message out."""
    task_id, _timeout_s, flags = p.TASK_HEADER.unpack_from(data)
    text = bool(flags & p.TEXT_RESULT)
    try:
        payload = p.read_payload(flags, memoryview(data)[p.TASK_HEADER.size :], delete=False)
        fn, args, kwargs = p.load_call(payload, functions)
        value = fn(*args, **kwargs)
        out, status = (p.dump_text(value) if text else p.dump_result(value)), p.STATUS_OK
    except BaseException as exc:  # user code may raise SystemExit too
        out = p.dump_text_error(exc) if text else p.dump_error(exc)
        status = p.STATUS_ERROR
    out_flags, frame = p.spill(out, None if text else spill_path, spill_threshold, "result")
    if len(frame) <= p.INLINE_MAX:
        out_flags |= p.INLINE
    return p.RESULT_HEADER.pack(task_id, status, out_flags) + frame
