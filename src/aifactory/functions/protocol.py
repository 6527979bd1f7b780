"""Wire format of serverless functions: message kinds, headers, spill files.

Every message is a ZeroMQ multipart message. The first frame is one kind byte
(plus, for some kinds, a small body); tasks and results then follow as pairs
of frames, a fixed-size ``struct`` header and the cloudpickled payload, so a
batch of many tasks travels as one message and nobody copies a payload to
change its header::

    executor                     broker                       worker
       | HELLO json ------------->  |  <------------ REGISTER json |
       | <------------ WELCOME json |  WELCOME json -------------> |
       | SUBMIT pool (th, p)* ----> |  TASKS (th, p)* -----------> |
       | CANCEL ids --------------> |  <------------ RESULTS (rh, p)*
       | <------- CANCELLED (id,ok)*|  <-- HEARTBEAT --> (both ways)
       | <----------- RESULTS (rh, p)* <-------- GOODBYE unstarted ids
       | BYE ---------------------> |  RECONNECT (unknown worker) -> |

``th`` is :data:`TASK_HEADER` (task id, timeout, flags) and ``rh`` is
:data:`RESULT_HEADER` (task id, status, flags). The broker rewrites task ids:
executors number their own tasks, the broker numbers tasks for workers.

A payload larger than the spill threshold is written to the spill directory,
a filesystem path shared by broker, workers and executors, and only its path
travels (flag :data:`SPILLED`). The reader of a result deletes its file; the
broker deletes a task's argument file once the task is finished, because a
retried task must read it again.
"""

from __future__ import annotations

import json
import linecache
import os
import pickle
import re
import struct
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import cloudpickle  # type: ignore[import-untyped]

from aifactory.errors import RemoteError, RemoteTraceback

__all__ = [
    "BYE",
    "CANCEL",
    "CANCELLED",
    "CANCEL_ENTRY",
    "DEFAULT_SPILL_THRESHOLD",
    "GOODBYE",
    "HEARTBEAT",
    "HELLO",
    "RECONNECT",
    "REGISTER",
    "RESULTS",
    "RESULT_HEADER",
    "SPILLED",
    "STATUS_CRASHED",
    "STATUS_ERROR",
    "STATUS_LOST",
    "STATUS_OK",
    "STATUS_TIMEOUT",
    "SUBMIT",
    "TASKS",
    "TASK_HEADER",
    "WELCOME",
    "chunks",
    "decode_json",
    "dump_call",
    "dump_error",
    "dump_result",
    "encode_json",
    "load_error",
    "pack_ids",
    "read_payload",
    "run_chunk",
    "spill",
    "spill_path",
    "unpack_ids",
]

# Kinds, the first byte of the first frame.
HELLO = b"h"  # executor -> broker: json {}
WELCOME = b"w"  # broker -> executor / worker: json {spill_dir, spill_threshold, heartbeat_s}
SUBMIT = b"s"  # executor -> broker: [SUBMIT + pool, (th, p)*]
CANCEL = b"c"  # executor -> broker: [CANCEL + packed ids]
CANCELLED = b"k"  # broker -> executor: [CANCELLED + (id, removed)*]
BYE = b"b"  # executor -> broker: drop my queued tasks
RESULTS = b"r"  # worker -> broker -> executor: [RESULTS, (rh, p)*]
REGISTER = b"R"  # worker -> broker: json {pool, capacity, host, pid}
TASKS = b"t"  # broker -> worker: [TASKS, (th, p)*]
HEARTBEAT = b"H"  # both ways between broker and worker
GOODBYE = b"G"  # worker -> broker: [GOODBYE + packed ids of tasks never started]
RECONNECT = b"X"  # broker -> worker: I do not know you, register again

TASK_HEADER = struct.Struct("<QdB")  # task id, timeout_s (0 = none), flags
RESULT_HEADER = struct.Struct("<QBB")  # task id, status, flags
CANCEL_ENTRY = struct.Struct("<QB")  # task id, removed (1) or already running (0)
SPILLED = 1  # flag: the payload frame is a path into the spill directory

STATUS_OK = 0  # payload: the pickled return value
STATUS_ERROR = 1  # payload: dump_error(exception)
STATUS_TIMEOUT = 2  # payload: empty; the worker killed the process
STATUS_LOST = 3  # payload: utf-8 reason; the broker gave up retrying
STATUS_CRASHED = 4  # worker -> broker only: the process running it died

DEFAULT_SPILL_THRESHOLD = 1 << 20

_ID = struct.Struct("<Q")


def encode_json(kind: bytes, body: dict[str, Any]) -> bytes:
    """One frame: ``kind`` followed by ``body`` as JSON."""
    return kind + json.dumps(body).encode()


