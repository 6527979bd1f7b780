"""A Pod that runs as a workload's identity: its security contexts and its home (pure functions).

A tenant's Pod runs as the tenant's uid and gid (``runAsUser``,
``runAsGroup``, its supplementary groups), never as root (``runAsNonRoot``:
the kubelet refuses to start it otherwise), without a way to gain privileges
(``allowPrivilegeEscalation: false``) and with every capability dropped.
``fsGroup`` is the identity's gid, so the kubelet gives the Pod's Secret
volume (its one-time token files, mode 0440) to that group: the workload
reads its own secrets, and no other uid can.

An arbitrary uid has no writable home in an image (the dev image's is
root's ``/root``, aifactory's image's belongs to uid 10001), and the
user database's home of the identity is a path on the control plane's
machine. llama.cpp converts models into ``$HOME/.cache``, so such a Pod gets
an ``emptyDir`` as its home (``WORKLOAD_HOME``), unless its spec sets
``HOME`` itself.

Uid 0 and gid 0 are refused outright, whatever the caller looked up: the
identity seam must never turn into a root Pod.
"""

from __future__ import annotations

from typing import Any

from aifactory.errors import BackendError
from aifactory.identity import Identity

HOME_VOLUME = "home"
WORKLOAD_HOME = "/home/workload"


def pod_security_context(identity: Identity) -> dict[str, Any]:
    """The pod's ``securityContext``: run as ``identity``, its group owns the volumes.

    Raises:
        BackendError: for root's uid or group.
    """
    if identity.uid == 0 or identity.gid == 0:
        raise BackendError(
            f"refusing to run a Pod as {identity.describe()}: workloads never run as root "
            "or root's group.",
            fix="map the tenant to a regular Unix user and group "
            "(`aif tenants create NAME --unix-user USER`) or set AIFACTORY_WORKLOAD_USER "
            "to an unprivileged user",
        )
    return {
        "runAsUser": identity.uid,
        "runAsGroup": identity.gid,
        "supplementalGroups": list(identity.groups),
        "runAsNonRoot": True,
        "fsGroup": identity.gid,
    }


def container_security_context() -> dict[str, Any]:
    """A container's ``securityContext``: no privilege escalation, no capabilities, no root."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
    }


def confine(spec: dict[str, Any], container: dict[str, Any], identity: Identity) -> None:
    """Make ``spec`` (a pod spec) and its ``container`` run as ``identity``, in place.

    Adds both security contexts, and the ``emptyDir`` home with ``HOME``
    pointing at it when the container's env does not set ``HOME``.

    Raises:
        BackendError: for root's uid or group.
    """
    spec["securityContext"] = pod_security_context(identity)
    container["securityContext"] = container_security_context()
    env: list[dict[str, Any]] = container.setdefault("env", [])
    if any(variable["name"] == "HOME" for variable in env):
        return
    spec["volumes"] = [*spec.get("volumes", []), {"name": HOME_VOLUME, "emptyDir": {}}]
    container["volumeMounts"] = [
        *container.get("volumeMounts", []),
        {"name": HOME_VOLUME, "mountPath": WORKLOAD_HOME},
    ]
    env.append({"name": "HOME", "value": WORKLOAD_HOME})
