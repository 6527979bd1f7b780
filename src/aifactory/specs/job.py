"""A batch job: a command, its nodes or array, resources and stack options."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from aifactory.specs.fields import NAME_PATTERN, SpecModel, parse_duration_s
from aifactory.specs.service import Resources
from aifactory.specs.stacks import KubernetesJobOptions, SlurmOptions

# A Slurm array: indexes and ranges (with an optional step), then an optional
# "%N" limit on how many tasks run at once: "0-9", "1,3,5", "0-15:2%4".
JOB_ARRAY_PATTERN = (
    r"^\d{1,7}(-\d{1,7}(:\d{1,7})?)?(,\d{1,7}(-\d{1,7}(:\d{1,7})?)?){0,63}(%\d{1,5})?$"
)


# A catalog entry named from a spec: catalog:TENANT/NAME, or catalog:TENANT/NAME@VERSION.
CATALOG_REFERENCE_PATTERN = (
    r"^catalog:[a-z][a-z0-9-]{0,62}/[a-z0-9][a-z0-9._-]{0,63}(@[1-9][0-9]{0,8})?$"
)
_CATALOG_REFERENCE = Annotated[str, Field(pattern=CATALOG_REFERENCE_PATTERN)]


ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


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


class Job(SpecModel):
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
    # Catalog entries the job reads and writes: recorded as the entries' lineage.
    inputs: tuple[_CATALOG_REFERENCE, ...] = Field(default=(), max_length=64)
    outputs: tuple[_CATALOG_REFERENCE, ...] = Field(default=(), max_length=64)

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
            if not ENV_NAME.match(name):
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
