"""The pod cache's bookkeeping: lists, events, and pods it created itself.

The watch against a real API server (restarts included) is tested in
tests/integration/test_kubernetes.py; here the list answers are canned so
the cache's rules can be checked one by one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

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
