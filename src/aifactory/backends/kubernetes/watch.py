"""A live cache of this control plane's Pods: one list, then a watch that resumes.

A daemon thread lists the Pods matching a label selector once, then watches
from the list's ``resourceVersion``; each event updates the cache, so status
questions never reach the API server. When the connection drops (the API
server restarts, a proxy times out) the thread reconnects with backoff and
resumes from the last ``resourceVersion`` it saw; only when the server says
that version is too old (410 Gone) does it list again, and Pods that vanished
meanwhile count as deleted. Each watch request asks the server to end it
after ``watch_timeout_s`` and is then renewed from where it stopped: that
bounds how long a dead connection goes unnoticed and how long the thread
lingers after ``stop``.

The watch also knows when its cache may be stale (``outage``): from the first
failed attempt to reach the API server until one succeeds, and whenever the
server has been silent longer than a watch may last (a connection that died
without a word). A watch that ends or drops is first reopened: only when that
fails is the API server taken for unreachable.

The thread is a daemon thread rather than ``asyncio.to_thread`` work: a watch
blocks for its whole life, and must never keep an interpreter from exiting.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

from kubernetes.client import CoreV1Api
from kubernetes.client.exceptions import ApiException
from kubernetes.watch import watch as _watch_module

logger = logging.getLogger(__name__)

# The client's own line splitter for watch streams (it is not annotated).
_lines: Callable[[Any], Iterator[str]] = _watch_module.iter_resp_lines

_GONE = 410
_KEEP_GONE = 1000  # deleted Pods remembered, so status() can still say how they ended
# How much longer than a watch request may last the server may be silent
# before the connection is taken for dead (it also bounds each read).
_SILENCE_GRACE_S = 15


class _Expired(Exception):
    """The watch's resourceVersion is too old: list again."""


class _Dropped(Exception):
    """A watch that was open broke off (its connection died, the server restarted)."""


