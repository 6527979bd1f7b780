"""Whether a Pod fits on a node now: the scheduler's resource arithmetic, selectors and taints."""

from __future__ import annotations

from typing import Any

import pytest

from aifactory.backends.kubernetes.capacity import fits_now, waiting_for_room
from aifactory.specs import KubernetesOptions

ASK = {"cpu": "1", "memory": "1024Mi"}


def node(name: str = "n1", cpu: str = "2", memory: str = "4Gi", **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"pool": "gpu" if name == "g1" else "cpu"}},
        "spec": spec,
        "status": {
            "allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def pod(on: str | None, cpu: str, phase: str = "Running", unschedulable: bool = False) -> Any:
    conditions = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]
    return {
        "spec": {
            "nodeName": on,
            "containers": [{"resources": {"requests": {"cpu": cpu, "memory": "100Mi"}}}],
        },
        "status": {"phase": phase, "conditions": conditions if unschedulable else []},
    }


def test_a_node_with_room_fits_and_requests_of_its_pods_count() -> None:
    options = KubernetesOptions()
    assert fits_now([node()], [], ASK, options)
    assert fits_now([node()], [pod("n1", "1000m")], ASK, options)
    assert not fits_now([node()], [pod("n1", "1500m")], ASK, options)
    # Finished pods hold nothing; pods on other nodes hold nothing here.
    assert fits_now([node()], [pod("n1", "2", phase="Succeeded"), pod("n2", "2")], ASK, options)
    assert not fits_now([node(memory="512Mi")], [], ASK, options)
    assert not fits_now([node()], [], {**ASK, "nvidia.com/gpu": "1"}, options)


def test_unschedulable_unready_unselected_and_tainted_nodes_do_not_count() -> None:
    options = KubernetesOptions()
    assert not fits_now([node(unschedulable=True)], [], ASK, options)
    unready = node()
    unready["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
    assert not fits_now([unready], [], ASK, options)
    selecting = KubernetesOptions(node_selector={"pool": "gpu"})
    assert not fits_now([node("n1")], [], ASK, selecting)
    assert fits_now([node("n1"), node("g1")], [], ASK, selecting)
    taint = {"key": "gpu", "value": "yes", "effect": "NoSchedule"}
    tainted = node(taints=[taint])
    assert not fits_now([tainted], [], ASK, options)
    assert fits_now([node(taints=[{**taint, "effect": "PreferNoSchedule"}])], [], ASK, options)


@pytest.mark.parametrize(
    ("toleration", "fits"),
    [
        ({"key": "gpu", "operator": "Equal", "value": "yes"}, True),
        ({"key": "gpu", "operator": "Equal", "value": "no"}, False),
        ({"key": "gpu", "operator": "Exists"}, True),
        ({"key": "gpu", "operator": "Exists", "effect": "NoExecute"}, False),
        ({"operator": "Exists"}, True),
        ({"key": "other", "operator": "Exists"}, False),
    ],
)
def test_tolerations_match_taints_as_the_scheduler_does(
    toleration: dict[str, str], fits: bool
) -> None:
    tainted = node(taints=[{"key": "gpu", "value": "yes", "effect": "NoSchedule"}])
    options = KubernetesOptions.model_validate({"tolerations": [toleration]})
    assert fits_now([tainted], [], ASK, options) is fits


def test_pods_waiting_for_room_are_seen() -> None:
    assert not waiting_for_room([pod("n1", "1"), pod(None, "1", phase="Pending")])
    assert waiting_for_room([pod(None, "1", phase="Pending", unschedulable=True)])
