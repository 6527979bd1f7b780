"""Function pools and agents: workloads deployed like a service, and what may be deployed."""

from __future__ import annotations

import shlex
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from aifactory.specs.fields import (
    NAME_PATTERN,
    BackendName,
    SpecModel,
    check_env_names,
    check_path,
    check_rotation_lead,
    parse_duration_s,
)
from aifactory.specs.service import Autoscaling, HealthCheck, Replicas, Resources, Service
from aifactory.specs.stacks import KubernetesOptions, SlurmOptions


class Workload(SpecModel):
    """What a FunctionPool and an Agent share: where and how their allocations run."""

    name: str = Field(pattern=NAME_PATTERN)
    resources: Resources = Resources()
    backend: BackendName | None = None
    env: dict[str, str] = Field(default_factory=dict)
    start_timeout_s: float = Field(default=600.0, alias="start_timeout", gt=0)
    time_limit_s: float | None = Field(default=None, alias="time_limit", gt=0)
    rotation_lead_s: float = Field(default=120.0, alias="rotation_lead", ge=0)
    slurm: SlurmOptions = SlurmOptions()
    kubernetes: KubernetesOptions = KubernetesOptions()
    private: bool = False

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @field_validator("start_timeout_s", "time_limit_s", "rotation_lead_s", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return None if value is None else parse_duration_s(value)

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        return check_env_names(env)

    @model_validator(mode="after")
    def _lead_fits_in_time_limit(self) -> Workload:
        check_rotation_lead(self.time_limit_s, self.rotation_lead_s)
        return self

    @property
    def health(self) -> HealthCheck:
        """Readiness is not an HTTP probe here; only the start timeout applies."""
        return HealthCheck(start_timeout_s=self.start_timeout_s)

    def to_document(self) -> dict[str, Any]:
        """The spec as a plain dict that ``load_deployable`` accepts back."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class FunctionPool(Workload):
    """Warm Python workers for serverless functions, run inside allocations (pilot jobs).

    Each allocation runs one worker manager with ``workers`` task processes;
    the pool keeps between ``allocations.min`` and ``allocations.max`` of them,
    following the queued and running tasks, and down to zero after
    ``idle_to_zero`` without a call when ``allocations.min`` is 0. A
    ``private`` pool (and its named functions) serves only its tenant's keys.
    Readiness comes from the broker: the allocation's worker joined.
    """

    kind: Literal["FunctionPool"]
    workers: int = Field(default=1, ge=1, le=1024)
    replicas: Replicas = Field(default=Replicas(min=0, max=1), alias="allocations")
    idle_to_zero_s: float = Field(default=300.0, alias="idle_to_zero", ge=0)
    scale_down_window_s: float = Field(default=30.0, alias="scale_down_window", ge=0)
    python: str = Field(default="", pattern=r"^(/[^\x00]*)?$")

    @field_validator("idle_to_zero_s", "scale_down_window_s", mode="before")
    @classmethod
    def _window(cls, value: Any) -> Any:
        return parse_duration_s(value)

    @field_validator("python")
    @classmethod
    def _python_is_a_path(cls, python: str) -> str:
        return check_path(python)

    @property
    def autoscaling(self) -> Autoscaling:
        """The pool's scaling policy: one allocation per ``workers`` busy or queued tasks."""
        return Autoscaling(
            target_concurrency=self.workers,
            scale_down_window_s=self.scale_down_window_s,
            idle_to_zero_s=self.idle_to_zero_s,
        )


class Agent(Workload):
    """A user's long-lived program (any command), run for a tenant on any backend.

    Its replicas get ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY`` (a key of the
    agent's own, in its tenant, revoked when the agent is deleted) and, where
    object storage runs, an S3 endpoint with that key's credentials, so the
    program uses the factory's models, functions and buckets under its
    tenant's limits. An agent is ready once its program started.
    """

    kind: Literal["Agent"]
    command: tuple[str, ...] = Field(min_length=1, max_length=4096)
    count: int = Field(default=1, ge=0, le=100, alias="replicas")
    start_timeout_s: float = Field(default=120.0, alias="start_timeout", gt=0)
    rotation_lead_s: float = Field(default=60.0, alias="rotation_lead", ge=0)

    @field_validator("command", mode="before")
    @classmethod
    def _split_command(cls, value: Any) -> Any:
        return shlex.split(value) if isinstance(value, str) else value

    @property
    def replicas(self) -> Replicas:
        """Exactly ``count`` replicas."""
        return Replicas(min=self.count, max=max(1, self.count))

    @property
    def autoscaling(self) -> Autoscaling:
        """Agents do not follow load: the count stays as set."""
        # Never idle to zero: infinity, which a spec may not say, so unvalidated.
        return Autoscaling.model_construct(idle_to_zero_s=float("inf"))


Deployable = Service | FunctionPool | Agent
