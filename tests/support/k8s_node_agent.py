"""A node agent for the dev Kubernetes cluster: it plays the kubelet's part, kwok-style.

No container runs here. The agent registers a Node, keeps its Lease and Ready
condition fresh, watches the Pods the scheduler binds to it and runs each
container's ``command`` + ``args`` as a local process (an argv list, never a
shell), with the Pod's ``env`` (plain values and the usual ``fieldRef``s) on
top of the agent's own environment. It reports what a kubelet reports: the
phase (Pending -> Running -> Succeeded/Failed), each container's state and
exit code, the Pod IP (127.0.0.1: every process shares this host's network),
and ``activeDeadlineSeconds`` (reason DeadlineExceeded). When a Pod is
deleted it sends SIGTERM to the container's process group, SIGKILL after the
Pod's grace period, and then removes the Pod for good (as a kubelet does).
Images, volumes, probes and restarts are not implemented: a Pod without a
``command`` fails with reason ``NoCommand``.

    python tests/support/k8s_node_agent.py --kubeconfig FILE [--node NAME]
        [--cpu 16] [--memory 64Gi] [--gpus 0] [--log-dir DIR]

It survives API-server restarts: the watch resumes (or lists again) and
status reports are retried until they land. SIGTERM/SIGINT stops every
process it started, then the agent.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.watch import watch as watch_module

logger = logging.getLogger("k8s-node-agent")

POD_IP = "127.0.0.1"
LEASE_S = 40
HEARTBEAT_S = 10


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Container:
    name: str
    process: subprocess.Popen[bytes] | None = None
    started_at: str = ""
    exit_code: int | None = None
    reason: str = ""
    message: str = ""
    finished_at: str = ""


@dataclass
class PodRun:
    namespace: str
    name: str
    uid: str
    containers: list[Container] = field(default_factory=list)
    deleting: bool = False
    deadline_exceeded: bool = False
    done: threading.Event = field(default_factory=threading.Event)


class NodeAgent:
    def __init__(self, api_client: client.ApiClient, args: argparse.Namespace) -> None:
        self.core = client.CoreV1Api(api_client)
        self.coordination = client.CoordinationV1Api(api_client)
        self.node = args.node
        self.capacity = {"cpu": args.cpu, "memory": args.memory, "pods": "110"}
        if args.gpus:
            self.capacity["nvidia.com/gpu"] = str(args.gpus)
        self.log_dir = Path(args.log_dir)
        self.runs: dict[str, PodRun] = {}  # by pod uid
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    # ------------------------------------------------------------ node

    def register(self) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node,
                "labels": {
                    "kubernetes.io/hostname": self.node,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "aifactory.io/node-agent": "true",
                },
            },
        }
        try:
            self.core.create_node(body)
        except ApiException as exc:
            if exc.status != 409:
                raise
        self.report_node()

    def report_node(self) -> None:
        stamp = now()
        ready = {
            "type": "Ready",
            "status": "True",
            "reason": "NodeAgentReady",
            "message": "aifactory test node agent: runs pod commands as local processes",
            "lastHeartbeatTime": stamp,
            "lastTransitionTime": stamp,
        }
        status = {
            "status": {
                "capacity": self.capacity,
                "allocatable": self.capacity,
                "conditions": [ready],
                "addresses": [
                    {"type": "InternalIP", "address": POD_IP},
                    {"type": "Hostname", "address": self.node},
                ],
                "nodeInfo": {
                    "architecture": "amd64",
                    "operatingSystem": "linux",
                    "kubeletVersion": "v1.20.2-aifactory-node-agent",
                    "kubeProxyVersion": "",
                    "containerRuntimeVersion": "local-process://0",
                    "osImage": "",
                    "kernelVersion": os.uname().release,
                    "machineID": "",
                    "systemUUID": "",
                    "bootID": "",
                },
            }
        }
        self.core.patch_node_status(self.node, status)

    def renew_lease(self) -> None:
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.node, "namespace": "kube-node-lease"},
            "spec": {
                "holderIdentity": self.node,
                "leaseDurationSeconds": LEASE_S,
                "renewTime": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            },
        }
        try:
            self.coordination.patch_namespaced_lease(self.node, "kube-node-lease", body)
        except ApiException as exc:
            if exc.status != 404:
                raise
            self.coordination.create_namespaced_lease("kube-node-lease", body)

    def heartbeat_loop(self) -> None:
        beats = 0
        while not self.stopping.wait(HEARTBEAT_S):
            try:
                self.renew_lease()
                beats += 1
                if beats % 3 == 0:
                    self.report_node()
            except Exception as exc:  # the API server may be restarting
                logger.warning("heartbeat failed: %s", str(exc).splitlines()[0][:200])

    # ------------------------------------------------------------ pods

    def watch_loop(self) -> None:
        selector = f"spec.nodeName={self.node}"
        version = ""
        while not self.stopping.is_set():
            try:
                if not version:
                    listed = json.loads(
                        self.core.list_pod_for_all_namespaces(
                            field_selector=selector, _preload_content=False
                        ).data
                    )
                    for pod in listed["items"]:
                        self.on_pod("ADDED", pod)
                    version = listed["metadata"]["resourceVersion"]
                response = self.core.list_pod_for_all_namespaces(
                    field_selector=selector,
                    watch=True,
                    resource_version=version,
                    timeout_seconds=30,
                    allow_watch_bookmarks=True,
                    _preload_content=False,
                    _request_timeout=(10, 45),
                )
                for line in watch_module.iter_resp_lines(response):
                    event = json.loads(line)
                    obj = event["object"]
                    if event["type"] == "ERROR":
                        version = ""  # 410 Gone (or worse): list again
                        break
                    version = obj["metadata"].get("resourceVersion") or version
                    if event["type"] != "BOOKMARK":
                        self.on_pod(event["type"], obj)
                    if self.stopping.is_set():
                        return
            except Exception as exc:
                logger.warning("pod watch failed (%s); retrying", str(exc).splitlines()[0][:200])
                self.stopping.wait(1.0)

    def on_pod(self, kind: str, pod: dict[str, Any]) -> None:
        metadata = pod["metadata"]
        uid = metadata["uid"]
        with self.lock:
            run = self.runs.get(uid)
        if kind == "DELETED" or metadata.get("deletionTimestamp"):
            if run is not None:
                grace = metadata.get("deletionGracePeriodSeconds")
                self.stop_run(run, 30 if grace is None else int(grace))
            elif kind != "DELETED":
                self.finalize(metadata["namespace"], metadata["name"], uid)
            return
        phase = (pod.get("status") or {}).get("phase", "Pending")
        if run is None and phase == "Pending":
            self.start_run(pod)
        elif run is None and phase == "Running":
            # Started by an earlier agent whose processes are gone.
            self.report(
                pod,
                {
                    "phase": "Failed",
                    "reason": "NodeAgentRestarted",
                    "message": "the node agent restarted; its processes were lost",
                },
            )

    def start_run(self, pod: dict[str, Any]) -> None:
        metadata, spec = pod["metadata"], pod["spec"]
        run = PodRun(metadata["namespace"], metadata["name"], metadata["uid"])
        with self.lock:
            self.runs[run.uid] = run
        pod_dir = self.log_dir / f"{run.namespace}_{run.name}_{run.uid}"
        pod_dir.mkdir(parents=True, exist_ok=True)
        for spec_container in spec["containers"]:
            container = Container(spec_container["name"])
            run.containers.append(container)
            argv = list(spec_container.get("command") or []) + list(
                spec_container.get("args") or []
            )
            container.started_at = now()
            if not spec_container.get("command"):
                container.exit_code, container.reason = 128, "NoCommand"
                container.message = "the node agent runs commands, not images: set `command`"
                container.finished_at = now()
                continue
            env = dict(os.environ)
            env.update(resolve_env(spec_container.get("env") or [], pod))
            log = open(pod_dir / f"{container.name}.log", "ab")  # noqa: SIM115 (child keeps it)
            try:
                container.process = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=spec_container.get("workingDir") or pod_dir,
                    start_new_session=True,
                )
            except OSError as exc:
                container.exit_code, container.reason = 128, "StartError"
                container.message = str(exc)
                container.finished_at = now()
            finally:
                log.close()
        logger.info(
            "pod %s/%s: started %d container(s)", run.namespace, run.name, len(run.containers)
        )
        self.report_run(run, pod)
        threading.Thread(target=self.supervise, args=(run, pod), daemon=True).start()

    def supervise(self, run: PodRun, pod: dict[str, Any]) -> None:
        deadline_s = pod["spec"].get("activeDeadlineSeconds")
        started = time.monotonic()
        while not run.done.is_set():
            alive = False
            for container in run.containers:
                process = container.process
                if process is not None and container.exit_code is None:
                    code = process.poll()
                    if code is None:
                        alive = True
                    else:
                        container.exit_code = code if code >= 0 else 128 - code
                        container.reason = "Completed" if code == 0 else "Error"
                        container.finished_at = now()
            if not alive:
                break
            if deadline_s and time.monotonic() - started > deadline_s and not run.deleting:
                run.deadline_exceeded = True
                self.kill(run, int(pod["spec"].get("terminationGracePeriodSeconds", 30)))
                continue
            time.sleep(0.1)
        run.done.set()
        if not run.deleting:
            self.report_run(run, pod)

    def stop_run(self, run: PodRun, grace_s: int) -> None:
        if run.deleting:
            return
        run.deleting = True

        def stop() -> None:
            self.kill(run, grace_s)
            run.done.wait(grace_s + 5)
            self.finalize(run.namespace, run.name, run.uid)
            with self.lock:
                self.runs.pop(run.uid, None)

        threading.Thread(target=stop, daemon=True).start()

    def kill(self, run: PodRun, grace_s: int) -> None:
        live = [c.process for c in run.containers if c.process and c.process.poll() is None]
        for process in live:
            signal_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while any(p.poll() is None for p in live) and time.monotonic() < deadline:
            time.sleep(0.1)
        for process in live:
            signal_group(process.pid, signal.SIGKILL)
            process.wait()

    def finalize(self, namespace: str, name: str, uid: str) -> None:
        """Remove a terminated Pod for good, as the kubelet does once its containers are gone."""
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": uid}}
        self.retry(
            lambda: self.core.delete_namespaced_pod(name, namespace, body=body),
            ok_statuses=(404, 409),
        )

    def report_run(self, run: PodRun, pod: dict[str, Any]) -> None:
        statuses = []
        for container in run.containers:
            state: dict[str, Any]
            if container.exit_code is None:
                state = {"running": {"startedAt": container.started_at}}
            else:
                state = {
                    "terminated": {
                        "exitCode": container.exit_code,
                        "reason": container.reason,
                        "message": container.message,
                        "startedAt": container.started_at,
                        "finishedAt": container.finished_at,
                    }
                }
            pid = container.process.pid if container.process else 0
            statuses.append(
                {
                    "name": container.name,
                    "state": state,
                    "ready": container.exit_code is None,
                    "started": container.exit_code is None,
                    "restartCount": 0,
                    "image": next(
                        c.get("image", "")
                        for c in pod["spec"]["containers"]
                        if c["name"] == container.name
                    ),
                    "imageID": "",
                    "containerID": f"local-process://{pid}",
                }
            )
        codes = [c.exit_code for c in run.containers]
        if run.deadline_exceeded:
            phase, extra = (
                "Failed",
                {
                    "reason": "DeadlineExceeded",
                    "message": "Pod was active on the node longer than the specified deadline",
                },
            )
        elif all(code is not None for code in codes):
            phase, extra = ("Succeeded" if all(code == 0 for code in codes) else "Failed"), {}
        else:
            phase, extra = "Running", {}
        running = phase == "Running"
        stamp = now()
        conditions = [
            {"type": kind, "status": "True" if ok else "False", "lastTransitionTime": stamp}
            for kind, ok in (
                ("Initialized", True),
                ("Ready", running),
                ("ContainersReady", running),
                ("PodScheduled", True),
            )
        ]
        self.report(
            pod,
            {
                "phase": phase,
                "podIP": POD_IP,
                "podIPs": [{"ip": POD_IP}],
                "hostIP": POD_IP,
                "startTime": run.containers[0].started_at if run.containers else stamp,
                "conditions": conditions,
                "containerStatuses": statuses,
                **extra,
            },
        )
        logger.info("pod %s/%s: %s", run.namespace, run.name, phase)

    def report(self, pod: dict[str, Any], status: dict[str, Any]) -> None:
        metadata = pod["metadata"]
        self.retry(
            lambda: self.core.patch_namespaced_pod_status(
                metadata["name"], metadata["namespace"], {"status": status}
            ),
            ok_statuses=(404,),
        )

    def retry(self, call: Any, ok_statuses: tuple[int, ...]) -> None:
        """Call until it lands: the API server may be restarting."""
        for attempt in range(120):
            try:
                call()
                return
            except ApiException as exc:
                if exc.status in ok_statuses:
                    return
                logger.warning("API call failed (%s); retrying", exc.status)
            except Exception as exc:
                logger.warning("API call failed (%s); retrying", str(exc).splitlines()[0][:200])
            if self.stopping.wait(min(0.2 * (attempt + 1), 2.0)):
                return

    def shutdown(self) -> None:
        self.stopping.set()
        with self.lock:
            runs = list(self.runs.values())
        for run in runs:
            run.deleting = True
            self.kill(run, 5)


def resolve_env(entries: list[dict[str, Any]], pod: dict[str, Any]) -> dict[str, str]:
    fields = {
        "metadata.name": pod["metadata"]["name"],
        "metadata.namespace": pod["metadata"]["namespace"],
        "metadata.uid": pod["metadata"]["uid"],
        "spec.nodeName": pod["spec"].get("nodeName", ""),
        "status.podIP": POD_IP,
        "status.hostIP": POD_IP,
    }
    env = {}
    for entry in entries:
        if "value" in entry:
            env[entry["name"]] = str(entry["value"])
        else:
            path = ((entry.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath", "")
            if path in fields:
                env[entry["name"]] = fields[path]
            elif "value" not in entry and not entry.get("valueFrom"):
                env[entry["name"]] = ""
    return env


def signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--node", default="aif-node-1")
    parser.add_argument("--cpu", default="16")
    parser.add_argument("--memory", default="64Gi")
    parser.add_argument("--gpus", type=int, default=0)
    parser.add_argument("--log-dir", default="/tmp/aifactory-k8s-node-agent")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    agent = NodeAgent(config.new_client_from_config(config_file=args.kubeconfig), args)
    agent.register()
    agent.renew_lease()

    def on_signal(signum: int, _frame: object) -> None:
        agent.stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    threading.Thread(target=agent.heartbeat_loop, daemon=True).start()
    threading.Thread(target=agent.watch_loop, daemon=True).start()
    logger.info("node %s registered; watching its pods", args.node)
    agent.stopping.wait()
    agent.shutdown()
    logger.info("node agent stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
