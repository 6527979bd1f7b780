"""CurveZMQ on the broker's sockets: arguments and results never cross in clear.

The broker holds a long-term keypair; its public key is pinned by every
client (workers and executors), which makes its own ephemeral keypair per
connection. A client without the broker's public key, or with another key,
cannot complete the handshake, so it reaches neither the broker nor the
traffic of others. Keys are Z85 text, 40 characters.
"""

from __future__ import annotations

import os
from pathlib import Path

import zmq

__all__ = ["broker_keypair", "pin_server", "serve_curve"]


def broker_keypair(path: Path) -> tuple[str, str]:
    """The broker's (public, secret) keys, kept in ``path`` (mode 0600), created on first use."""
    try:
        secret = path.read_bytes().strip()
    except FileNotFoundError:
        _public, secret = zmq.curve_keypair()
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first: use theirs
            secret = path.read_bytes().strip()
        else:
            with os.fdopen(fd, "wb") as handle:
                handle.write(secret)
    return zmq.curve_public(secret).decode(), secret.decode()


def serve_curve(sock: zmq.Socket[bytes], secret_key: str) -> None:
    """Make a ROUTER socket a Curve server (before it binds)."""
    sock.curve_server = True
    sock.curve_secretkey = secret_key.encode()


def pin_server(sock: zmq.Socket[bytes], server_key: str) -> None:
    """Make a client socket talk Curve to the server holding ``server_key`` (before it connects)."""
    public, secret = zmq.curve_keypair()
    sock.curve_serverkey = server_key.encode()
    sock.curve_publickey = public
    sock.curve_secretkey = secret
