"""Where replicas run (one interface, three stacks) and where batch jobs run (two).

Backends and job runners are imported only when chosen, so optional clients
(Kubernetes) stay optional: ``KubernetesJobRunner`` too is imported when
first named. Nothing outside this package imports a concrete backend.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from aifactory.backends.base import (
    AllocationRequest,
    AllocationState,
    AllocationStatus,
    Backend,
    Elapsed,
    HostMount,
    JobRunner,
    JobTask,
    KeepsAccounts,
    SubmittedJob,
)
from aifactory.backends.slurm.commands import SlurmTimeouts
from aifactory.backends.slurm.jobs import SlurmJobRunner
from aifactory.backends.slurm.script import SiteDefaults, sbatch_directive
from aifactory.errors import ConfigError

if TYPE_CHECKING:
    from aifactory.backends.kubernetes.jobs import KubernetesJobRunner
    from aifactory.config import Settings

__all__ = [
    "AllocationRequest",
    "AllocationState",
    "AllocationStatus",
    "Backend",
    "Elapsed",
    "HostMount",
    "JobRunner",
    "JobTask",
    "KeepsAccounts",
    "KubernetesJobRunner",
    "SiteDefaults",
    "SlurmJobRunner",
    "SlurmTimeouts",
    "SubmittedJob",
    "load_backend",
    "load_job_runner",
    "sbatch_directive",
]

_REGISTRY = {
    "local": "aifactory.backends.local:LocalBackend",
    "slurm": "aifactory.backends.slurm.backend:SlurmBackend",
    "kubernetes": "aifactory.backends.kubernetes.backend:KubernetesBackend",
}
_JOB_RUNNERS = {
    "slurm": "aifactory.backends.slurm.jobs:SlurmJobRunner",
    "kubernetes": "aifactory.backends.kubernetes.jobs:KubernetesJobRunner",
}


def load_backend(name: str, settings: Settings, instance: str) -> Backend:
    """Import and build the backend called ``name``, configured by ``settings``.

    Raises:
        ConfigError: when no backend has that name.
    """
    backend_class = _class_named(_REGISTRY, name, "backend {name!r} is not available.")
    backend: Backend = backend_class.from_settings(settings, instance)
    return backend


def load_job_runner(name: str, settings: Settings, instance: str) -> JobRunner:
    """Import and build the batch-job runner called ``name``, configured by ``settings``.

    Raises:
        ConfigError: when no runner has that name.
    """
    runner_class = _class_named(_JOB_RUNNERS, name, "batch jobs cannot run on backend {name!r}.")
    runner: JobRunner = runner_class.from_settings(settings, instance)
    return runner


def _class_named(registry: dict[str, str], name: str, missing: str) -> Any:
    """The class ``registry`` names ``name`` by, imported now."""
    target = registry.get(name)
    if target is None:
        raise ConfigError(
            missing.format(name=name), fix=f"use one of: {', '.join(sorted(registry))}"
        )
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def __getattr__(name: str) -> Any:
    # Imported on first use, with the Kubernetes client it needs.
    if name == "KubernetesJobRunner":
        return importlib.import_module("aifactory.backends.kubernetes.jobs").KubernetesJobRunner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
