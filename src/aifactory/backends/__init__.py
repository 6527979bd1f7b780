"""Where replicas run: one interface, three stacks.

Backends are imported only when chosen, so optional clients (Kubernetes)
stay optional: ``KubernetesJobRunner`` too is imported when first named.
Nothing outside this package imports a concrete backend.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from aifactory.backends.base import (
    AllocationRequest,
    AllocationState,
    AllocationStatus,
    Backend,
    JobTask,
)
from aifactory.backends.slurm_jobs import SlurmJobRunner
from aifactory.backends.slurm_script import SiteDefaults, sbatch_directive
from aifactory.errors import ConfigError

if TYPE_CHECKING:
    from aifactory.backends.kubernetes_jobs import KubernetesJobRunner

__all__ = [
    "AllocationRequest",
    "AllocationState",
    "AllocationStatus",
    "Backend",
    "JobTask",
    "KubernetesJobRunner",
    "SiteDefaults",
    "SlurmJobRunner",
    "load_backend",
    "sbatch_directive",
]

_REGISTRY = {
    "local": "aifactory.backends.local:LocalBackend",
    "slurm": "aifactory.backends.slurm:SlurmBackend",
    "kubernetes": "aifactory.backends.kubernetes:KubernetesBackend",
}


def load_backend(name: str, **options: Any) -> Backend:
    """Import and build the backend called ``name``.

    Raises:
        ConfigError: when no backend has that name.
    """
    target = _REGISTRY.get(name)
    if target is None:
        raise ConfigError(
            f"backend {name!r} is not available.",
            fix=f"use one of: {', '.join(sorted(_REGISTRY))}",
        )
    module_name, _, class_name = target.partition(":")
    backend_class = getattr(importlib.import_module(module_name), class_name)
    backend: Backend = backend_class(**options)
    return backend


def __getattr__(name: str) -> Any:
    # Imported on first use, with the Kubernetes client it needs.
    if name == "KubernetesJobRunner":
        return importlib.import_module("aifactory.backends.kubernetes_jobs").KubernetesJobRunner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