def decode_json(frame: bytes) -> dict[str, Any]:
    """The JSON body of a frame made by :func:`encode_json`."""
    body: dict[str, Any] = json.loads(frame[1:]) if len(frame) > 1 else {}
    return body


def pack_ids(kind: bytes, ids: Iterable[int]) -> bytes:
    """One frame: ``kind`` followed by 64-bit task ids."""
    ids = list(ids)
    return kind + struct.pack(f"<{len(ids)}Q", *ids)


def unpack_ids(frame: bytes) -> tuple[int, ...]:
    """The task ids of a frame made by :func:`pack_ids`."""
    return struct.unpack(f"<{(len(frame) - 1) // 8}Q", frame[1:])


def spill_path(spill_dir: Path, suffix: str) -> Path:
    """A fresh, unique file name in the spill directory."""
    return spill_dir / f"{uuid.uuid4().hex}.{suffix}"


def spill(payload: bytes, spill_dir: Path | None, threshold: int, suffix: str) -> tuple[int, bytes]:
    """Write ``payload`` to the spill directory when it is over ``threshold``.

    Returns:
        The flags and the frame to send: the payload itself, or the path of
        the file holding it (with :data:`SPILLED` set).
    """
    if spill_dir is None or len(payload) <= threshold:
        return 0, payload
    path = spill_path(spill_dir, suffix)
    with open(path, "wb") as file:
        file.write(payload)
    return SPILLED, os.fsencode(path)


def read_payload(flags: int, frame: bytes, *, delete: bool) -> bytes:
    """The payload a frame stands for, reading (and deleting) its spill file."""
    if not flags & SPILLED:
        return frame
    path = os.fsdecode(frame)
    with open(path, "rb") as file:
        payload = file.read()
    if delete:
        os.unlink(path)
    return payload


def dump_call(fn: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]) -> bytes:
    """Serialize a call with cloudpickle, so lambdas and closures travel too."""
    return bytes(cloudpickle.dumps((fn, args, kwargs), protocol=pickle.HIGHEST_PROTOCOL))


def dump_result(value: Any) -> bytes:
    """Serialize a return value."""
    return bytes(cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))


def dump_error(exc: BaseException) -> bytes:
    """Serialize an exception with its formatted traceback.

    An exception that does not survive a pickle round trip (a custom
    ``__init__`` signature, an unpicklable attribute) is replaced by a
    :class:`RemoteError` carrying its type name and message.
    """
    text = "".join(traceback.format_exception(exc))
    try:
        blob = bytes(cloudpickle.dumps((exc, text), protocol=pickle.HIGHEST_PROTOCOL))
        pickle.loads(blob)
    except Exception:
        stand_in = RemoteError(f"{type(exc).__module__}.{type(exc).__qualname__}", str(exc))
        blob = bytes(cloudpickle.dumps((stand_in, text), protocol=pickle.HIGHEST_PROTOCOL))
    return blob


def load_error(payload: bytes, source_file: str | None = None) -> BaseException:
    """Rebuild a remote exception, its remote traceback attached as ``__cause__``.

    Raising the result shows both tracebacks, the remote one first, the way
    ``concurrent.futures.ProcessPoolExecutor`` does.

    Args:
        payload: What :func:`dump_error` made.
        source_file: The file that defined the submitted function. cloudpickle
            ships functions from ``__main__`` (and modules registered by value)
            with the file name ``<dynamic-code>``, so the worker cannot show
            their lines; the caller has the file and fills them in.
    """
    exc, text = pickle.loads(payload)
    if source_file:
        text = _fill_dynamic_frames(text, source_file)
    exc.__cause__ = RemoteTraceback(f'\n"""\n{text}"""')
    return exc  # type: ignore[no-any-return]


_DYNAMIC_FRAME = re.compile(r'^(\s*)File "<dynamic-code>", line (\d+), in (.+)$')


def _fill_dynamic_frames(text: str, source_file: str) -> str:
    lines = []
    for line in text.splitlines():
        match = _DYNAMIC_FRAME.match(line)
        if match is None:
            lines.append(line)
            continue
        indent, number, name = match.groups()
        lines.append(f'{indent}File "{source_file}", line {number}, in {name}')
        source = linecache.getline(source_file, int(number)).strip()
        if source:
            lines.append(f"{indent}    {source}")
    return "\n".join(lines) + "\n"


def run_chunk(fn: Callable[..., Any], chunk: Sequence[tuple[Any, ...]]) -> list[Any]:
    """Run ``fn`` over a chunk of argument tuples; ``Executor.map`` ships these."""
    return [fn(*args) for args in chunk]


def chunks(iterables: Iterable[Iterable[Any]], size: int) -> Iterator[list[tuple[Any, ...]]]:
    """Argument tuples of ``zip(*iterables)`` in lists of ``size``."""
    chunk: list[tuple[Any, ...]] = []
    for args in zip(*iterables, strict=False):
        chunk.append(args)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
