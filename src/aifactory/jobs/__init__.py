"""Batch jobs: submit a Job spec to its backend's runner (Slurm, Kubernetes), follow its tasks."""

from aifactory.jobs.manager import JobsManager

__all__ = ["JobsManager"]
