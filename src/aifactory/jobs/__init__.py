"""Batch jobs on Slurm: render a Job spec's script, submit it, follow its tasks."""

from aifactory.jobs.manager import JobsManager
from aifactory.jobs.script import JobScriptContext, log_name, render_batch_script

__all__ = ["JobScriptContext", "JobsManager", "log_name", "render_batch_script"]
