"""Render a replica's Slurm batch script from its allocation request (a pure function).

Every user value is either checked against a pattern (names, sbatch option
values: no whitespace, quotes, ``;$`#``) or passed through ``shlex.quote``
(environment values, the launcher command), so nothing from a spec can add an
``#SBATCH`` line or a shell command. The site's preamble (``module load …``) comes
from the operator's settings, not from specs.
"""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aifactory.backends.base import DEFAULT_TIME_LIMIT_S, AllocationRequest
from aifactory.errors import BackendError
from aifactory.specs import SLURM_VALUE, SlurmOptions

if TYPE_CHECKING:
    from aifactory.config import Settings

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PATH = re.compile(r"^[^\s'\"`$;#\\]+$")
TAG_PREFIX = "aifactory"
# After the instance, a batch job's tag names it "job:ID"; a replica's, by its id.
BATCH_JOB_TAG = "job:"


@dataclass(frozen=True)
class SiteDefaults:
    """What the operator set for every job: defaults and the preamble.

    ``time_limit_s`` is the walltime of a job whose spec sets none: never
    unlimited, whatever the partition's own default.
    """

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    preamble: str = ""
    lend_partition: str | None = None
    lend_qos: str | None = None
    time_limit_s: float = DEFAULT_TIME_LIMIT_S

    @classmethod
    def from_settings(cls, settings: Settings) -> SiteDefaults:
        """The defaults ``AIFACTORY_SLURM_*`` and ``AIFACTORY_DEFAULT_TIME_LIMIT_S`` name."""
        return cls(
            partition=settings.slurm_partition or None,
            account=settings.slurm_account or None,
            qos=settings.slurm_qos or None,
            preamble=settings.slurm_preamble,
            lend_partition=settings.slurm_lend_partition or None,
            lend_qos=settings.slurm_lend_qos or None,
            time_limit_s=settings.default_time_limit_s,
        )


def time_directive(time_limit_s: float | None, site: SiteDefaults) -> str:
    """``#SBATCH --time`` in whole minutes: the spec's limit, else the site's default."""
    limit_s = site.time_limit_s if time_limit_s is None else time_limit_s
    return sbatch_directive("time", max(1, math.ceil(limit_s / 60)))


def job_tag(instance: str, replica_id: str) -> str:
    """The ``--comment`` that marks a job as this control plane's replica."""
    return f"{TAG_PREFIX}:{instance}:{replica_id}"


def sbatch_directive(name: str, value: str | int | bool) -> str:
    """One ``#SBATCH --name=value`` line; a value that could escape the line is refused.

    Raises:
        BackendError: for an unsafe value.
    """
    if value is True:
        return f"#SBATCH --{name}"
    text = str(value)
    if not SLURM_VALUE.fullmatch(text):
        raise BackendError(
            f"sbatch option --{name} has an unsafe value {text!r}.",
            fix="use letters, digits and ,.:=+@%/()[]&|*!<>- only",
        )
    return f"#SBATCH --{name}={text}"


def render_job_script(request: AllocationRequest, instance: str, site: SiteDefaults) -> str:
    """The exact batch script ``sbatch`` will run for ``request``.

    Raises:
        BackendError: when a value could not be rendered safely.
    """
    log = str(request.log_path)
    if not _PATH.match(log):
        raise BackendError(
            f"log path {log!r} contains spaces or shell characters.",
            fix="set AIFACTORY_DATA_DIR to a path without them",
        )
    slurm = request.slurm
    resources = request.resources
    lines = [
        "#!/bin/bash",
        f"# aifactory replica {request.replica_id} of service {request.service}.",
        "# Rendered by the control plane; `aifactory job-script SERVICE` shows it.",
        sbatch_directive("job-name", f"aif-{request.replica_id}"),
        sbatch_directive("comment", job_tag(instance, request.replica_id)),
        sbatch_directive("output", log),
        sbatch_directive("open-mode", "append"),
        sbatch_directive("nodes", 1),
        sbatch_directive("ntasks", 1),
        sbatch_directive("cpus-per-task", resources.cpus),
        sbatch_directive("mem", f"{math.ceil(resources.memory_gib * 1024)}M"),
    ]
    lines.append(time_directive(request.time_limit_s, site))
    if resources.gpus:
        lines.append(sbatch_directive("gres", f"gpu:{resources.gpus}"))
    for name, chosen in _placement(slurm, site).items():
        if chosen:
            lines.append(sbatch_directive(name, chosen))
    if slurm.constraint:
        lines.append(sbatch_directive("constraint", slurm.constraint))
    for name, value in sorted(slurm.options.items()):
        if value is not False:
            lines.append(sbatch_directive(name, value))
    lines += ["", "set -euo pipefail"]
    if site.preamble.strip():
        lines += ["# site preamble", site.preamble.strip()]
    for name, value in sorted(request.env.items()):
        if not _ENV_NAME.match(name):
            raise BackendError(f"environment variable name {name!r} is not valid.")
        lines.append(f"export {name}={shlex.quote(value)}")
    launch = request.argv
    if slurm.lend:
        # Slurm signals a preempted job's steps at once but its batch shell
        # only when GraceTime ends: a lent launcher runs as a step to hear it.
        launch = ("srun", "--ntasks=1", f"--cpus-per-task={resources.cpus}", *launch)
    lines += ["", "exec " + shlex.join(launch), ""]
    return "\n".join(lines)


def _placement(slurm: SlurmOptions, site: SiteDefaults) -> dict[str, str | None]:
    """Partition, account and QOS: the spec's, else the site's; a lent job's from the site.

    Raises:
        BackendError: a lent replica, but the site names no lending partition.
    """
    if not slurm.lend:
        return {name: getattr(slurm, name) or getattr(site, name) for name in _PLACEMENT}
    if not site.lend_partition:
        raise BackendError(
            "this replica is lent (slurm.lend) but the site has no lending partition.",
            fix="set AIFACTORY_SLURM_LEND_PARTITION (and _LEND_QOS) to the preemptible "
            "partition, or remove slurm.lend",
        )
    return {
        "partition": site.lend_partition,
        "account": slurm.account or site.account,
        "qos": site.lend_qos,
    }


_PLACEMENT = ("partition", "account", "qos")
