"""The control plane: the fleet of replicas, the reconciler and the deploy facade."""

from aifactory.control.fleet import Fleet, Lease, ModelEntry, ReplicaState
from aifactory.control.follower import FleetFollower
from aifactory.control.plane import ControlPlane
from aifactory.control.planner import instance_id
from aifactory.control.pools import PoolLoad, Pools

__all__ = [
    "ControlPlane",
    "Fleet",
    "FleetFollower",
    "Lease",
    "ModelEntry",
    "PoolLoad",
    "Pools",
    "ReplicaState",
    "instance_id",
]
