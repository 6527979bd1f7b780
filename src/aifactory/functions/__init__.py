"""Serverless functions: run Python calls on worker pools inside allocations.

Workers start inside allocations (pilot jobs) and connect out to the
:class:`Broker` in the control plane, because compute nodes often accept no
inbound connections. Clients use :class:`Executor`, a
``concurrent.futures.Executor``::

    Executor --(client ROUTER)--> Broker --(worker ROUTER)--> worker manager --> processes

Layers: ``protocol`` (frames, spill files) underlies ``broker`` (queues,
heartbeats, retries), ``worker`` (process manager, run with
``python -m aifactory.functions.worker``) and ``executor`` (the SDK).
``access`` says who may use a pool: code from its own tenant only, named
functions over HTTP from other tenants when shared.
"""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, as_completed, wait

from aifactory.errors import (
    BrokerUnavailable,
    ExecutorClosed,
    FunctionError,
    RemoteError,
    RemoteTraceback,
    TaskLost,
    TaskTimeout,
)
from aifactory.functions.access import code_refusal
from aifactory.functions.broker import Broker, BrokerStats
from aifactory.functions.executor import Executor, TaskFuture
from aifactory.functions.hub import FunctionsHub
from aifactory.functions.invoke import Invoker

__all__ = [
    "FIRST_COMPLETED",
    "Broker",
    "BrokerStats",
    "BrokerUnavailable",
    "Executor",
    "ExecutorClosed",
    "FunctionError",
    "FunctionsHub",
    "Invoker",
    "RemoteError",
    "RemoteTraceback",
    "TaskFuture",
    "TaskLost",
    "TaskTimeout",
    "as_completed",
    "code_refusal",
    "wait",
]
