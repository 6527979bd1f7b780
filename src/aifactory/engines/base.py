"""What every engine recipe produces: an argv template the launcher runs."""

from __future__ import annotations

from collections.abc import Mapping
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


def int_arg(args: Mapping[str, object], name: str) -> int | None:
    """An integer engine argument, spelt with ``_`` or ``-``; None when absent or not a number."""
    for spelling in (name, name.replace("_", "-")):
        value = args.get(spelling)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().isdigit():
            return int(value)
    return None
