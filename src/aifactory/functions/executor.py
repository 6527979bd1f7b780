"""The client side: a ``concurrent.futures.Executor`` that runs calls on a pool.

::

    with Executor(pool="cpu") as ex:  # finds the broker through AIFACTORY_API_URL
        print(sum(ex.map(square, range(1000), chunksize=50)))

Without an address, the executor asks the control plane at ``AIFACTORY_API_URL``
(default ``http://127.0.0.1:8000``) where the pool's broker listens, with
``AIFACTORY_API_KEY``; the broker admits the executor by that key.

``submit`` pickles the call on the caller's thread (spilling big payloads to
the shared spill directory), queues it and wakes the one I/O thread, which
sends whatever has queued up as one batch over a DEALER socket. The same
thread receives result batches and completes the futures; they are real
``concurrent.futures.Future`` objects, so ``as_completed`` and ``wait`` work.

Timeouts are enforced by the worker: a call running longer than ``timeout_s``
fails with :class:`TaskTimeout` (a ``TimeoutError``) and the worker process
that ran it is killed and replaced. ``Future.cancel()`` asks the broker and
succeeds only while the task is still queued there.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import os
import pickle
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import zmq

from aifactory.errors import (
    BrokerUnavailable,
    ExecutorClosed,
    RemoteError,
    TaskLost,
    TaskTimeout,
    Unauthorized,
)
from aifactory.functions import protocol as p
from aifactory.functions.curve import pin_server

__all__ = ["Executor", "TaskFuture"]

_T = TypeVar("_T")
_P = ParamSpec("_P")

_CANCEL_REPLY_S = 10.0


class TaskFuture(concurrent.futures.Future[_T]):
    """A future for one remote call; ``cancel`` asks the broker."""

    def __init__(self, executor: Executor, task_id: int, source_file: str | None) -> None:
        super().__init__()
        self.task_id = task_id
        self._executor = executor
        self._source_file = source_file

    def cancel(self) -> bool:
        """Cancel the call if the broker still holds it in its queue.

        Returns:
            True if the call was cancelled (now or before), False if it is
            running or done.
        """
        if self.done():
            return self.cancelled()
        return self._executor._cancel([self])


class _CancelRequest:
    def __init__(self, ids: list[int]) -> None:
        self.ids = ids
        self.answered = threading.Event()


_BYE = object()
_Op = tuple[int, int, bytes] | _CancelRequest | object


class Executor(concurrent.futures.Executor):
    """Runs Python calls on a functions pool through the broker.

    Args:
        address: The broker's client address, ``tcp://HOST:PORT``; None asks
            the control plane (``AIFACTORY_API_URL``) for the pool's broker.
        pool: The pool whose workers run the calls.
        api_key: The key the broker admits this executor by; default
            ``AIFACTORY_API_KEY``.
        server_key: The broker's Curve public key (Z85), pinned: the pool's
            ``broker_key`` in ``GET /v1/functions/pools/{pool}``. Found with the
            address when ``address`` is None; None with an address talks in
            clear, to a broker started ``--plain``.
        timeout_s: Longest a call may run on a worker; None for no limit.
        connect_timeout_s: How long to wait for the broker's answer.
        spill_dir: The spill directory as mounted here; default: the broker's.
        text_results: Every call returns ``str``, which comes back as text and
            is never unpickled, nor read from a file the worker names: for a
            process that must not run what a worker sends (the control
            plane's named-function calls). A remote exception comes back as
            a :class:`RemoteError` holding its traceback text.

    Raises:
        BrokerUnavailable: when the broker does not answer in time.
        Unauthorized: when the broker refuses the API key.
    """

    def __init__(
        self,
        address: str | None = None,
        pool: str = "default",
        *,
        api_key: str | None = None,
        server_key: str | None = None,
        timeout_s: float | None = None,
        connect_timeout_s: float = 10.0,
        spill_dir: Path | None = None,
        text_results: bool = False,
    ) -> None:
        if address is None or api_key is None:
            from aifactory.functions.discovery import default_api_key, locate_broker

            api_key = default_api_key() if api_key is None else api_key
            if address is None:
                address, server_key = locate_broker(pool, api_key)
        self.address = address
        self.pool = pool
        self.timeout_s = timeout_s
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.SNDHWM, 0)
        self._socket.setsockopt(zmq.RCVHWM, 0)
        self._socket.setsockopt(zmq.LINGER, 1000)
        if server_key is not None:
            pin_server(self._socket, server_key)
        self._socket.connect(address)
        self._socket.send(p.encode_json(p.HELLO, {"pool": pool, "api_key": api_key}))
        if not self._socket.poll(int(connect_timeout_s * 1000)):
            self._close_socket()
            raise BrokerUnavailable(address, connect_timeout_s)
        reply = self._socket.recv()
        welcome = p.decode_json(reply)
        if reply[:1] == p.REFUSED:
            self._close_socket()
            raise Unauthorized(
                f"the functions broker refused this executor: {welcome.get('error')}.",
                fix="pass api_key= or set AIFACTORY_API_KEY to a valid key",
            )
        configured = welcome.get("spill_dir")
        self._spill_dir = spill_dir or (Path(configured) if configured else None)
        self._spill_threshold = int(welcome.get("spill_threshold") or p.DEFAULT_SPILL_THRESHOLD)
        self._pool_prefix = p.SUBMIT + pool.encode()
        self._timeout_s = float(timeout_s or 0.0)
        self._text_results = text_results
        self._task_flags = p.TEXT_RESULT if text_results else 0
        self._ids = itertools.count(1)
        self._functions = p.PickledFunctions()
        self._futures: dict[int, TaskFuture[Any]] = {}
        self._ops: deque[_Op] = deque()
        self._cancels: deque[_CancelRequest] = deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._wake_pending = False
        self._shutdown = False
        self._thread = threading.Thread(
            target=self._serve, name="functions-executor-io", daemon=True
        )
        self._thread.start()

    def submit(
        self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> TaskFuture[_T]:
        """Schedule ``fn(*args, **kwargs)`` on the pool.

        Raises:
            ExecutorClosed: after ``shutdown``.
        """
        if self._shutdown:
            raise ExecutorClosed()
        payload = p.dump_call(fn, args, kwargs, self._functions)
        flags, frame = p.spill(payload, self._spill_dir, self._spill_threshold, "arg")
        flags |= self._task_flags
        task_id = next(self._ids)
        future: TaskFuture[_T] = TaskFuture(self, task_id, _source_file(fn))
        self._futures[task_id] = future
        self._ops.append((task_id, flags, frame))
        self._wake()
        return future

    def map(
        self,
        fn: Callable[..., _T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[_T]:
        """Like the builtin ``map``, run on the pool; results come back in order.

        Args:
            fn: The function to call.
            *iterables: Its arguments, as for ``map``.
            timeout: Seconds to wait for all results, from this call.
            chunksize: Calls shipped per task; larger chunks cut per-task overhead.
        """
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        if chunksize == 1:
            return super().map(fn, *iterables, timeout=timeout)
        results = super().map(
            partial(p.run_chunk, fn), p.chunks(iterables, chunksize), timeout=timeout
        )
        return itertools.chain.from_iterable(results)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking calls; optionally cancel queued ones and wait for the rest."""
        if not self._shutdown:
            self._shutdown = True
            if cancel_futures:
                pending = [f for f in list(self._futures.values()) if not f.done()]
                if pending:
                    self._cancel(pending)
            self._ops.append(_BYE)
            self._wake()
        if wait:
            self._thread.join()

    def _close_socket(self) -> None:
        self._socket.close(linger=0)
        self._context.term()

    # -- called from user threads ------------------------------------------

    def _wake(self) -> None:
        # The I/O thread clears the flag before it drains the queue, so a
        # skipped write never strands an op.
        if not self._wake_pending:
            self._wake_pending = True
            with contextlib.suppress(BlockingIOError):
                os.write(self._wake_w, b"\0")

    def _cancel(self, futures: list[TaskFuture[Any]]) -> bool:
        request = _CancelRequest([f.task_id for f in futures])
        if not self._thread.is_alive():
            return all(f.cancelled() for f in futures)
        self._ops.append(request)
        self._wake()
        if threading.current_thread() is self._thread:
            return False  # a done-callback cannot wait for its own thread
        request.answered.wait(_CANCEL_REPLY_S)
        return all(f.cancelled() for f in futures)

    # -- the I/O thread ----------------------------------------------------

    def _serve(self) -> None:
        sock = self._socket
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        closing = False
        try:
            while not (closing and not self._futures and not self._cancels):
                for item, _ in poller.poll():
                    if item is sock:
                        self._receive()
                    else:
                        with contextlib.suppress(BlockingIOError):
                            os.read(self._wake_r, 4096)
                        self._wake_pending = False
                        closing = self._send_ops() or closing
        finally:
            sock.close()
            self._context.term()
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _send_ops(self) -> bool:
        """Send queued ops, consecutive submits as one batch; True after BYE."""
        sock = self._socket
        batch: list[bytes] = [self._pool_prefix]
        bye = False
        while self._ops:
            op = self._ops.popleft()
            if isinstance(op, tuple):
                task_id, flags, frame = op
                p.add_task(batch, task_id, self._timeout_s, flags, frame)
                continue
            if len(batch) > 1:
                sock.send_multipart(batch)
                batch = [self._pool_prefix]
            if isinstance(op, _CancelRequest):
                self._cancels.append(op)
                sock.send(p.pack_ids(p.CANCEL, op.ids))
            elif op is _BYE:
                bye = True
        if len(batch) > 1:
            sock.send_multipart(batch)
        if bye:
            sock.send(p.BYE)
        return bye

    def _receive(self) -> None:
        while True:
            try:
                frames = self._socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            kind = frames[0][:1]
            if kind == p.RESULTS:
                for task_id, status, flags, payload in p.read_results(frames, 1):
                    self._complete(task_id, status, flags, payload)
            elif kind == p.CANCELLED:
                self._on_cancelled(frames[0])
            elif kind == p.REFUSED:
                self._refused(str(p.decode_json(frames[0]).get("error")))

    def _refused(self, reason: str) -> None:
        """The broker forgot or no longer admits us: fail what waits (nothing is lost silently)."""
        error = Unauthorized(f"the functions broker refused this executor: {reason}.")
        for task_id in list(self._futures):
            future = self._futures.pop(task_id)
            with contextlib.suppress(concurrent.futures.InvalidStateError):
                future.set_exception(error)

    def _complete(self, task_id: int, status: int, flags: int, frame: p.Payload) -> None:
        future = self._futures.pop(task_id, None)
        try:
            if self._text_results:
                if flags & p.SPILLED:  # a path the worker names is never opened
                    status, frame = p.STATUS_LOST, b"the worker spilled a text result"
                data = frame
            else:
                data = p.read_payload(flags, frame, delete=True)
            if future is None:
                return
            if status == p.STATUS_OK:
                future.set_result(
                    bytes(data).decode() if self._text_results else pickle.loads(data)
                )
            elif status == p.STATUS_ERROR and self._text_results:
                text = bytes(data).decode(errors="replace")
                future.set_exception(RemoteError("remote traceback", text))
            elif status == p.STATUS_ERROR:
                future.set_exception(p.load_error(data, future._source_file))
            elif status == p.STATUS_TIMEOUT:
                future.set_exception(TaskTimeout(task_id, self._timeout_s))
            else:
                future.set_exception(TaskLost(task_id, bytes(data).decode(errors="replace")))
        except concurrent.futures.InvalidStateError:
            pass
        except Exception as exc:  # the result could not be read or unpickled here
            if future is not None and not future.done():
                future.set_exception(exc)

    def _on_cancelled(self, frame: bytes) -> None:
        body = frame[1:]
        for offset in range(0, len(body), p.CANCEL_ENTRY.size):
            task_id, removed = p.CANCEL_ENTRY.unpack_from(body, offset)
            if removed:
                future = self._futures.pop(task_id, None)
                if future is not None:
                    concurrent.futures.Future.cancel(future)
        if self._cancels:
            self._cancels.popleft().answered.set()


def _source_file(fn: Callable[..., Any]) -> str | None:
    """The file defining ``fn``, looking through ``partial`` and map's chunks."""
    while isinstance(fn, partial):
        fn = fn.args[0] if fn.func is p.run_chunk and fn.args else fn.func
    code = getattr(fn, "__code__", None)
    return code.co_filename if code is not None else None
