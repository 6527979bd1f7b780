r"""The replica launcher: runs inside an allocation, on whatever node it landed.

It picks a free port, starts the engine, registers ``host:port`` with the
control plane using a one-time token, then waits. SIGTERM is passed on to the
engine, which gets a grace period before SIGKILL. The launcher exits with the
engine's exit code, so the backend sees a crash as a failed allocation.
Only the standard library is used here: nodes may have little installed.

::

    python -m aifactory.launcher --control-url URL --replica-id ID \\
        --token-file FILE [--secret-env FILE] [--advertise-host auto] [--ca-file FILE] \\
        [--drain-token-file FILE --drain-within SECONDS] \\
        -- ENGINE ARGV WITH {host} {port}

A lent replica (``--drain-token-file``) runs on a preemptible partition.
When Slurm preempts it, SIGTERM reaches every process of the job at once
and SIGKILL follows after the partition's GraceTime (``--drain-within``).
So its engine runs with SIGTERM blocked, and on SIGTERM the launcher tells
the control plane (which stops routing to the replica), waits until no
request is in flight on it or the grace time nearly ran out, then stops
the engine with SIGINT.

``--secret-env`` names a file of ``NAME=VALUE`` lines (an agent's API key):
read, deleted, and given to the engine's environment only, so secrets never
appear in a job script or on a command line. On Kubernetes both files lie on
a read-only Secret volume that is deleted with the Pod, so they stay.

``--ca-file`` names the CA bundle an ``https`` control URL is verified
against (the control plane's own certificate when it is self-signed); the
token is never sent to a server that cannot prove it is the control plane.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType

from aifactory.engines import die_with_parent, fill_address

_REGISTER_ATTEMPTS = 30
_STOP_GRACE_S = 8.0
_DRAIN_POLL_S = 0.2
_DRAIN_CALL_TIMEOUT_S = 2.0


def free_port(host: str) -> int:
    """A port the OS says is free on ``host`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def register(
    control_url: str,
    replica_id: str,
    token: str,
    host: str,
    port: int,
    launched_at: float,
    tls: ssl.SSLContext | None = None,
) -> None:
    """Tell the control plane where the engine listens.

    Raises:
        RuntimeError: when the control plane refuses, fails TLS verification
            or stays unreachable.
    """
    url = f"{control_url}/internal/replicas/{replica_id}/register"
    body = json.dumps({"host": host, "port": port, "launched_at": launched_at}).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    for attempt in range(_REGISTER_ATTEMPTS):
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10, context=tls):
                return
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"registration refused: {exc.code} {exc.read()[:300]!r}") from exc
        except OSError as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, ssl.SSLCertVerificationError):
                # Not the control plane (or not its CA): retrying would not help.
                raise RuntimeError(f"control plane at {control_url}: {reason}") from exc
            wait_s = min(10.0, 0.5 * 2**attempt)
            print(f"launcher: control plane unreachable ({exc}); retrying in {wait_s}s", flush=True)
            time.sleep(wait_s)
    raise RuntimeError(f"control plane at {control_url} unreachable")


def tls_context(ca_file: Path | None) -> ssl.SSLContext | None:
    """What verifies an ``https`` control plane: ``ca_file``, else the system's CAs."""
    return ssl.create_default_context(cafile=str(ca_file)) if ca_file else None


def drain(
    control_url: str,
    replica_id: str,
    token: str,
    deadline: float,
    tls: ssl.SSLContext | None = None,
) -> int:
    """Report the preemption, then wait until no request is in flight or ``deadline``.

    Returns:
        The requests the control plane last said were in flight (-1: it did
        not answer, or refused).
    """
    url = f"{control_url}/internal/replicas/{replica_id}/preempted"
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    in_flight = -1
    while time.monotonic() < deadline:
        request = urllib.request.Request(url, data=b"{}", headers=headers, method="POST")
        try:
            with urllib.request.urlopen(
                request, timeout=_DRAIN_CALL_TIMEOUT_S, context=tls
            ) as response:
                in_flight = int(json.load(response)["in_flight"])
        except urllib.error.HTTPError as exc:
            print(f"launcher: drain refused: {exc.code} {exc.read()[:300]!r}", flush=True)
            return -1
        except (OSError, ValueError, KeyError) as exc:
            print(f"launcher: control plane did not answer the drain ({exc})", flush=True)
        if in_flight == 0:
            return 0
        time.sleep(_DRAIN_POLL_S)
    return in_flight


def consume(path: Path) -> str:
    """Read a one-time file and delete it; one on a read-only volume stays (a Secret's)."""
    text = path.read_text()
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        if exc.errno != errno.EROFS:
            raise
    return text


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse the launcher's command line."""
    parser = argparse.ArgumentParser(prog="aifactory.launcher")
    parser.add_argument("--control-url", required=True)
    parser.add_argument("--replica-id", required=True)
    parser.add_argument("--token-file", required=True, type=Path)
    parser.add_argument("--secret-env", type=Path, default=None)
    parser.add_argument("--drain-token-file", type=Path, default=None)
    parser.add_argument("--drain-within", type=float, default=0.0)
    parser.add_argument("--advertise-host", default="auto")
    parser.add_argument("--bind-host", default="")
    parser.add_argument("--ca-file", type=Path, default=None)
    parser.add_argument("engine", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.engine and args.engine[0] == "--":
        args.engine = args.engine[1:]
    if not args.engine:
        parser.error("give the engine command after --")
    return args


def main(argv: list[str] | None = None) -> int:
    """Launch, register, wait; return the engine's exit code."""
    launched_at = time.time()
    args = parse_args(sys.argv[1:] if argv is None else argv)
    die_with_parent()
    token = consume(args.token_file).strip()
    tls = tls_context(args.ca_file)
    drain_token = consume(args.drain_token_file).strip() if args.drain_token_file else ""
    env = {**os.environ, **_read_secret_env(args.secret_env)}
    advertise = socket.getfqdn() if args.advertise_host == "auto" else args.advertise_host
    bind = args.bind_host or ("127.0.0.1" if advertise in ("127.0.0.1", "localhost") else "0.0.0.0")
    port = free_port(bind)
    command = fill_address(tuple(args.engine), bind, port)
    print(f"launcher: replica {args.replica_id} starting engine on {bind}:{port}", flush=True)
    lent = bool(drain_token)
    engine = subprocess.Popen(
        command, preexec_fn=_shielded_from_sigterm if lent else die_with_parent, env=env
    )

    def stop(signum: int, _frame: FrameType | None) -> None:
        # Raising (rather than waiting here) unwinds any engine.wait() in
        # progress, which would otherwise hold the lock that reaps the engine.
        raise _Stop(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        try:
            register(args.control_url, args.replica_id, token, advertise, port, launched_at, tls)
        except RuntimeError as exc:
            print(f"launcher: {exc}; stopping the engine", flush=True)
            _stop_engine(engine)
            return 3
        print(f"launcher: registered {advertise}:{port}", flush=True)
        code = engine.wait()
    except _Stop as stopped:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        name = signal.Signals(stopped.args[0]).name
        if not lent:
            print(f"launcher: got {name}; stopping the engine", flush=True)
            _stop_engine(engine)
            return 0
        began = time.monotonic()
        margin = min(_STOP_GRACE_S, args.drain_within / 4)
        print(f"launcher: got {name}; draining within {args.drain_within:g}s", flush=True)
        deadline = began + args.drain_within - margin
        left = drain(args.control_url, args.replica_id, drain_token, deadline, tls)
        print(
            f"launcher: drained in {time.monotonic() - began:.2f}s "
            f"({left if left >= 0 else 'unknown'} in flight); stopping the engine",
            flush=True,
        )
        _stop_engine(engine, signal.SIGINT, margin)
        return 0
    print(f"launcher: engine exited with code {code}", flush=True)
    return code if code >= 0 else 128 - code


def _read_secret_env(path: Path | None) -> dict[str, str]:
    if path is None:
        return {}
    lines = consume(path).splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


class _Stop(BaseException):
    """Raised by the signal handler to leave whatever the launcher is waiting on."""


def _shielded_from_sigterm() -> None:
    # Slurm signals every process of a preempted job: the engine must keep
    # serving in-flight requests, so SIGTERM stays blocked (inherited across
    # exec); the launcher stops it with SIGINT, or SIGKILL ends everything.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    die_with_parent(signal.SIGKILL)


def _stop_engine(
    engine: subprocess.Popen[bytes], signum: int = signal.SIGTERM, grace_s: float = _STOP_GRACE_S
) -> None:
    engine.send_signal(signum)
    try:
        engine.wait(grace_s)
    except subprocess.TimeoutExpired:
        engine.kill()
        engine.wait()


if __name__ == "__main__":
    sys.exit(main())
