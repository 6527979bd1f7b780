"""Render a batch job's Slurm script from its Job spec (a pure function).

Every ``#SBATCH`` value is checked against ``SLURM_VALUE`` (no whitespace,
quotes, ``;$`#`` or newlines), so nothing from a spec can end a directive or
add one. Everything else from the spec (the command, environment values, the
working directory) goes through ``quote`` (``shlex.quote``, or bash's ``$'...'``
with escapes when it holds a newline or another control character), so it
reaches the program as literal text and never spans lines. The site's
preamble comes from the operator's settings.

Shape of the script::

    #!/bin/bash
    #SBATCH --job-name=aif-job-NAME      ... validated values only
    set -euo pipefail
    <site preamble>
    export NAME='value'                  ... quoted
    cd -- '/work/dir'                    ... quoted
    exec CMD ARGS                        one task: the command itself
    exec srun --nodes=N ... CMD ARGS     several tasks: srun starts each
"""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from aifactory.backends.slurm.script import SiteDefaults, sbatch_directive, time_directive
from aifactory.errors import BackendError
from aifactory.specs import Job

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class JobScriptContext:
    """What the control plane adds to a Job spec to render its script.

    Attributes:
        job_id: The control plane's id of the job.
        tag: The ``--comment`` marking the job as this control plane's.
        log_dir: The folder the job's output goes to (one file per task).
        site: The operator's defaults and preamble.
    """

    job_id: str
    tag: str
    log_dir: Path
    site: SiteDefaults = field(default_factory=SiteDefaults)


def log_name(job: Job) -> str:
    """The output file name pattern: ``%A_%a.log`` for arrays, ``%j.log`` otherwise."""
    return "%A_%a.log" if job.array else "%j.log"


def quote(value: str) -> str:
    """Quote ``value`` for bash as one word, always on one line.

    Values with control characters (a newline could start a line such as
    ``#SBATCH --uid=0`` in the script) use bash's ``$'...'`` form with hex
    escapes; every other value goes through ``shlex.quote``.
    """
    if not _CONTROL.search(value):
        return shlex.quote(value)
    escaped = "".join(
        f"\\x{ord(c):02x}" if _CONTROL.match(c) else "\\" + c if c in "\\'" else c for c in value
    )
    return f"$'{escaped}'"


def _join(argv: list[str]) -> str:
    return " ".join(quote(part) for part in argv)


def _task_command(job: Job) -> list[str]:
    if not job.parallel:
        return list(job.command)
    # srun does not take --cpus-per-task from sbatch in Slurm 22.05: say it again.
    return [
        "srun",
        f"--nodes={job.nodes}",
        f"--ntasks-per-node={job.tasks_per_node}",
        f"--cpus-per-task={job.resources.cpus}",
        *job.command,
    ]


def render_batch_script(job: Job, context: JobScriptContext) -> str:
    """The exact batch script ``sbatch`` will run for ``job``.

    Raises:
        BackendError: when a value could not be rendered safely.
    """
    resources = job.resources
    lines = [
        "#!/bin/bash",
        f"# aifactory job {context.job_id} ({job.name}).",
        "# Rendered by the control plane from the Job spec; values are checked or quoted.",
        sbatch_directive("job-name", f"aif-job-{job.name}"),
        sbatch_directive("comment", context.tag),
        sbatch_directive("output", str(context.log_dir / log_name(job))),
        sbatch_directive("nodes", job.nodes),
        sbatch_directive("ntasks-per-node", job.tasks_per_node),
        sbatch_directive("cpus-per-task", resources.cpus),
        sbatch_directive("mem", f"{math.ceil(resources.memory_gib * 1024)}M"),
    ]
    if job.array:
        lines.append(sbatch_directive("array", job.array))
    lines.append(time_directive(job.time_limit_s, context.site))
    if resources.gpus:
        lines.append(sbatch_directive("gres", f"gpu:{resources.gpus}"))
    for name in ("partition", "account", "qos"):
        value = getattr(job.slurm, name) or getattr(context.site, name)
        if value:
            lines.append(sbatch_directive(name, value))
    if job.slurm.constraint:
        lines.append(sbatch_directive("constraint", job.slurm.constraint))
    for name, value in sorted(job.slurm.options.items()):
        if value is not False:
            lines.append(sbatch_directive(name, value))
    lines += ["", "set -euo pipefail"]
    if context.site.preamble.strip():
        lines += ["# site preamble", context.site.preamble.strip()]
    for name, value in sorted(job.env.items()):
        if not _ENV_NAME.fullmatch(name):
            raise BackendError(f"environment variable name {name!r} is not valid.")
        lines.append(f"export {name}={quote(value)}")
    if job.workdir:
        lines.append(f"cd -- {quote(job.workdir)}")
    lines += ["", "exec " + _join(_task_command(job)), ""]
    return "\n".join(lines)
