"""Whether Kubernetes could start a Pod now: room on a node, and nobody waiting.

Kubernetes has no start-time estimate like Slurm's backfill scheduler. What
it does say is whether a node has room for a Pod now (its allocatable
resources less what the Pods bound to it request: the scheduler's own
resource-fit arithmetic, on nodes that are schedulable, match the node
selector and whose ``NoSchedule``/``NoExecute`` taints are tolerated), and
whether Pods are already pending because no node could take them (a new
Pod would wait behind them). A placement that can see neither (a control
plane allowed only its own namespace) judges by its own pending Pods alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from kubernetes.utils import parse_quantity as _parse_quantity

from aifactory.specs import KubernetesOptions, Toleration

_BLOCKING_TAINTS = {"NoSchedule", "NoExecute"}


def parse_quantity(amount: str) -> Decimal:
    """A Kubernetes quantity ("1500m", "2Gi") as a number."""
    value: Decimal = _parse_quantity(amount)  # type: ignore[no-untyped-call]
    return value


def waiting_for_room(pods: Iterable[Mapping[str, Any]]) -> bool:
    """Whether any of ``pods`` is pending because no node can take it."""
    for pod in pods:
        if (pod.get("status") or {}).get("phase") != "Pending":
            continue
        for condition in (pod.get("status") or {}).get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("reason") == (
                "Unschedulable"
            ):
                return True
    return False


def fits_now(
    nodes: Iterable[Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]],
    requests: Mapping[str, str],
    options: KubernetesOptions,
) -> bool:
    """Whether some node has room for a Pod requesting ``requests`` with ``options``."""
    used: dict[str, dict[str, Decimal]] = {}
    for pod in pods:
        node = (pod.get("spec") or {}).get("nodeName")
        if not node or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        held = used.setdefault(node, {})
        for container in (pod.get("spec") or {}).get("containers") or []:
            asked = (container.get("resources") or {}).get("requests") or {}
            for resource, amount in asked.items():
                held[resource] = held.get(resource, Decimal(0)) + parse_quantity(amount)
    needed = {resource: parse_quantity(amount) for resource, amount in requests.items()}
    for node in nodes:
        if not _may_run_on(node, options):
            continue
        allocatable = (node.get("status") or {}).get("allocatable") or {}
        held = used.get(node["metadata"]["name"], {})
        if all(
            parse_quantity(allocatable.get(resource, "0")) - held.get(resource, Decimal(0))
            >= amount
            for resource, amount in needed.items()
        ):
            return True
    return False


def _may_run_on(node: Mapping[str, Any], options: KubernetesOptions) -> bool:
    spec = node.get("spec") or {}
    if spec.get("unschedulable"):
        return False
    labels = (node.get("metadata") or {}).get("labels") or {}
    if any(labels.get(key) != value for key, value in options.node_selector.items()):
        return False
    for condition in (node.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready" and condition.get("status") != "True":
            return False
    return all(
        any(_tolerates(t, taint) for t in options.tolerations)
        for taint in spec.get("taints") or []
        if taint.get("effect") in _BLOCKING_TAINTS
    )


def _tolerates(toleration: Toleration, taint: Mapping[str, Any]) -> bool:
    if toleration.effect and toleration.effect != taint.get("effect"):
        return False
    if not toleration.key:
        return toleration.operator == "Exists"
    if toleration.key != taint.get("key"):
        return False
    return toleration.operator == "Exists" or toleration.value == (taint.get("value") or "")
