"""The control plane: the fleet of replicas, what decides, what does, and the deploy facade.

Where each thing happens::

    plane       the facade the admin API and the CLI call; ``views`` builds its summaries
    reconciler  decides how many replicas each service has, and where
                (``autoscaler``, ``placement``, ``bursting``, ``rotation``, ``catalog``)
    lifecycle   does it: launch, register, follow, drain, stop, fail, one replica at a time
                (``monitor`` its health, ``adoption`` after a restart, ``cancellations``)
    fleet       the live replicas and routing; ``holding`` the requests waiting at zero
    wakeup      the one way to ask the reconciler for a tick now
"""

from aifactory.control.catalog import ServiceCatalog
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
    "ServiceCatalog",
    "instance_id",
]
