"""Wire format of serverless functions: message kinds, headers, spill files.

Every message is a ZeroMQ multipart message. The first frame is one kind byte
(plus, for some kinds, a small body); tasks and results then follow, each a
fixed-size ``struct`` header and the pickled payload, so a batch of many tasks
travels as one message. A payload up to :data:`INLINE_MAX` bytes shares its
header's frame (flag :data:`INLINE`), since copying it is cheaper than a frame;
a larger one travels in its own frame so nobody copies it to change its
header. A call payload is :data:`CALL_HEADER` (the function's digest and
length), the pickled function, then the pickled arguments: clients pickle a
function once and task processes unpickle it once per digest::

    executor                     broker                       worker
       | HELLO json ------------->  |  <------------ REGISTER json |
       | <------------ WELCOME json |  WELCOME json -------------> |
       | SUBMIT pool (th, p)* ----> |  TASKS (th, p)* -----------> |
       | CANCEL ids --------------> |  <------------ RESULTS (rh, p)*
       | <------- CANCELLED (id,ok)*|  <-- HEARTBEAT --> (both ways)
       | <----------- RESULTS (rh, p)* <-------- GOODBYE unstarted ids
       | BYE ---------------------> |  RECONNECT (unknown worker) -> |
       | <----------- REFUSED json  |  REFUSED json (bad token) ---> |

``th`` is :data:`TASK_HEADER` (task id, timeout, flags) and ``rh`` is
:data:`RESULT_HEADER` (task id, status, flags). The broker rewrites task ids:
executors number their own tasks, the broker numbers tasks for workers.

A payload larger than the spill threshold is written to the spill directory,
a filesystem path shared by broker, workers and executors, and only its path
travels (flag :data:`SPILLED`). The reader of a result deletes its file; the
broker deletes a task's argument file once the task is finished, because a
retried task must read it again.

A task flagged :data:`TEXT_RESULT` returns ``str``, and its result (or its
error, as traceback text) travels as UTF-8, never pickled and never spilled:
its reader, the control plane calling a named function, must not unpickle
what a tenant's worker sends, nor open a path one names.
"""

from __future__ import annotations

import functools
import hashlib
import json
import linecache
import os
import pickle
import re
import struct
import traceback
import types
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import cloudpickle  # type: ignore[import-untyped]

from aifactory.errors import RemoteError, RemoteTraceback

__all__ = [
    "BYE",
    "CALL_HEADER",
    "CANCEL",
    "CANCELLED",
    "CANCEL_ENTRY",
    "DEFAULT_SPILL_THRESHOLD",
    "GOODBYE",
    "HEARTBEAT",
    "HELLO",
    "INLINE",
    "INLINE_MAX",
    "RECONNECT",
    "REFUSED",
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
    "TEXT_RESULT",
    "WELCOME",
    "LoadedFunctions",
    "MalformedMessage",
    "PickledFunctions",
    "add_result",
    "add_task",
    "chunks",
    "decode_json",
    "dump_call",
    "dump_error",
    "dump_result",
    "dump_text",
    "dump_text_error",
    "encode_json",
    "load_call",
    "load_error",
    "pack_ids",
    "read_payload",
    "read_results",
    "read_tasks",
    "run_chunk",
    "spill",
    "spill_path",
    "unpack_ids",
]

# Kinds, the first byte of the first frame.
HELLO = b"h"  # executor -> broker: json {pool, api_key}
WELCOME = b"w"  # broker -> executor / worker: json {spill_dir, spill_threshold, heartbeat_s}
SUBMIT = b"s"  # executor -> broker: [SUBMIT + pool, (th, p)*]
CANCEL = b"c"  # executor -> broker: [CANCEL + packed ids]
CANCELLED = b"k"  # broker -> executor: [CANCELLED + (id, removed)*]
BYE = b"b"  # executor -> broker: drop my queued tasks
RESULTS = b"r"  # worker -> broker -> executor: [RESULTS, (rh, p)*]
REGISTER = b"R"  # worker -> broker: json {pool, capacity, host, pid, replica, token}
TASKS = b"t"  # broker -> worker: [TASKS, (th, p)*]
HEARTBEAT = b"H"  # both ways between broker and worker
GOODBYE = b"G"  # worker -> broker: [GOODBYE + packed ids of tasks never started]
RECONNECT = b"X"  # broker -> worker: I do not know you, register again
REFUSED = b"N"  # broker -> executor / worker: json {error}: your key or token is not valid

