"""Settings: one typed object, read from arguments, ``AIFACTORY_*`` and a TOML file.

Precedence, highest first: keyword arguments, ``AIFACTORY_*`` environment
variables, the TOML file named by ``AIFACTORY_CONFIG`` (default
``~/.config/aifactory/config.toml`` when it exists), then the defaults, which
work on one machine with no configuration. Nothing else in aifactory reads
``os.environ``.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
import sys
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from aifactory.errors import ConfigError
from aifactory.identity import Privilege, choose_privilege

__all__ = ["Settings", "load_settings"]

BackendName = Literal["local", "slurm", "kubernetes"]


def _absolute(path: Path) -> Path:
    if not path.is_absolute():
        raise ValueError("must be an absolute path")
    return path


AbsolutePath = Annotated[Path, AfterValidator(_absolute)]

# The interpreter of aifactory's container image (deploy/Containerfile).
IMAGE_PYTHON = "/opt/aifactory/bin/python"


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME")
    if not base and os.getuid() == 0:
        # A root control plane is a site daemon; workloads must be able to
        # reach their own folder in it, which root's home (0700) forbids.
        return Path("/var/lib/aifactory")
    return Path(base or Path.home() / ".local" / "share") / "aifactory"


def _config_file() -> Path:
    explicit = os.environ.get("AIFACTORY_CONFIG")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "aifactory" / "config.toml"


class Settings(BaseSettings):
    """Every setting of aifactory, with single-machine defaults."""

    model_config = SettingsConfigDict(env_prefix="AIFACTORY_", extra="forbid", frozen=True)

    data_dir: Path = Field(default_factory=_default_data_dir)
    database_url: str = ""
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    public_url: str = ""
    # HTTPS on the API: launchers, the CLI and clients verify the certificate
    # against `tls_ca` (default: the certificate itself, a self-signed one).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    default_backend: BackendName = "local"
    role: Literal["all", "gateway"] = "all"
    local_cpus: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    max_request_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    # Input limits of every HTTP listener (aifactory.input_limits): bodies of
    # admin and internal routes, header size and count, read timeouts, and
    # connections (uvicorn's limit_concurrency; more get a 503).
    max_admin_request_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_internal_request_bytes: int = Field(default=64 * 1024, ge=1024)
    max_header_bytes: int = Field(default=64 * 1024, ge=1024)
    max_headers: int = Field(default=100, ge=10)
    header_timeout_s: float = Field(default=10.0, gt=0)
    body_timeout_s: float = Field(default=30.0, gt=0)
    keep_alive_timeout_s: int = Field(default=5, ge=1)
    max_connections: int = Field(default=4096, ge=1)
    max_in_flight_per_key: int = Field(default=256, ge=1)
    upstream_connect_timeout_s: float = Field(default=5.0, gt=0)
    upstream_read_timeout_s: float = Field(default=600.0, gt=0)
    reconcile_interval_s: float = Field(default=1.0, gt=0)
    # How long the Responses API keeps a stored response (retrieval, previous_response_id).
    responses_retention_s: float = Field(default=30 * 24 * 3600.0, gt=0)
    slurm_partition: str = ""
    slurm_account: str = ""
    slurm_qos: str = ""
    slurm_preamble: str = ""
    # Where lent (preemptible) replicas go, and the partition's GraceTime:
    # how long a preempted replica has to drain before Slurm kills it.
    slurm_lend_partition: str = ""
    slurm_lend_qos: str = ""
    slurm_lend_grace_s: float = Field(default=20.0, gt=0)
    slurm_command_timeout_s: float = Field(default=30.0, gt=0)
    # squeue and sbatch --test-only: asked often, and waited on. Slurm's
    # own clients give up after 9-20 s when slurmctld does not answer.
    slurm_query_timeout_s: float = Field(default=10.0, gt=0)
    # The walltime of replicas and batch jobs whose spec sets no time_limit
    # (Slurm's --time, Kubernetes' activeDeadlineSeconds): never unlimited.
    default_time_limit_s: float = Field(default=24 * 3600.0, ge=60)
    # The Batch API (aifactory.batches): the largest input file and most
    # requests it takes, and the share of the price a batch does not pay
    # (0.5: its tokens and node-hours are charged at half).
    batch_max_file_bytes: int = Field(default=100 * 1024 * 1024, ge=1024)
    batch_max_lines: int = Field(default=50_000, ge=1)
    batch_discount: float = Field(default=0.5, ge=0, le=1)
    kubeconfig: Path | None = None
    kubernetes_namespace: str = Field(
        default="default", pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
    )
    kubernetes_image: str = Field(default="localhost/aifactory:latest", min_length=1)
    # Host paths every replica Pod mounts read-only at the same path (a JSON
    # list in the environment): on the dev cluster, the venv and the source.
    kubernetes_host_paths: tuple[AbsolutePath, ...] = ()
    # The Python interpreter inside replica Pods. Empty: the image's
    # (/opt/aifactory/bin/python), or this control plane's own when
    # kubernetes_host_paths mounts it from the host.
    kubernetes_python: str = Field(default="", pattern=r"^(/[^\x00]*)?$")
    # The PriorityClass of lent (preemptible) batch pods, below the cluster's
    # default so that any other pod that needs their room preempts them; the
    # site creates it (deploy/k8s-priority-classes.yaml). "": none, batch pods
    # then run at the default priority. A user's spec never names a class.
    kubernetes_lent_priority_class: str = Field(
        default="",
        max_length=253,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)?$",
    )
    drain_timeout_s: float = Field(default=30.0, ge=0)
    functions_worker_port: int = Field(default=5561, ge=0, le=65535)
    functions_client_port: int = Field(default=5562, ge=0, le=65535)
    functions_heartbeat_s: float = Field(default=1.0, gt=0)
    functions_max_retries: int = Field(default=3, ge=0)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    objects_port: int = Field(default=9000, ge=0, le=65535)
    objects_root: Path | None = None
    objects_domain: str = ""
    objects_tls_cert: Path | None = None
    objects_tls_key: Path | None = None
    # Unsigned reads of public buckets and objects, per client address (0: refused).
    objects_anonymous_rps: float = Field(default=20.0, ge=0)
    log_format: Literal["text", "json"] = "text"
    # Who workloads run as (see the README's threat model): tenants with no
    # Unix user of their own run as `workload_user`, or as the user the
    # template names (`aif-{tenant}`); an unprivileged control plane starts
    # them through `launch_prefix` (`sudo -n -u {user} --`). Single-user mode
    # runs everything as the control plane's own user: a laptop, never a site.
    workload_user: str = Field(default="aif-workload", pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    tenant_user_template: str = Field(default="", pattern=r"^([a-z0-9_-]|\{tenant\})*$")
    min_tenant_uid: int = Field(default=1000, ge=1)
    # What tenants' own keys may set in a spec (site admins may set anything):
    # fields refused outright (dotted, as in a spec), and the Slurm partitions,
    # QOS and image prefixes they may name (empty: any). JSON lists in the
    # environment.
    tenant_forbidden_fields: tuple[str, ...] = ("slurm.account", "slurm.options")
    tenant_partitions: tuple[str, ...] = ()
    tenant_qos: tuple[str, ...] = ()
    tenant_images: tuple[str, ...] = ()
    launch_prefix: str = ""
    insecure_single_user: bool = False
    api_url: str = ""
    api_key: str = ""
    require_integration: bool = False

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Order the sources: arguments, environment, TOML file, defaults."""
        toml = TomlConfigSettingsSource(settings_cls, toml_file=_config_file())
        return (init_settings, env_settings, toml)

    @cached_property
    def effective_database_url(self) -> str:
        """The database URL, defaulting to SQLite in the data directory."""
        return self.database_url or f"sqlite:///{self.data_dir / 'aifactory.db'}"

    @cached_property
    def control_url(self) -> str:
        """The URL replicas use to register with this control plane."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        scheme = "https" if self.tls_cert else "http"
        return f"{scheme}://{host}:{self.port}"

    @property
    def tls_ca_file(self) -> Path | None:
        """The CA bundle that verifies the API's certificate (None: the system's)."""
        return self.tls_ca or self.tls_cert

    @cached_property
    def api_verify(self) -> ssl.SSLContext | bool:
        """How the CLI and the Executor verify the API: ``tls_ca_file``, else the system's CAs."""
        ca = self.tls_ca_file
        return ssl.create_default_context(cafile=str(ca)) if ca else True

    @cached_property
    def plaintext_warning(self) -> str:
        """Why keys and prompts cross the network in clear, or "" when they do not."""
        if self.tls_cert or _is_loopback(self.host):
            return ""
        return (
            f"UNENCRYPTED API: it listens on {self.host or 'every interface'}:{self.port} "
            "over plain HTTP, so API keys and prompts cross the network in clear. "
            "Set AIFACTORY_TLS_CERT and AIFACTORY_TLS_KEY, or bind AIFACTORY_HOST=127.0.0.1."
        )

    @cached_property
    def client_url(self) -> str:
        """The URL the CLI talks to."""
        return (self.api_url or self.control_url).rstrip("/")

    @cached_property
    def advertise_host(self) -> str:
        """The host name replicas and clients reach this control plane by."""
        return urlsplit(self.control_url).hostname or "127.0.0.1"

    @property
    def kubernetes_pod_python(self) -> str:
        """The interpreter replica Pods start the launcher, engine and worker with."""
        if self.kubernetes_python:
            return self.kubernetes_python
        return sys.executable if self.kubernetes_host_paths else IMAGE_PYTHON

    @property
    def objects_dir(self) -> Path:
        """The directory served as S3: each subdirectory is a bucket."""
        return self.objects_root or self.data_dir / "objects"

    @property
    def objects_master_key_file(self) -> Path:
        """The secret S3 secret keys derive from (mode 0600)."""
        return self.data_dir / "objects.key"

    @property
    def objects_credentials_file(self) -> Path:
        """The first admin key's S3 credentials, as an AWS credentials file (mode 0600)."""
        return self.data_dir / "admin-s3-credentials"

    @cached_property
    def objects_url(self) -> str:
        """The S3 endpoint URL."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        scheme = "https" if self.objects_tls_cert else "http"
        return f"{scheme}://{host}:{self.objects_port}"

    @property
    def admin_key_file(self) -> Path:
        """Where the first admin key is written on first start (mode 0600)."""
        return self.data_dir / "admin.key"

    @property
    def instance_file(self) -> Path:
        """Where this control plane's id (the tag on its Slurm jobs) is kept."""
        return self.data_dir / "instance"

    @cached_property
    def privilege(self) -> Privilege:
        """How this control plane starts workloads as their identity (root, a prefix, or not)."""
        return choose_privilege(self.data_dir, self.launch_prefix, self.insecure_single_user)

    @property
    def identities_dir(self) -> Path:
        """Where each workload identity has its own folder (secrets, cache, spill)."""
        return self.data_dir / "identities"

    @property
    def logs_dir(self) -> Path:
        """Where replica and server logs go."""
        return self.data_dir / "logs"

    @property
    def cache_dir(self) -> Path:
        """Where converted model files are cached."""
        return self.data_dir / "cache"


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, turning validation errors into a readable ConfigError.

    Raises:
        ConfigError: naming the key, the bad value and what is accepted.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        raise ConfigError(
            f"Setting {key!r} has a bad value {first.get('input')!r}: {first['msg']}.",
            fix=f"set AIFACTORY_{key.upper()} (or `{key}` in {_config_file()}) to a valid value",
        ) from exc


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name (or "" for every interface): assume reachable
