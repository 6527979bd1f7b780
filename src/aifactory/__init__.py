"""aifactory: a dual-stack AI Factory control plane.

OpenAI-compatible endpoints, declarative service specs and an admin API in
front of replicas that run as Slurm jobs, Kubernetes pods or local processes.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