TASK_HEADER = struct.Struct("<QdB")  # task id, timeout_s (0 = none), flags
RESULT_HEADER = struct.Struct("<QBB")  # task id, status, flags
CANCEL_ENTRY = struct.Struct("<QB")  # task id, removed (1) or already running (0)
SPILLED = 1  # flag: the payload frame is a path into the spill directory
INLINE = 2  # flag: the payload follows the header in the same frame
TEXT_RESULT = 4  # task flag: the call returns str, sent back as UTF-8, never pickled
INLINE_MAX = 64 << 10  # larger payloads travel in their own frame, never copied

STATUS_OK = 0  # payload: the pickled return value
STATUS_ERROR = 1  # payload: dump_error(exception)
STATUS_TIMEOUT = 2  # payload: empty; the worker killed the process
STATUS_LOST = 3  # payload: utf-8 reason; the broker gave up retrying
STATUS_CRASHED = 4  # worker -> broker only: the process running it died

DEFAULT_SPILL_THRESHOLD = 1 << 20

# A call payload starts with the function's digest and the length of its pickle.
CALL_HEADER = struct.Struct("<16sI")
_CACHEABLE = (types.FunctionType, functools.partial)
_CACHE_MAX_BLOB = 1 << 20
_PLAIN = frozenset({int, float, str, bytes, bool, type(None)})

_ID = struct.Struct("<Q")


def encode_json(kind: bytes, body: dict[str, Any]) -> bytes:
    """One frame: ``kind`` followed by ``body`` as JSON."""
    return kind + json.dumps(body).encode()


class MalformedMessage(ValueError):
    """A frame that is not what its kind says (bad JSON, a cut-off id list)."""