class PodWatch:
    """The Pods of one namespace that match a label selector, kept current by a watch."""

    def __init__(
        self,
        api: CoreV1Api,
        namespace: str,
        selector: str,
        *,
        watch_timeout_s: int = 30,
        max_backoff_s: float = 5.0,
    ) -> None:
        self._api = api
        self._namespace = namespace
        self._selector = selector
        self._watch_timeout_s = watch_timeout_s
        self._max_backoff_s = max_backoff_s
        self._lock = threading.Lock()
        self._pods: dict[str, dict[str, Any]] = {}
        self._gone: OrderedDict[str, dict[str, Any]] = OrderedDict()
        # Pods put() here that no list or event has shown yet: a list taken
        # just before their creation must not count them as deleted.
        self._unseen: set[str] = set()
        self._synced = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._resource_version = ""
        # Monotonic time of the last word from the API server (a list, a watch
        # opened or ended, an event or bookmark).
        self._heard_at = time.monotonic()
        self._failure: str | None = None  # the last failed attempt to reach it, while it fails
        self._failing_since: float | None = None  # Unix time of the first one

    def start(self) -> None:
        """Start the watch thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"pod-watch-{self._namespace}", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end; it does at its next event or watch renewal."""
        self._stopping.set()

    def wait_synced(self, timeout_s: float) -> bool:
        """Block until the first list arrived; False when it did not within ``timeout_s``."""
        return self._synced.wait(timeout_s)

    @property
    def synced(self) -> bool:
        """Whether the cache holds a complete list."""
        return self._synced.is_set()

    def outage(self) -> tuple[float, str] | None:
        """Since when (Unix time) and why the cache may be stale; None while the watch is live."""
        with self._lock:
            if self._failing_since is not None and self._failure is not None:
                return self._failing_since, self._failure
            silent_s = time.monotonic() - self._heard_at
        if silent_s > self._watch_timeout_s + _SILENCE_GRACE_S:
            return time.time() - silent_s, f"no word from it for {silent_s:.0f} s"
        return None

    def get(self, name: str) -> tuple[dict[str, Any] | None, bool]:
        """The Pod called ``name`` and whether it was deleted (its last state then)."""
        with self._lock:
            if name in self._pods:
                return self._pods[name], False
            if name in self._gone:
                return self._gone[name], True
        return None, False

    def pods(self) -> list[dict[str, Any]]:
        """Every Pod now in the cache."""
        with self._lock:
            return list(self._pods.values())

    def put(self, pod: dict[str, Any]) -> None:
        """Add a Pod this process just created, unless the watch already brought it."""
        name = pod["metadata"]["name"]
        with self._lock:
            if name not in self._pods:
                self._pods[name] = pod
                self._unseen.add(name)
            self._gone.pop(name, None)

    # ------------------------------------------------------------- the thread

    def _run(self) -> None:
        backoff_s = 0.2
        while not self._stopping.is_set():
            try:
                if not self._resource_version:
                    self._relist()
                self._watch_once()
                backoff_s = 0.2
            except _Expired:
                logger.info(
                    "pod watch in %s: resourceVersion expired; listing again", self._namespace
                )
                self._resource_version = ""
            except _Dropped as dropped:
                # An open watch broke off: reopen it before calling it an outage.
                logger.info("pod watch in %s dropped (%s); reopening", self._namespace, dropped)
                self._stopping.wait(backoff_s)
                backoff_s = min(backoff_s * 2, self._max_backoff_s)
            except Exception as exc:  # the API server is down or restarting: retry
                self._failed(exc)
                self._stopping.wait(backoff_s)
                backoff_s = min(backoff_s * 2, self._max_backoff_s)

    def _heard(self) -> None:
        """The API server answered: whatever outage the watch saw is over."""
        with self._lock:
            self._heard_at = time.monotonic()
            if self._failing_since is None:
                return
            since, self._failing_since, self._failure = self._failing_since, None, None
        logger.info(
            "pod watch in %s: connected again after %.0f s", self._namespace, time.time() - since
        )

    def _failed(self, exc: Exception) -> None:
        with self._lock:
            first = self._failing_since is None
            if first:
                self._failing_since = time.time()
            self._failure = _short(exc)
        if first:
            logger.warning(
                "pod watch in %s lost the API server (%s); reconnecting",
                self._namespace,
                self._failure,
            )

    def _relist(self) -> None:
        response: Any = self._api.list_namespaced_pod(
            self._namespace,
            label_selector=self._selector,
            _preload_content=False,
            _request_timeout=30,
        )
        document = json.loads(response.data)
        self._heard()
        listed = {pod["metadata"]["name"]: pod for pod in document.get("items") or []}
        seen = set(listed)
        with self._lock:
            for name, pod in self._pods.items():
                if name in self._unseen and name not in listed:
                    listed[name] = pod
                elif name not in listed:
                    self._remember_gone(name, pod)
            self._pods = listed
            self._unseen -= seen
            for name in listed:
                self._gone.pop(name, None)
        self._resource_version = str(document["metadata"]["resourceVersion"])
        self._synced.set()

    def _watch_once(self) -> None:
        response: Any = self._api.list_namespaced_pod(
            self._namespace,
            label_selector=self._selector,
            watch=True,
            allow_watch_bookmarks=True,
            resource_version=self._resource_version,
            timeout_seconds=self._watch_timeout_s,
            _preload_content=False,
            _request_timeout=(10, self._watch_timeout_s + _SILENCE_GRACE_S),
        )
        self._heard()
        try:
            for line in _lines(response):
                if self._stopping.is_set():
                    return
                self._apply(json.loads(line))
                self._heard()
        except (_Expired, ApiException):
            raise
        except Exception as exc:
            raise _Dropped(_short(exc)) from exc
        finally:
            response.release_conn()
        self._heard()

    def _apply(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        pod = event.get("object") or {}
        if kind == "ERROR":
            if pod.get("code") == _GONE:
                raise _Expired()
            raise ApiException(status=pod.get("code"), reason=pod.get("message"))
        version = (pod.get("metadata") or {}).get("resourceVersion")
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            name = pod["metadata"]["name"]
            with self._lock:
                self._unseen.discard(name)
                if kind == "DELETED":
                    self._pods.pop(name, None)
                    self._remember_gone(name, pod)
                else:
                    self._pods[name] = pod
                    self._gone.pop(name, None)
        if version:
            self._resource_version = str(version)

    def _remember_gone(self, name: str, pod: dict[str, Any]) -> None:
        self._gone[name] = pod
        while len(self._gone) > _KEEP_GONE:
            self._gone.popitem(last=False)


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__
