"""One Kubernetes namespace and the API client that reaches it, shared by replicas and jobs.

The replica backend (Pods) and the batch-job runner (Jobs) are built from the
same ``KubernetesConnection``: namespace, image, kubeconfig, host paths, grace
and timeouts in one place, the client made on first use, every call made in a
thread with its own timeout and its failures in our terms.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from aifactory.errors import ConfigError, KubernetesUnreachable

if TYPE_CHECKING:
    from aifactory.config import Settings


class KubernetesConnection:
    """Where this control plane's Pods and Jobs go, and how it talks to the API server.

    Args:
        namespace: The namespace of every Pod, Job and Secret.
        image: The container image replicas and jobs run.
        kubeconfig: The client configuration (None: in-cluster, else the default file).
        host_paths: Host folders mounted read-only into every container.
        termination_grace_s: How long a stopped container has to finish.
        request_timeout_s: How long one API call may take.
    """

    def __init__(
        self,
        *,
        namespace: str = "default",
        image: str = "localhost/aifactory:latest",
        kubeconfig: Path | str | None = None,
        host_paths: Sequence[Path | str] = (),
        termination_grace_s: int = 30,
        request_timeout_s: float = 30.0,
    ) -> None:
        self.namespace = namespace
        self.image = image
        self.kubeconfig = Path(kubeconfig) if kubeconfig else None
        self.host_paths = tuple(Path(p) for p in host_paths)
        self.termination_grace_s = termination_grace_s
        self.request_timeout_s = request_timeout_s
        self._api_client: client.ApiClient | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> KubernetesConnection:
        """The connection the settings describe."""
        return cls(
            namespace=settings.kubernetes_namespace,
            image=settings.kubernetes_image,
            kubeconfig=settings.kubeconfig,
            host_paths=settings.kubernetes_host_paths,
        )

    @property
    def core(self) -> client.CoreV1Api:
        """The CoreV1 API (Pods, Secrets)."""
        return client.CoreV1Api(self._client())

    @property
    def batch(self) -> client.BatchV1Api:
        """The BatchV1 API (Jobs)."""
        return client.BatchV1Api(self._client())

    @property
    def scheduling(self) -> client.SchedulingV1Api:
        """The SchedulingV1 API (PriorityClasses)."""
        return client.SchedulingV1Api(self._client())

    async def call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One API call in a thread; the answer as the JSON the server sent (None when empty).

        Raises:
            ApiException: when the server answered with an error.
            KubernetesUnreachable: when the server could not be reached.
        """
        data = await call_api(
            method, *args, timeout_s=self.request_timeout_s, fix=self.reach_fix(), **kwargs
        )
        return json.loads(data) if data else None

    def reach_fix(self) -> str:
        """What to check when the API server cannot be reached."""
        where = f"the kubeconfig {self.kubeconfig}" if self.kubeconfig else "AIFACTORY_KUBECONFIG"
        return (
            f"check that the API server runs and {where} points at it; its Pods keep running "
            "meanwhile, and none is taken for gone until it answers"
        )

    async def aclose(self) -> None:
        """Close the API client (made again on the next call)."""
        if self._api_client is not None:
            closing, self._api_client = self._api_client, None
            await asyncio.to_thread(closing.close)

    def _client(self) -> client.ApiClient:
        if self._api_client is None:
            self._api_client = api_client(self.kubeconfig)
        return self._api_client


async def call_api(
    method: Callable[..., Any], *args: Any, timeout_s: float, fix: str, **kwargs: Any
) -> bytes:
    """One client call in a thread; the body the server sent, undecoded.

    Raises:
        ApiException: when the server answered with an error.
        KubernetesUnreachable: when the server could not be reached (``fix`` says what to check).
    """

    def call() -> bytes:
        response = method(*args, _preload_content=False, _request_timeout=timeout_s, **kwargs)
        return bytes(response.data or b"")

    try:
        return await asyncio.to_thread(call)
    except urllib3.exceptions.HTTPError as exc:
        raise KubernetesUnreachable(str(exc), fix=fix) from exc


def api_message(exc: ApiException) -> str:
    """The message of an API server's error answer (its reason when it has none)."""
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except (ValueError, AttributeError):
        return str(exc.reason)


def api_client(kubeconfig: Path | None) -> client.ApiClient:
    """A client from the kubeconfig, else in-cluster, else the default kubeconfig.

    Raises:
        ConfigError: when none of them works.
    """
    # The client library's loaders are not annotated.
    from_file: Callable[..., client.ApiClient] = config.new_client_from_config
    in_cluster: Callable[..., None] = config.load_incluster_config
    try:
        if kubeconfig is not None:
            return from_file(config_file=str(kubeconfig))
        try:
            configuration = client.Configuration()
            in_cluster(client_configuration=configuration)
            return client.ApiClient(configuration)
        except config.ConfigException:
            return from_file()
    except (config.ConfigException, OSError) as exc:
        raise ConfigError(
            f"no Kubernetes client configuration: {exc}",
            fix="set AIFACTORY_KUBECONFIG to a kubeconfig file (or run inside a cluster)",
        ) from exc
