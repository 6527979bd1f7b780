"""Declarative specs: what a user deploys, validated once and frozen.

A spec says *what* to run (models, engine, resources, replicas); the control
plane decides *where*. A typo in YAML is an error naming the field path and
the fix, because every model forbids unknown fields.

One module per domain: ``fields`` (what every spec shares), ``service``,
``stacks`` (Slurm and Kubernetes options), ``workloads`` (function pools and
agents), ``job``, and ``loading`` (YAML in, errors naming each field out).
"""

from aifactory.specs.fields import NAME_PATTERN, parse_duration_s
from aifactory.specs.job import CATALOG_REFERENCE_PATTERN, Job, expand_indexes
from aifactory.specs.loading import load_deployable, load_job, load_service
from aifactory.specs.policy import SpecPolicy
from aifactory.specs.service import (
    Autoscaling,
    EngineSpec,
    HealthCheck,
    ModelName,
    Replicas,
    Resources,
    Service,
    StackShare,
)
from aifactory.specs.stacks import (
    DNS_LABEL,
    DNS_SUBDOMAIN,
    LABEL_VALUE,
    SLURM_NAME_PATTERN,
    SLURM_VALUE,
    KubernetesJobOptions,
    KubernetesOptions,
    SlurmOptions,
    Toleration,
)
from aifactory.specs.workloads import Agent, Deployable, FunctionPool

__all__ = [
    "CATALOG_REFERENCE_PATTERN",
    "DNS_LABEL",
    "DNS_SUBDOMAIN",
    "LABEL_VALUE",
    "NAME_PATTERN",
    "SLURM_NAME_PATTERN",
    "SLURM_VALUE",
    "Agent",
    "Autoscaling",
    "Deployable",
    "EngineSpec",
    "FunctionPool",
    "HealthCheck",
    "Job",
    "KubernetesJobOptions",
    "KubernetesOptions",
    "ModelName",
    "Replicas",
    "Resources",
    "Service",
    "SlurmOptions",
    "SpecPolicy",
    "StackShare",
    "Toleration",
    "expand_indexes",
    "load_deployable",
    "load_job",
    "load_service",
    "parse_duration_s",
]
