"""The Kubernetes dev cluster (deploy/k8s-dev-cluster.sh) as the tests use it."""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openai import OpenAI

from .server import REPO

CLUSTER = REPO / "deploy" / "k8s-dev-cluster.sh"
BUILD_IMAGE = REPO / "deploy" / "build-image.sh"
STATE_DIR = Path("/var/lib/aifactory-k8s-dev")
KUBECONFIG = STATE_DIR / "admin.kubeconfig"
NODE = "aif-node-1"


def script(*args: str, timeout_s: float = 1200) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(CLUSTER), *args], capture_output=True, text=True, timeout=timeout_s
    )


def kubectl(*args: str, check: bool = True) -> str:
    done = subprocess.run(
        ["kubectl", "--kubeconfig", str(KUBECONFIG), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stderr}")
    return done.stdout


def service_pods(namespace: str, service: str) -> list[dict[str, Any]]:
    """The service's Pods; retried for a while when the API server is restarting.

    The dev cluster is shared: another run's fault tests may restart
    kube-apiserver at any moment, which the control plane itself rides out.
    """
    selector = f"aifactory.io/service={service}"
    deadline = time.monotonic() + 60
    while True:
        try:
            out = kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json")
            return list(json.loads(out)["items"])
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def running_pod(namespace: str, service: str) -> dict[str, Any]:
    """The service's one Pod, once the API server shows it Running.

    A replica can answer before the kubelet's next status sync (its
    pod-lifecycle relist runs every second) turns the phase from Pending.
    """
    deadline = time.monotonic() + 30
    while True:
        (pod,) = service_pods(namespace, service)
        if pod["status"]["phase"] == "Running" or time.monotonic() > deadline:
            assert pod["status"]["phase"] == "Running", pod["status"]
            return pod
        time.sleep(0.5)


def images() -> list[str]:
    """The images the dev cluster's containerd holds."""
    sock = STATE_DIR / "containerd" / "containerd.sock"
    done = subprocess.run(
        ["ctr", "--address", str(sock), "-n", "k8s.io", "images", "ls", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.stdout.split()


def running_cluster(image: str = "") -> Iterator[None]:
    """The dev cluster (with ``image``), started here (and stopped again) when it is not up.

    ``up`` is idempotent: it also imports an image that a cluster started by
    an older script lacks.
    """
    started = script("status").returncode != 0
    if started or (image and image not in images()):
        # A fresh machine builds Kubernetes first (~10 min on 2 cores).
        up = script("up")
        if up.returncode != 0:
            pytest.skip(f"no Kubernetes dev cluster: `{CLUSTER} up` failed:\n{up.stderr[-2000:]}")
    yield
    if started:
        script("down")


def built_image() -> str:
    """aifactory's image (deploy/Containerfile), built or found cached and imported; its reference.

    Skips the test when it cannot be built. Cached by content: after the first
    build (a few minutes) this answers in seconds.
    """
    started = time.monotonic()
    done = subprocess.run(
        ["bash", str(BUILD_IMAGE)], capture_output=True, text=True, timeout=1800, check=False
    )
    if done.returncode != 0:
        pytest.skip(
            f"cannot build aifactory's image: `{BUILD_IMAGE}` failed:\n{done.stderr[-2000:]}"
        )
    reference = done.stdout.strip().splitlines()[-1].removeprefix("image: ")
    print(f"\nimage {reference}: build-image.sh took {time.monotonic() - started:.1f} s")
    return reference


def fresh_namespace(prefix: str) -> Iterator[str]:
    """A new namespace named ``prefix-<random>`` for a module's tests, deleted afterwards."""
    name = f"{prefix}-{secrets.token_hex(3)}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false")


def pod_facing_settings(
    namespace: str, port: int, image: str, host_paths: list[str]
) -> dict[str, str]:
    """Settings of a control plane on ``port`` whose replicas run as Pods in ``namespace``.

    ``host_paths`` are mounted into the Pods read-only (the dev image runs
    the checkout's venv and source); the production image needs none.
    """
    node_ip = kubectl(
        "get", "node", NODE, "-o", 'jsonpath={.status.addresses[?(@.type=="InternalIP")].address}'
    )
    return {
        # Pods reach the control plane (and the functions broker) on the node's IP.
        "host": "0.0.0.0",
        "public_url": f"http://{node_ip}:{port}",
        "kubeconfig": str(KUBECONFIG),
        "kubernetes_namespace": namespace,
        "kubernetes_image": image,
        "kubernetes_host_paths": json.dumps(host_paths),
    }


def timed_hello(url: str, api_key: str, model: str) -> float:
    """One short chat completion through the gateway at ``url``, checked; its seconds."""
    client = OpenAI(base_url=f"{url}/v1", api_key=api_key, max_retries=0)
    started = time.monotonic()
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Say hello in one word."}], max_tokens=8
    )
    latency_s = time.monotonic() - started
    assert reply.choices[0].message.content
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    return latency_s
