"""Errors raised by serverless functions (to be moved into ``aifactory/errors.py``).

::

    AIFactoryError
     +-- FunctionError            a submitted function could not complete
     |    +-- TaskTimeout         ran longer than its timeout (also a TimeoutError)
     |    +-- TaskLost            its worker was lost more than ``max_retries`` times
     |    +-- RemoteError         raised remotely, but the exception could not be pickled
     +-- BrokerUnavailable        the executor got no answer from the broker
     +-- ExecutorClosed          submit after shutdown (also a RuntimeError)

    RemoteTraceback              the ``__cause__`` of a re-raised remote exception
"""

from __future__ import annotations

from aifactory.errors import AIFactoryError

__all__ = [
    "BrokerUnavailable",
    "ExecutorClosed",
    "FunctionError",
    "RemoteError",
    "RemoteTraceback",
    "TaskLost",
    "TaskTimeout",
]


class FunctionError(AIFactoryError):
    """Base of the errors a function's future can carry besides its own exception."""


class TaskTimeout(FunctionError, TimeoutError):
    """Set on a future by the executor when the worker reports the task ran too long.

    The worker kills the process that ran the task and starts a fresh one.
    """

    def __init__(self, task_id: int, timeout_s: float) -> None:
        super().__init__(
            f"task {task_id} ran longer than its timeout of {timeout_s:g} s and was killed.",
            fix="raise `timeout_s` on the Executor or split the work into smaller tasks",
        )
        self.task_id = task_id
        self.timeout_s = timeout_s


class TaskLost(FunctionError):
    """Set on a future by the executor when the broker gave up on a task.

    The broker retries a task whose worker died or went silent up to its
    ``max_retries`` and then fails it with this error.
    """

    def __init__(self, task_id: int, detail: str) -> None:
        super().__init__(
            f"task {task_id} failed: {detail}.",
            fix="check the worker logs for crashes (out of memory, killed by the scheduler) "
            "or raise the broker's `max_retries`",
        )
        self.task_id = task_id


class RemoteError(FunctionError):
    """Stands in for a remote exception that could not be pickled back.

    Raised by the worker's task runner; carries the original type name.
    """

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(
            f"{type_name}: {message}",
            fix="make the exception picklable to get the original type back",
        )
        self.type_name = type_name

    def __reduce__(self) -> tuple[type[RemoteError], tuple[str, str]]:
        return (RemoteError, (self.type_name, self.message.partition(": ")[2]))


class BrokerUnavailable(AIFactoryError):
    """Raised by ``Executor()`` when the broker does not answer its hello in time."""

    def __init__(self, address: str, timeout_s: float) -> None:
        super().__init__(
            f"no functions broker answered at {address} within {timeout_s:g} s.",
            fix="check that the control plane is running and that the address is reachable",
        )
        self.address = address


class ExecutorClosed(AIFactoryError, RuntimeError):
    """Raised by ``Executor.submit`` after ``shutdown``."""

    def __init__(self) -> None:
        super().__init__(
            "cannot schedule new futures after shutdown.",
            fix="create a new Executor or submit before leaving the `with` block",
        )


class RemoteTraceback(Exception):  # noqa: N818 - the name concurrent.futures uses
    """The formatted remote traceback, attached as ``__cause__`` of a remote exception."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text
