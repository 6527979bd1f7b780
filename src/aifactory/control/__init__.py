"""The control plane: the fleet of replicas, the reconciler and the deploy facade."""

from aifactory.control.fleet import Fleet, Lease, ModelEntry, ReplicaState
from aifactory.control.plane import ControlPlane

__all__ = ["ControlPlane", "Fleet", "Lease", "ModelEntry", "ReplicaState"]