def decode_json(frame: bytes) -> dict[str, Any]:
    """The JSON object of a frame made by :func:`encode_json`.

    Raises:
        MalformedMessage: when it is not a JSON object (or nests too deep to read).
    """
    if len(frame) <= 1:
        return {}
    try:
        body = json.loads(frame[1:])
    except (ValueError, RecursionError) as exc:
        raise MalformedMessage(f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise MalformedMessage("not a JSON object")
    return body


def pack_ids(kind: bytes, ids: Iterable[int]) -> bytes:
    """One frame: ``kind`` followed by 64-bit task ids."""
    ids = list(ids)
    return kind + struct.pack(f"<{len(ids)}Q", *ids)


def unpack_ids(frame: bytes) -> tuple[int, ...]:
    """The task ids of a frame made by :func:`pack_ids`.

    Raises:
        MalformedMessage: when the frame is not a whole number of ids.
    """
    if (len(frame) - 1) % 8:
        raise MalformedMessage(f"{len(frame) - 1} bytes is not a list of 8-byte task ids")
    return struct.unpack(f"<{(len(frame) - 1) // 8}Q", frame[1:])


Payload = bytes | memoryview


def add_task(out: list[Any], task_id: int, timeout_s: float, flags: int, payload: Payload) -> None:
    """Append one task to a message: one frame, or two for a large payload."""
    if len(payload) <= INLINE_MAX:
        out.append(TASK_HEADER.pack(task_id, timeout_s, flags | INLINE) + payload)
    else:
        out += (TASK_HEADER.pack(task_id, timeout_s, flags & ~INLINE), payload)


def add_result(out: list[Any], task_id: int, status: int, flags: int, payload: Payload) -> None:
    """Append one result to a message: one frame, or two for a large payload."""
    if len(payload) <= INLINE_MAX:
        out.append(RESULT_HEADER.pack(task_id, status, flags | INLINE) + payload)
    else:
        out += (RESULT_HEADER.pack(task_id, status, flags & ~INLINE), payload)


def read_tasks(frames: Sequence[Any], start: int) -> Iterator[tuple[int, float, int, Payload]]:
    """Task id, timeout, flags (less :data:`INLINE`) and payload of each task from ``start``."""
    size, end, i = TASK_HEADER.size, len(frames), start
    while i < end:
        frame = frames[i]
        task_id, timeout_s, flags = TASK_HEADER.unpack_from(frame)
        if flags & INLINE:
            yield task_id, timeout_s, flags & ~INLINE, memoryview(frame)[size:]
            i += 1
        else:
            yield task_id, timeout_s, flags, frames[i + 1]
            i += 2


def read_results(frames: Sequence[Any], start: int) -> Iterator[tuple[int, int, int, Payload]]:
    """Task id, status, flags (less :data:`INLINE`) and payload of each result from ``start``."""
    size, end, i = RESULT_HEADER.size, len(frames), start
    while i < end:
        frame = frames[i]
        task_id, status, flags = RESULT_HEADER.unpack_from(frame)
        if flags & INLINE:
            yield task_id, status, flags & ~INLINE, memoryview(frame)[size:]
            i += 1
        else:
            yield task_id, status, flags, frames[i + 1]
            i += 2


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


def read_payload(flags: int, frame: Payload, *, delete: bool) -> Payload:
    """The payload a frame stands for, reading (and deleting) its spill file."""
    if not flags & SPILLED:
        return frame
    path = os.fsdecode(bytes(frame))
    with open(path, "rb") as file:
        payload = file.read()
    if delete:
        os.unlink(path)
    return payload


class PickledFunctions:
    """The client's cache of pickled functions, one entry per function object.

    cloudpickling a function by value costs far more than its arguments, so a
    plain function or ``functools.partial`` is pickled once, on its first
    call, and reused while the object lives. Like Dask and Ray, a function is
    captured as it was then: rebinding a global it reads later goes unseen.
    """

    def __init__(self) -> None:
        self._by_function: weakref.WeakKeyDictionary[Callable[..., Any], bytes] = (
            weakref.WeakKeyDictionary()
        )

    def head(self, fn: Callable[..., Any]) -> bytes:
        """:data:`CALL_HEADER` plus the pickled function, cached when possible."""
        cacheable = type(fn) in _CACHEABLE
        if cacheable:
            head = self._by_function.get(fn)
            if head is not None:
                return head
        blob: bytes = cloudpickle.dumps(fn, protocol=pickle.HIGHEST_PROTOCOL)
        digest = hashlib.blake2b(blob, digest_size=16).digest()
        head = CALL_HEADER.pack(digest, len(blob)) + blob
        if cacheable and len(blob) <= _CACHE_MAX_BLOB:
            self._by_function[fn] = head
        return head


class LoadedFunctions:
    """The task process's cache of unpickled functions, by digest, least recent out."""

    def __init__(self, max_entries: int = 128, max_bytes: int = 64 << 20) -> None:
        self._entries: OrderedDict[bytes, tuple[Callable[..., Any], int]] = OrderedDict()
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._bytes = 0

    def get(self, digest: bytes, blob: memoryview) -> Callable[..., Any]:
        """The function ``blob`` pickles, unpickled once per digest."""
        entry = self._entries.get(digest)
        if entry is not None:
            self._entries.move_to_end(digest)
            return entry[0]
        fn: Callable[..., Any] = pickle.loads(blob)
        self._entries[digest] = (fn, len(blob))
        self._bytes += len(blob)
        while len(self._entries) > self._max_entries or self._bytes > self._max_bytes:
            _, (_, size) = self._entries.popitem(last=False)
            self._bytes -= size
        return fn


def dump_call(
    fn: Callable[..., Any],
    args: Sequence[Any],
    kwargs: dict[str, Any],
    functions: PickledFunctions | None = None,
) -> bytes:
    """Serialize a call: :data:`CALL_HEADER`, the pickled function, the arguments.

    cloudpickle makes lambdas and closures travel too; arguments that are all
    plain scalars take the (much faster) standard pickler.
    """
    head = (functions or PickledFunctions()).head(fn)
    if not kwargs and all(type(arg) in _PLAIN for arg in args):
        body = pickle.dumps((args, None), protocol=pickle.HIGHEST_PROTOCOL)
    else:
        body = cloudpickle.dumps((args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
    return head + body


def load_call(
    payload: bytes | memoryview, functions: LoadedFunctions | None = None
) -> tuple[Callable[..., Any], Sequence[Any], dict[str, Any]]:
    """The function, arguments and keyword arguments of a :func:`dump_call` payload."""
    view = memoryview(payload)
    digest, size = CALL_HEADER.unpack_from(view)
    start = CALL_HEADER.size
    blob = view[start : start + size]
    fn = functions.get(digest, blob) if functions is not None else pickle.loads(blob)
    args, kwargs = pickle.loads(view[start + size :])
    return fn, args, kwargs or {}


def dump_result(value: Any) -> bytes:
    """Serialize a return value."""
    return bytes(cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))


def dump_text(value: Any) -> bytes:
    """A :data:`TEXT_RESULT` call's return value as UTF-8.

    Raises:
        TypeError: the call did not return ``str``.
    """
    if not isinstance(value, str):
        raise TypeError(f"a text call must return str, not {type(value).__name__}")
    return value.encode()


def dump_text_error(exc: BaseException) -> bytes:
    """A :data:`TEXT_RESULT` call's exception as its formatted traceback, UTF-8."""
    return "".join(traceback.format_exception(exc)).encode(errors="replace")


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


def load_error(payload: Payload, source_file: str | None = None) -> BaseException:
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
