"""Slurm: replicas and batch jobs as Slurm jobs, through its commands only.

``backend`` (replicas), ``jobs`` (batch jobs), ``script``/``job_script``
(the batch scripts), ``commands`` (running a command, telling an outage from
an answer), ``identity`` (submitting as the tenant's user).
"""
