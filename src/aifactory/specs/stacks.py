"""Stack options a spec may set: Slurm's (checked sbatch values), Kubernetes' (labels, taints)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from aifactory.specs.fields import SpecModel

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


class SlurmOptions(SpecModel):
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


class Toleration(SpecModel):
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


class KubernetesOptions(SpecModel):
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
