"""The pod cache's bookkeeping: lists, events, pods it created itself, and outages.

The watch against a real API server (restarts included) is tested in
tests/integration/test_kubernetes.py; here the list answers are canned so
the cache's rules can be checked one by one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import urllib3

from aifactory.backends.kubernetes.watch import PodWatch, _Expired


@dataclass
class Answer:
    data: bytes


class CannedList:
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.version = "100"

    def list_namespaced_pod(self, namespace: str, **options: Any) -> Answer:
        assert options["label_selector"] == "aifactory.io/instance=ab12cd34"
        document = {"metadata": {"resourceVersion": self.version}, "items": self.items}
        return Answer(json.dumps(document).encode())


def pod(name: str, phase: str = "Running", version: str = "1") -> dict[str, Any]:
    return {"metadata": {"name": name, "resourceVersion": version}, "status": {"phase": phase}}


def make_watch() -> tuple[PodWatch, CannedList]:
    api = CannedList()
    return PodWatch(api, "ml", "aifactory.io/instance=ab12cd34"), api  # type: ignore[arg-type]


def test_a_list_fills_the_cache_and_marks_it_synced() -> None:
    watch, api = make_watch()
    api.items = [pod("a"), pod("b")]
    assert not watch.synced
    watch._relist()
    assert watch.synced
    assert sorted(p["metadata"]["name"] for p in watch.pods()) == ["a", "b"]
    assert watch._resource_version == "100"


def test_pods_missing_from_a_new_list_count_as_deleted() -> None:
    watch, api = make_watch()
    api.items = [pod("a"), pod("b")]
    watch._relist()
    api.items = [pod("b")]
    watch._relist()
    last, deleted = watch.get("a")
    assert deleted and last is not None and last["metadata"]["name"] == "a"
    assert watch.get("b") == (pod("b"), False)
    assert watch.get("never") == (None, False)


def test_a_pod_just_created_survives_a_list_taken_before_it() -> None:
    watch, api = make_watch()
    watch.put(pod("new"))
    watch._relist()  # the list does not show it yet
    assert watch.get("new") == (pod("new"), False)
    # Once any list or event has shown it, it is an ordinary pod again.
    api.items = [pod("new")]
    watch._relist()
    api.items = []
    watch._relist()
    assert watch.get("new")[1] is True


def test_events_update_and_delete() -> None:
    watch, _ = make_watch()
    watch._relist()
    watch._apply({"type": "ADDED", "object": pod("a", "Pending", "101")})
    watch._apply({"type": "MODIFIED", "object": pod("a", "Running", "102")})
    assert watch.get("a")[0] == pod("a", "Running", "102")
    watch._apply({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "150"}}})
    assert watch._resource_version == "150"
    watch._apply({"type": "DELETED", "object": pod("a", "Succeeded", "151")})
    assert watch.get("a") == (pod("a", "Succeeded", "151"), True)
    assert watch.pods() == []
    assert watch._resource_version == "151"


def test_an_expired_version_asks_for_a_new_list() -> None:
    watch, _ = make_watch()
    with pytest.raises(_Expired):
        watch._apply({"type": "ERROR", "object": {"code": 410, "message": "too old"}})


class Stream:
    """A watch answer: its event lines, then an end (or a broken connection)."""

    def __init__(self, lines: list[str], breaks: bool) -> None:
        self.lines = lines
        self.breaks = breaks

    def stream(self, amt: Any = None, decode_content: bool = False) -> Iterator[bytes]:
        for line in self.lines:
            yield (line + "\n").encode()
        time.sleep(0.05)
        if self.breaks:
            raise urllib3.exceptions.ProtocolError("Connection broken: reset by peer")

    def release_conn(self) -> None:
        pass


class ScriptedServer(CannedList):
    """A list and watches that answer, break off, or cannot be reached (``down``)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.watches_break = False
        self.lines: list[str] = []

    def list_namespaced_pod(self, namespace: str, **options: Any) -> Any:
        if self.down:
            raise urllib3.exceptions.MaxRetryError(
                None,  # type: ignore[arg-type]
                "/api/v1/namespaces/ml/pods",
                ConnectionRefusedError(111, "Connection refused"),
            )
        if options.get("watch"):
            return Stream(self.lines, self.watches_break)
        return super().list_namespaced_pod(namespace, **options)


def started_watch(server: ScriptedServer) -> PodWatch:
    watch = PodWatch(server, "ml", "aifactory.io/instance=ab12cd34", max_backoff_s=0.2)  # type: ignore[arg-type]
    watch.start()
    assert watch.wait_synced(5)
    return watch


def wait_for(condition: Callable[[], bool], timeout_s: float = 5) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_an_unreachable_api_server_is_an_outage_until_it_answers_and_no_pod_is_lost() -> None:
    server = ScriptedServer()
    server.items = [pod("a")]
    watch = started_watch(server)
    try:
        assert watch.outage() is None
        down_at = time.time()
        server.down = server.watches_break = True
        wait_for(lambda: watch.outage() is not None)
        since, why = watch.outage() or (0.0, "")
        assert down_at <= since <= time.time()
        assert "Connection refused" in why
        time.sleep(0.5)  # failing again and again: still the same outage
        again = watch.outage()
        assert again is not None and again[0] == since
        assert watch.get("a") == (pod("a"), False)
        server.down = server.watches_break = False
        wait_for(lambda: watch.outage() is None)
        assert watch.get("a") == (pod("a"), False)
    finally:
        watch.stop()


def test_a_watch_that_breaks_off_and_reopens_is_no_outage() -> None:
    server = ScriptedServer()
    server.watches_break = True
    server.lines = [json.dumps({"type": "MODIFIED", "object": pod("a", version="101")})]
    watch = started_watch(server)
    try:
        deadline = time.monotonic() + 1
        while time.monotonic() < deadline:
            assert watch.outage() is None
            time.sleep(0.02)
        assert watch.get("a") == (pod("a", version="101"), False)
    finally:
        watch.stop()


def test_silence_longer_than_a_watch_may_last_is_an_outage() -> None:
    watch, _ = make_watch()
    watch._relist()
    assert watch.outage() is None
    watch._heard_at -= 30 + 16  # a watch lasts 30 s; then the server has 15 s more
    since, why = watch.outage() or (0.0, "")
    assert why == "no word from it for 46 s"
    assert since == pytest.approx(time.time() - 46, abs=1)
    watch._relist()
    assert watch.outage() is None
