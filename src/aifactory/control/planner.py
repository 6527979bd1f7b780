r"""What a new replica runs, and on which backend: the allocation request.

Every replica runs the same launcher; behind its ``--`` comes the engine of
a Service, the functions worker of a FunctionPool or an Agent's program::

    python -m aifactory.launcher --control-url URL --replica-id ID --token-file F \
        [--ca-file CA]                                   (an https control plane)
        -- ENGINE ARGV                                   (a Service)
        -- python -m aifactory.functions.worker --broker tcp://… --pool P …   (a pool)
        [--secret-env F] -- THE AGENT'S COMMAND            (an Agent: its key in F)

The planner also builds each backend once, with the site's defaults.

``python`` is the control plane's own interpreter on the local and Slurm
backends (their nodes share its install). A Kubernetes Pod has its own
filesystem: there it is the image's interpreter (``kubernetes_pod_python``),
and llama.cpp converts models into the Pod's ``$HOME`` cache.

A replica runs as its tenant's Unix identity; its secrets, its log and its
model cache lie in that identity's own directory (``Privilege.workload_dir``),
so no tenant reads or poisons another's (a converted model included).
"""

from __future__ import annotations

import asyncio
import secrets
import sys
from pathlib import Path

from aifactory.backends import (
    AllocationRequest,
    Backend,
    load_backend,
)
from aifactory.config import Settings
from aifactory.control.lending import drain_token_file, is_lent
from aifactory.control.placement import stacks_of
from aifactory.control.pools import Pools
from aifactory.engines import render_engine
from aifactory.errors import BackendError
from aifactory.identity import Identity, current_identity
from aifactory.specs import Agent, Deployable, FunctionPool

__all__ = ["AllocationPlanner", "instance_id", "secret_env_file", "worker_token_file"]


class AllocationPlanner:
    """Builds backends and renders the allocation request of a replica."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._backends: dict[str, Backend] = {}

    def provide(self, backend: Backend) -> None:
        """Use ``backend``, built elsewhere, for its stack (a benchmark's measurement backend)."""
        self._backends[backend.name] = backend

    def backend(self, name: str) -> Backend:
        """The backend called ``name``, built on first use."""
        if name not in self._backends:
            instance = instance_id(self._settings.instance_file)
            self._backends[name] = load_backend(name, self._settings, instance)
        return self._backends[name]

    async def aclose(self) -> None:
        """Release every backend built so far."""
        await asyncio.gather(*(b.aclose() for b in self._backends.values()))

    def request(
        self,
        spec: Deployable,
        replica_id: str,
        identity: Identity | None,
        pools: Pools | None,
        stack: str | None = None,
    ) -> AllocationRequest:
        """What a new replica of ``spec`` would run as ``identity`` on ``stack`` (else its first).

        ``identity`` None: as the control plane itself (single-user mode, or a preview).

        Raises:
            BackendError: a pool, but this control plane runs no broker.
        """
        default = self._settings.default_backend
        backend = self.backend(stack or stacks_of(spec, default)[0])
        in_pod = backend.name == "kubernetes"
        python = self._settings.kubernetes_pod_python if in_pod else sys.executable
        own = self._settings.privilege.workload_dir(identity or current_identity())
        token_file = own / "secrets" / f"{replica_id}.token"
        logs = self._log_folder(backend.name, own, identity)
        secrets: tuple[str, ...] = ()
        secret_files = [token_file]
        if is_lent(spec, backend.name):
            # A lent replica drains when preempted: it tells the control
            # plane with its own (reusable) secret and has GraceTime to do it.
            secrets = (
                "--drain-token-file", str(drain_token_file(token_file)),
                "--drain-within", f"{self._settings.slurm_lend_grace_s:g}",
            )  # fmt: skip
            secret_files.append(drain_token_file(token_file))
        if isinstance(spec, FunctionPool):
            command, env = _worker_command(spec, replica_id, token_file, pools, python), spec.env
            secret_files.append(worker_token_file(token_file))
        elif isinstance(spec, Agent):
            command = spec.command
            env = {**spec.env, "OPENAI_BASE_URL": f"{self._settings.control_url}/v1"}
            secrets += ("--secret-env", str(secret_env_file(token_file)))
            secret_files.append(secret_env_file(token_file))
        else:
            engine = render_engine(spec, None if in_pod else own / "cache", python)
            command, env = engine.argv, engine.env
        argv = (
            python, "-m", "aifactory.launcher",
            "--control-url", self._settings.control_url,
            "--replica-id", replica_id,
            "--token-file", str(token_file),
            "--advertise-host", backend.advertise_host,
            *self._ca_args(),
            *secrets,
            "--", *command,
        )  # fmt: skip
        return AllocationRequest(
            replica_id=replica_id,
            service=spec.name,
            argv=argv,
            resources=spec.resources,
            time_limit_s=spec.time_limit_s,
            log_path=logs / spec.name / f"{replica_id}.log",
            env=dict(env),
            slurm=spec.slurm,
            kubernetes=spec.kubernetes,
            secret_files=tuple(secret_files),
            identity=identity,
        )

    def _ca_args(self) -> tuple[str, ...]:
        """The launcher's ``--ca-file``: an https control plane's certificate is verified."""
        ca = self._settings.tls_ca_file
        https = self._settings.control_url.startswith("https:")
        return ("--ca-file", str(ca)) if ca and https else ()

    def _log_folder(self, backend: str, own: Path, identity: Identity | None) -> Path:
        """Where a replica's log goes: its identity's folder, which a Slurm job writes itself.

        A local process's log is opened by the control plane and handed over
        as its output; behind a launch prefix the identity's folder (in its
        home) is not the control plane's to write, so it stays in ``logs/``.
        """
        privilege = self._settings.privilege
        if backend == "local" and privilege.mode == "prefix" and identity is not None:
            return self._settings.logs_dir / "replicas" / identity.user
        return own / "logs"


def _worker_command(
    pool: FunctionPool, replica_id: str, token_file: Path, pools: Pools | None, python: str
) -> tuple[str, ...]:
    if pools is None:
        raise BackendError("this control plane runs no functions broker to serve pools.")
    return (
        pool.python or python, "-m", "aifactory.functions.worker",
        "--broker", pools.worker_address,
        f"--broker-key={pools.public_key}",  # one word: a Z85 key may begin with "-"
        "--pool", pool.name,
        "--processes", str(pool.workers),
        "--replica-id", replica_id,
        "--token-file", str(worker_token_file(token_file)),
    )  # fmt: skip


def secret_env_file(token_file: Path) -> Path:
    """Where an agent replica's secret environment lies, next to its launcher token."""
    return token_file.with_suffix(".env")


def worker_token_file(token_file: Path) -> Path:
    """Where a pool replica's worker token lies, next to its launcher token."""
    return token_file.with_suffix(".worker-token")


def instance_id(path: Path) -> str:
    """This control plane's stable id, created on first use (tags its jobs)."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        value = secrets.token_hex(4)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value + "\n")
        return value
