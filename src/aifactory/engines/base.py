"""What every engine recipe produces: an argv template the launcher runs."""

from __future__ import annotations

from dataclasses import dataclass, field

HOST = "{host}"
PORT = "{port}"


@dataclass(frozen=True)
class EngineLaunch:
    """How to start one engine process.

    ``argv`` may contain ``{host}`` and ``{port}``; the launcher on the node
    replaces them with the address it picked. ``argv`` is never joined into a
    shell string. ``threads`` is how many CPU threads the engine will use.
    """

    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    threads: int = 1


def fill_address(argv: tuple[str, ...], host: str, port: int) -> list[str]:
    """Replace the ``{host}`` and ``{port}`` placeholders in each argument."""
    return [part.replace(HOST, host).replace(PORT, str(port)) for part in argv]
